"""Adamas: Hadamard sparse attention for long-context decoding (arXiv 2510.18413).

Each cached key is Hadamard-transformed and stored as 2-bit codes; at every decode step
the query's code is compared with all key codes by Manhattan distance and only the
`budget` closest tokens get exact attention. `adamas.reference` is the readable PyTorch
specification; `adamas.kernels` holds the Triton kernels of the GPU path.
"""

from adamas.config import PAPER_THRESHOLDS, AdamasConfig
from adamas.ops import decode_attention, encode, hadamard, manhattan, select, sparse_attention, unpack

__version__ = "0.1.0"

__all__ = [
    "PAPER_THRESHOLDS",
    "AdamasConfig",
    "decode_attention",
    "encode",
    "hadamard",
    "manhattan",
    "select",
    "sparse_attention",
    "unpack",
]
