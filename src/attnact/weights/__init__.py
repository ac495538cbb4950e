"""Trained weights from elsewhere: the authors' MXNet Gluon ATAC networks (open-atac), read
without MXNet and converted to attnact models, and a catalogue of downloadable weights."""

from attnact.weights.mxnet_params import NotMXNetParamsError, read_params
from attnact.weights.open_atac import (
    ArchitectureError,
    OpenATACArchitecture,
    convert_open_atac,
    infer_architecture,
    load_open_atac,
)
from attnact.weights.preprocess import EvalPreprocessing, preprocess
from attnact.weights.pretrained import fetch_pretrained, list_pretrained, pretrained_info
from attnact.weights.saved import load_converted, save_converted

__all__ = [
    "ArchitectureError",
    "EvalPreprocessing",
    "NotMXNetParamsError",
    "OpenATACArchitecture",
    "convert_open_atac",
    "fetch_pretrained",
    "infer_architecture",
    "list_pretrained",
    "load_converted",
    "load_open_atac",
    "preprocess",
    "pretrained_info",
    "read_params",
    "save_converted",
]
