"""Gradient clipping, gradient accumulation and an EMA of the weights in the engine: each
checked against what it means, and each resumable exactly."""

from __future__ import annotations

import pytest
import torch

from attnact.train import Callback, TrainConfig, fit, load_checkpoint


def _config(tmp_path, name="run", **kw):
    base = dict(model="tiny", dataset="fake", epochs=1, batch_size=16, lr=0.05, momentum=0.0,
                optimizer="sgd", progress=False, deterministic=True,
                out_dir=str(tmp_path / name) if tmp_path is not None else None)
    base.update(kw)
    return TrainConfig(**base)


def _train(fakes, cfg, *, bn=True, dropout=0.2, loader_batch=None, callbacks=()):
    torch.manual_seed(cfg.seed)
    model = fakes.tiny_model(bn=bn, dropout=dropout)
    loaders = fakes.make_loaders(batch_size=loader_batch or cfg.batch_size, augment=False)
    return fit(cfg, model=model, loaders=loaders, callbacks=callbacks)


def _weights(result):
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}


def test_accumulating_k_batches_is_one_step_on_the_k_times_larger_batch(fakes):
    """Without BatchNorm or dropout, the mean-loss gradients of two batches of 8, each halved
    and summed, are the gradient of their batch of 16: the same weights (to rounding)."""
    big = _train(fakes, _config(None, batch_size=16, epochs=2), bn=False, dropout=0)
    accum = _train(fakes, _config(None, batch_size=8, grad_accum_steps=2, epochs=2),
                   bn=False, dropout=0)
    a, b = _weights(big), _weights(accum)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    plain = _weights(_train(fakes, _config(None, batch_size=8, epochs=2), bn=False, dropout=0))
    assert any(not torch.allclose(plain[k], b[k], atol=1e-4) for k in b)  # it did accumulate


def test_clipping_bounds_every_step(fakes):
    """Plain SGD without weight decay moves the weights by lr × (clipped gradient) per step."""
    clip, lr = 1e-3, 0.05

    class Recorder(Callback):
        def __init__(self):
            self.before = None
            self.moves = []

        def on_step_end(self, state):
            now = torch.cat([p.detach().flatten() for p in state.model.parameters()])
            if self.before is not None:
                self.moves.append((now - self.before).norm().item())
            self.before = now

    rec = Recorder()
    _train(fakes, _config(None, lr=lr, grad_clip_norm=clip), callbacks=[rec])
    assert rec.moves and max(rec.moves) <= lr * clip * (1 + 1e-3)  # float32 rounding
    rec2 = Recorder()
    _train(fakes, _config(None, lr=lr), callbacks=[rec2])
    assert max(rec2.moves) > 10 * lr * clip  # without clipping the steps are far larger


def test_ema_weights_are_checkpointed_and_differ_from_the_raw_ones(tmp_path, fakes):
    decay = 0.5
    seen = []

    class Weights(Callback):
        def on_step_end(self, state):
            seen.append({k: v.detach().clone() for k, v in state.model.state_dict().items()})

    _train(fakes, _config(tmp_path, ema_decay=decay, batch_size=32), callbacks=[Weights()])
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    ema = {k.removeprefix("module."): v for k, v in ckpt["ema"].items()
           if k.startswith("module.")}
    expected = {k: v.clone() for k, v in seen[0].items()}
    for weights in seen[1:]:
        for k, v in weights.items():
            if v.is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * v
    for k, v in expected.items():
        if v.is_floating_point():
            torch.testing.assert_close(ema[k], v, rtol=1e-6, atol=1e-7)
    assert any(not torch.allclose(ema[k], ckpt["model"][k]) for k in expected
               if expected[k].is_floating_point())
    # the recorded test metrics are the EMA weights' (evaluated in eval mode)
    from attnact.train import evaluate

    model = fakes.tiny_model()
    model.load_state_dict({k: v for k, v in ema.items() if k in model.state_dict()})
    _, test_loader, _ = fakes.make_loaders(batch_size=32, augment=False)
    scored = evaluate(model, test_loader)
    assert scored["loss"] == pytest.approx(ckpt["history"][-1]["test_loss"], rel=1e-6)


@pytest.mark.parametrize("extras", [dict(grad_accum_steps=3), dict(grad_clip_norm=0.5),
                                    dict(ema_decay=0.9), dict(grad_accum_steps=2,
                                                              grad_clip_norm=1.0, ema_decay=0.8)])
def test_each_is_resumed_exactly(tmp_path, fakes, extras):
    straight = _train(fakes, _config(tmp_path, "a", epochs=3, **extras))
    _train(fakes, _config(tmp_path, "b", epochs=2, **extras))
    resumed = _train(fakes, _config(tmp_path, "b", epochs=3, resume=True, **extras))
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ca = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    cb = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert ca["history"][-1]["test_top1"] == cb["history"][-1]["test_top1"]
    if "ema_decay" in extras:
        assert all(torch.equal(ca["ema"][k], cb["ema"][k]) for k in ca["ema"])


def test_bad_values_are_refused():
    for kw, match in ((dict(grad_accum_steps=0), "grad_accum_steps"),
                      (dict(grad_clip_norm=0.0), "grad_clip_norm"),
                      (dict(grad_clip_norm=float("inf")), "grad_clip_norm"),
                      (dict(ema_decay=1.0), "ema_decay"), (dict(ema_decay=0.0), "ema_decay")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**kw)
