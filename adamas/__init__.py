"""Adamas: Hadamard sparse attention for long-context decoding (arXiv 2510.18413).

Each cached key is Hadamard-transformed and stored as 2-bit codes; at every decode step
the query's code is compared with all key codes by Manhattan distance and only the
`budget` closest tokens get exact attention. `adamas.reference` is the readable PyTorch
specification; `adamas.kernels` holds the Triton kernels of the GPU path.
"""

import importlib

from adamas.config import PAPER_THRESHOLDS, AdamasConfig

_PUBLIC = {
    **dict.fromkeys(
        ("calibrate", "decode_attention", "dense_attention", "encode", "hadamard", "manhattan", "select"),
        "adamas.ops",
    ),
    **dict.fromkeys(("sparse_attention", "unpack"), "adamas.ops"),
    **dict.fromkeys(("enable", "disable", "AdamasCache"), "adamas.integration"),
    "load_model": "adamas.loading",
    "generate": "adamas.generation",
    "generate_side_by_side": "adamas.generation",
    **dict.fromkeys(("DocumentPrompt", "document_messages", "document_prompt", "read_document"), "adamas.documents"),
    "Comparison": "adamas.comparison",
}
"""Public names and the module each comes from."""


def __getattr__(name: str):
    """Each public name imports its module on first use: the config alone needs neither torch nor transformers."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'adamas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__version__ = "0.1.0"

__all__ = ["PAPER_THRESHOLDS", "AdamasConfig", *sorted(_PUBLIC)]
