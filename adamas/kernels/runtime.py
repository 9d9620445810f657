"""What the kernels ask of the runtime: whether Triton interprets them, and counters that outlive a call."""

from __future__ import annotations

import torch
from triton.runtime.interpreter import InterpretedFunction

_ZEROED: dict[tuple, torch.Tensor] = {}


def interpreted(kernel) -> bool:
    """Whether `kernel` runs in Triton's interpreter (TRITON_INTERPRET=1): no hardware popcount, no tf32."""
    return isinstance(kernel, InterpretedFunction)


def zeroed(name: str, numel: int, device: torch.device) -> torch.Tensor:
    """int32 [numel] zeros that their kernel leaves at zero again: one buffer per name, size, device and stream.

    A head's counter of finished splits, which its last split resets: no memset before each
    call, and a CUDA graph that captured the buffer keeps finding it (a buffer is never replaced).
    """
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (name, numel, str(device), stream)
    if key not in _ZEROED:
        _ZEROED[key] = torch.zeros(numel, dtype=torch.int32, device=device)
    return _ZEROED[key]
