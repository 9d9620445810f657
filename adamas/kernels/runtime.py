"""What the kernels ask of the runtime: whether Triton interprets them, programmatic dependent launch, and
counters that outlive a call."""

from __future__ import annotations

import functools
import os

import torch
from triton.runtime.interpreter import InterpretedFunction

PDL_VARIABLE = "ADAMAS_PDL"
"""Set to 0 to launch the decode step's kernels without programmatic dependent launch (to measure what it gives)."""

_ZEROED: dict[tuple, torch.Tensor] = {}


def interpreted(kernel) -> bool:
    """Whether `kernel` runs in Triton's interpreter (TRITON_INTERPRET=1): no hardware popcount, no tf32."""
    return isinstance(kernel, InterpretedFunction)


@functools.cache
def _hopper_or_later(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device)[0] >= 9


def pdl(kernel, device: torch.device) -> bool:
    """Whether `kernel` launches with programmatic dependent launch on `device` (Hopper on, compiled, not switched off).

    Such a launch starts the kernel's programs while the kernel before it finishes; each waits
    (gdc_wait) before it reads what that kernel wrote, so only the launch and the prologue overlap.
    """
    return (
        device.type == "cuda"
        and not interpreted(kernel)
        and os.environ.get(PDL_VARIABLE, "1") != "0"
        and _hopper_or_later(device)
    )


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
