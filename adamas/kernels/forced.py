"""The tokens every selection keeps, inside a kernel: adamas.reference.forced_mask, by position or by valid count."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def forced_tokens(o_l, L, SINK, RECENT):
    """Whether each position o_l of L tokens is among the first SINK or the last RECENT (reference.forced_mask)."""
    return (o_l < SINK) | (o_l >= L - RECENT)


@triton.jit
def forced_valid_tokens(b_valid, b_upto, total, SINK, RECENT):
    """Whether each valid token is among its row's first SINK or last RECENT valid ones (reference.forced_mask with
    valid), from b_upto, the row's valid tokens at or before it, and total, the row's valid tokens."""
    return b_valid & ((b_upto <= SINK) | (total - b_upto + b_valid.to(tl.int32) <= RECENT))
