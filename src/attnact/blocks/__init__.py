"""Attention and micro-modules used by the comparison hosts of the ATAC paper (Sec. IV-B/C).

These are not activations: they sit on a residual branch (SE, GE, LocalSE) or after an
activation (NiN). One concept per file, each naming its paper.
"""

from attnact.blocks.ge import GATHERS, GatherExcite
from attnact.blocks.localse import LocalSE
from attnact.blocks.nin import NiNBlock
from attnact.blocks.se import SqueezeExcite, se_hidden_channels

__all__ = [
    "GATHERS",
    "GatherExcite",
    "LocalSE",
    "NiNBlock",
    "SqueezeExcite",
    "se_hidden_channels",
]
