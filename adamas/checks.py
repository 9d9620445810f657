"""Validation at the public boundary: each check names the bad value and what is allowed."""

from __future__ import annotations

import os

import torch

from adamas.config import BACKENDS

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 256


def interpreter_enabled() -> bool:
    """Whether Triton kernels run on the CPU through TRITON_INTERPRET=1."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def resolve_backend(backend: str, device: torch.device) -> str:
    """Pick "torch", "triton" or "cpu" for tensors on `device`: auto means Triton on CUDA, "cpu" on the CPU.

    "torch" is the reference on any device; "cpu" (numpy popcounts) needs CPU tensors.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return {"cuda": "triton", "cpu": "cpu"}.get(device.type, "torch")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got {device}")
    if backend == "triton" and device.type != "cuda" and not interpreter_enabled():
        raise ValueError(
            f"backend='triton' needs CUDA tensors (got {device}) or TRITON_INTERPRET=1 set before adamas is imported"
        )
    return backend


def check_tensor(name: str, x: object, ndim: int | None = None) -> torch.Tensor:
    """`x` must be a tensor with `ndim` dims (any if None)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    return x


def check_float(name: str, x: torch.Tensor) -> None:
    """`x` must be fp32, fp16 or bf16."""
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {x.dtype}")


def check_head_dim(name: str, d: int) -> None:
    """A head_dim must be a power of two from 16 to 256."""
    if not (MIN_HEAD_DIM <= d <= MAX_HEAD_DIM and d & (d - 1) == 0):
        raise ValueError(f"{name} must be a power of two from {MIN_HEAD_DIM} to {MAX_HEAD_DIM}, got {d}")


def check_codes(name: str, codes: torch.Tensor, ndim: int) -> None:
    """Packed codes must be uint8 with `ndim` dims and a last dim of d // 4 for a valid d."""
    check_tensor(name, codes, ndim)
    if codes.dtype != torch.uint8:
        raise TypeError(f"{name} must be uint8 packed codes, got {codes.dtype}")
    check_head_dim(f"{name}.shape[-1] * 4 (the head_dim)", codes.shape[-1] * 4)


def check_same(what: str, **tensors: torch.Tensor) -> None:
    """All `tensors` must share a device (what="device") or a dtype (what="dtype")."""
    values = {name: getattr(t, what) for name, t in tensors.items()}
    if len(set(values.values())) > 1:
        listed = ", ".join(f"{name}={value}" for name, value in values.items())
        raise ValueError(f"tensors must share one {what}, got {listed}")


def check_heads(hq: int, hkv: int) -> None:
    """Query heads must split evenly over KV heads (GQA)."""
    if hkv < 1 or hq % hkv != 0:
        raise ValueError(f"query heads ({hq}) must be a multiple of KV heads ({hkv})")


def check_match(name: str, got: int, expected: int, against: str) -> None:
    """A size must equal its counterpart's."""
    if got != expected:
        raise ValueError(f"{name} is {got} but {against} is {expected}")
