"""LocalSE: the ATAC local channel attention used once per residual block, as in SENet.

Source: Y. Dai, S. Oehmcke, F. Gieseke, Y. Wu, K. Barnard, "Attention as Activation", ICPR 2020,
Sec. IV-B(2) and Fig. 5 ("LocalSENet").

The gate is Eq. (4) of the paper, the same as in an ATAC unit,

    L(X) = σ(B(PWConv₂(δ(B(PWConv₁(X))))))        PWConv₁: C → C/r, PWConv₂: C/r → C

but it is not an activation: it refines the output of the residual branch once per block,
``out = shortcut + L(res) ⊗ res``, i.e. an SE block without the global average pooling. The
paper sets r = 1 so that one LocalSE block (2C² weights) costs as much as the two ATAC units
with r = 2 (C² each) it is compared with.

The state_dict layout (``conv1.weight``, ``bn1.*``, ``conv2.weight``, ``bn2.*``) is that of
:class:`attnact.ATAC`, so the two gates can be compared weight for weight.
"""

from __future__ import annotations

from attnact.units.atac import ATAC

__all__ = ["LocalSE"]


class LocalSE(ATAC):
    """Local channel attention on a residual branch (ATAC paper, Fig. 5): X · L(X), Eq. (4).

    The computation is ATAC's (that is the point of the ablation: same gate, used once per block
    on the residual output instead of as every activation), so this is ATAC with the block's
    default r = 1 and a 4-D input.

    Args:
        channels: C, channels of the input (dim 1).
        r: channel reduction ratio; the bottleneck has ``int(C // r)`` channels. The paper uses
            r = 1 (parameter parity with two ATAC units of r = 2 per block).

    Parameters: 2·C·(C//r) + 2·(C//r) + 2·C (BN affine included) — exactly those of ATAC(C, r).
    """

    def __init__(self, channels: int, *, r: int | float = 1) -> None:
        super().__init__(channels, r=r)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, r={self.r:g}"
