"""What the kernels ask of the runtime: whether Triton interprets them."""

from __future__ import annotations

from triton.runtime.interpreter import InterpretedFunction


def interpreted(kernel) -> bool:
    """Whether `kernel` runs in Triton's interpreter (TRITON_INTERPRET=1): no hardware popcount, no tf32."""
    return isinstance(kernel, InterpretedFunction)
