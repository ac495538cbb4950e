"""Grad-CAM (AReLU Fig. 5) against a hand-written reference, and the figure grid."""

import matplotlib.image as mpimg
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnact import create_act_layer
from attnact.report import gradcam as gc
from attnact.report.gradcam import gradcam, gradcam_grid

N, C, H, W, CLASSES = 4, 3, 12, 10, 5


class TinyNet(nn.Module):
    """conv → BN → act → conv → act → pool → linear; BN with non-trivial running statistics, so
    a forward in training mode (batch statistics) gives different maps than eval mode."""

    def __init__(self, act: str = "relu"):
        super().__init__()
        self.conv1 = nn.Conv2d(C, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.act1 = create_act_layer(act)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)  # h, w = 6, 5: a real upsampling
        self.act2 = create_act_layer(act)
        self.fc = nn.Linear(8, CLASSES)
        with torch.no_grad():
            self.bn1.running_mean.uniform_(-0.5, 0.5)
            self.bn1.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


def reference_gradcam(model, layer, images, targets, relu=True):
    """Grad-CAM by hand: hook the layer output A, d(target logit)/dA with autograd.grad, channel
    weights = spatial mean of that gradient, map = [ReLU](Σ_k w_k A_k), bilinear upsample, then
    min-max per image (constant map → 0). The model is expected to be in eval mode."""
    captured = {}
    handle = layer.register_forward_hook(lambda m, i, o: captured.__setitem__("A", o))
    try:
        logits = model(images)
    finally:
        handle.remove()
    a = captured["A"]
    score = logits.gather(1, targets[:, None]).sum()  # examples are independent in eval mode
    (grad,) = torch.autograd.grad(score, a)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = (weights * a).sum(dim=1, keepdim=True)
    if relu:
        cam = cam.clamp(min=0)
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    out = []
    for m in cam.detach():
        span = m.max() - m.min()
        out.append(torch.zeros_like(m) if span == 0 else (m - m.min()) / span)
    return torch.stack(out)


@pytest.fixture
def images():
    return torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(1))


def make_net(act="relu", seed=0):
    torch.manual_seed(seed)
    return TinyNet(act)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("layer_name", ["act1", "conv2"])
def test_matches_hand_written_gradcam(images, layer_name, relu):
    net = make_net()
    targets = torch.tensor([0, 3, 1, 4])
    got = gradcam(net, getattr(net, layer_name), images, targets, relu=relu)
    net.eval()
    want = reference_gradcam(net, getattr(net, layer_name), images, targets, relu=relu)
    assert got.shape == (N, H, W)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for m in got:  # each map spans [0, 1]
        assert m.min().item() == pytest.approx(0.0, abs=1e-6)
        assert m.max().item() == pytest.approx(1.0, abs=1e-6)


def test_targets_matter_and_relu_matters(images):
    net = make_net()
    a = gradcam(net, net.conv2, images, torch.zeros(N, dtype=torch.long))
    b = gradcam(net, net.conv2, images, torch.full((N,), 2))
    assert (a - b).abs().max() > 1e-2
    signed = gradcam(net, net.conv2, images, torch.zeros(N, dtype=torch.long), relu=False)
    assert (a - signed).abs().max() > 1e-2


def test_none_targets_are_the_prediction(images):
    net = make_net()
    net.eval()
    with torch.no_grad():
        pred = net(images).argmax(dim=1)
    torch.testing.assert_close(gradcam(net, net.act1, images), gradcam(net, net.act1, images, pred))
    torch.testing.assert_close(
        gradcam(net, net.act1, images, torch.tensor(int(pred[0]))),  # one index for all
        gradcam(net, net.act1, images, pred[:1].expand(N)),
    )


def test_model_state_restored_and_no_parameter_gradients(images):
    net = make_net()
    net.train()
    net.bn1.eval()  # a submodule's own mode must come back too
    net.conv1.weight.grad = torch.full_like(net.conv1.weight, 7.0)  # an earlier backward's grad
    before = {k: v.clone() for k, v in net.state_dict().items()}
    got = gradcam(net, net.act1, images, torch.tensor([1, 1, 2, 2]))
    assert net.training and not net.bn1.training and net.conv2.training
    assert torch.equal(net.conv1.weight.grad, torch.full_like(net.conv1.weight, 7.0))
    assert all(p.grad is None for n_, p in net.named_parameters() if n_ != "conv1.weight")
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # BN stats too
    assert not images.requires_grad and images.grad is None
    # computed in eval mode: training-mode BN (batch statistics) would give other maps
    net.eval()
    want = reference_gradcam(net, net.act1, images, torch.tensor([1, 1, 2, 2]))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_mode_restored_on_error(images):
    net = make_net()
    net.train()
    with pytest.raises(ValueError, match="targets"):
        gradcam(net, net.act1, images, torch.tensor([0, 1]))
    assert net.training and net.bn1.training


def test_through_arelu(images):
    net = make_net("arelu", seed=3)
    assert type(net.act1).__name__ == "AReLU"
    targets = torch.tensor([2, 0, 4, 1])
    for layer in (net.conv1, net.act1):  # gradient through AReLU, and AReLU's own output
        got = gradcam(net, layer, images, targets)
        net.eval()
        want = reference_gradcam(net, layer, images, targets)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert all(p.grad is None for p in net.parameters())  # AReLU's α, β included


def test_constant_map_is_zeros(images):
    net = make_net()
    with torch.no_grad():
        net.conv2.weight.zero_()
        net.conv2.bias.zero_()
    got = gradcam(net, net.conv2, images, torch.zeros(N, dtype=torch.long))
    assert torch.equal(got, torch.zeros(N, H, W))


def test_gradcam_bad_input(images):
    net = make_net()
    with pytest.raises(ValueError, match="4-D"):
        gradcam(net, net.act1, images[0])
    with pytest.raises(ValueError, match="submodule"):
        gradcam(net, nn.ReLU(), images)
    with pytest.raises(ValueError, match="integer"):
        gradcam(net, net.act1, images, torch.zeros(N))
    with pytest.raises(ValueError, match="feature map"):
        gradcam(net, net.fc, images)


def _png_shape(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path).shape


def test_grid_writes_png_of_expected_size(tmp_path, images):
    heat = torch.rand(N, H, W)
    small = torch.rand(N, 3, 3)  # a coarser map is stretched over the image
    rgb = gradcam_grid(
        {"ReLU": heat, "AReLU": small},
        images,
        tmp_path / "two.png",
        labels=torch.tensor([0, 2, 1, 0]),
        class_names=["apple", "bee", "cat"],
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.2, 0.2),
        title="Grad-CAM",
    )
    one = gradcam_grid({"ReLU": heat}, images[:, :1], tmp_path / "one.png", labels=list("abcd"))
    h2, w2, _ = _png_shape(rgb)
    h1, w1, _ = _png_shape(one)
    assert w1 == w2 == round((gc.LEFT + N * gc.CELL + gc.RIGHT) * gc.DPI)
    assert h1 == round((gc.TOP + 2 * gc.CELL + gc.BOTTOM) * gc.DPI)
    assert h2 == round((gc.TOP + gc.SUPTITLE + 3 * gc.CELL + gc.BOTTOM) * gc.DPI)
    tall = gradcam_grid({"a": heat[:1], "b": heat[:1]}, images[:1], tmp_path / "tall.png")
    h, w, _ = _png_shape(tall)
    assert h > w  # three rows, one column
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "tall.png", "two.png"]


def test_grid_bad_input(tmp_path, images):
    heat = torch.rand(N, H, W)
    out = tmp_path / "x.png"
    with pytest.raises(ValueError, match="4-D"):
        gradcam_grid({"ReLU": heat}, images[0], out)
    with pytest.raises(ValueError, match=r"rows\['AReLU'\].*one heat map per image"):
        gradcam_grid({"ReLU": heat, "AReLU": heat[:3]}, images, out)
    with pytest.raises(ValueError, match="labels"):
        gradcam_grid({"ReLU": heat}, images, out, labels=["a"])
    with pytest.raises(ValueError, match="mean and std"):
        gradcam_grid({"ReLU": heat}, images, out, mean=0.5)
    with pytest.raises(ValueError, match="channels"):
        gradcam_grid({"ReLU": heat}, images[:, :2], out)
    assert not out.exists()
