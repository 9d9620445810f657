"""The tokens every selection keeps, inside a kernel: adamas.reference.forced_mask without a padding mask."""

from __future__ import annotations

import triton
import triton.language as tl  # noqa: F401  (Triton's interpreter needs it in a jit function's module)


@triton.jit
def forced_tokens(o_l, L, SINK, RECENT):
    """Whether each position o_l of L tokens is among the first SINK or the last RECENT (reference.forced_mask)."""
    return (o_l < SINK) | (o_l >= L - RECENT)
