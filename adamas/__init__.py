"""Adamas: Hadamard sparse attention for long-context decoding (arXiv 2510.18413).

Each cached key is Hadamard-transformed and stored as 2-bit codes; at every decode step
the query's code is compared with all key codes by Manhattan distance and only the
`budget` closest tokens get exact attention. `adamas.reference` is the readable PyTorch
specification; `adamas.kernels` holds the Triton kernels of the GPU path.
"""

from adamas.config import PAPER_THRESHOLDS, AdamasConfig
from adamas.ops import (
    calibrate,
    decode_attention,
    dense_attention,
    encode,
    hadamard,
    manhattan,
    select,
    sparse_attention,
    unpack,
)

_INTEGRATION = {"enable", "disable", "AdamasCache"}
_LOADING = {"load_model"}
_GENERATION = {"generate"}


def __getattr__(name: str):
    """The transformers-facing names load on first use, so the core needs no transformers."""
    if name in _INTEGRATION:
        from adamas import integration

        return getattr(integration, name)
    if name in _LOADING:
        from adamas import loading

        return getattr(loading, name)
    if name in _GENERATION:
        from adamas import generation

        return getattr(generation, name)
    raise AttributeError(f"module 'adamas' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "PAPER_THRESHOLDS",
    "AdamasCache",
    "AdamasConfig",
    "calibrate",
    "decode_attention",
    "dense_attention",
    "disable",
    "enable",
    "encode",
    "generate",
    "hadamard",
    "load_model",
    "manhattan",
    "select",
    "sparse_attention",
    "unpack",
]
