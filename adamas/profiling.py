"""Where one decode step's GPU time goes: its kernels' device times, grouped into the stages of Adamas.

`profile_step(decoder)` runs one extra decode step of a prefilled GraphDecoder under the
PyTorch profiler (a graph replay when the decoder has one, else the eager step) and puts
everything back, so the run it measures goes on as if nothing happened. `stage_times`
sorts the kernels it saw by name into STAGES; the kernels of the split-K merge, shared by the
sparse and the dense attention, count for the attention whose partial kernel ran just before.
"""

from __future__ import annotations

import logging

import torch

from adamas.static import GraphDecoder

logger = logging.getLogger(__name__)

STAGES = ("append + encode", "estimate + select", "sparse attention", "dense attention", "rest of the model")
"""append + encode: the new K and V written to the cache with the new key's code (one kernel a layer on a fixed
cache), and any encode kernel of its own (the query's, where the scan does not encode it); dense attention: full
attention (the dense layers', or every layer's in a full-attention step); rest of the model: every other kernel
(projections, MLP, norms, LM head)."""
_KERNEL_STAGE = {
    "_append_kernel": "append + encode",
    "_hadamard_encode_kernel": "append + encode",
    "_scan_kernel": "estimate + select",
    "_split_kernel": "estimate + select",
    "_manhattan_kernel": "estimate + select",
    "_chunk_histogram_kernel": "estimate + select",
    "threshold_kernel": "estimate + select",
    "_write_kernel": "estimate + select",
    "_sparse_attention_partial_kernel": "sparse attention",
    "_dense_attention_partial_kernel": "dense attention",
    "flash": "dense attention",  # SDPA's flash decode (a full-attention step without a mask)
}
_MERGE = "_merge_splits_kernel"


def stage_times(kernels: list[tuple[str, float]]) -> dict[str, float]:
    """Microseconds per stage from (kernel name, device µs) pairs in launch order."""
    times = dict.fromkeys(STAGES, 0.0)
    attention = "sparse attention"
    for name, us in kernels:
        if _MERGE in name:
            times[attention] += us
            continue
        stage = next((s for key, s in _KERNEL_STAGE.items() if key in name), "rest of the model")
        if stage in ("sparse attention", "dense attention"):
            attention = stage
        times[stage] += us
    return times


@torch.no_grad()
def profile_step(decoder: GraphDecoder) -> dict[str, float] | None:
    """Device µs per stage of one decode step of `decoder` (its current setting), or None off CUDA.

    Needs a prefilled decoder with room for one more token; its state is restored afterwards.
    """
    if decoder.device.type != "cuda":
        return None
    if decoder.length == 0 or decoder.length >= decoder.capacity:
        raise RuntimeError("profile_step() needs a prefilled decoder with room for one more token")
    from torch.profiler import ProfilerActivity, profile

    saved = decoder.snapshot()
    torch.cuda.synchronize(decoder.device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        decoder.run_step()
        torch.cuda.synchronize(decoder.device)
    decoder.restore(saved)
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA and _is_kernel(e)]
    if not events:
        logger.warning("the profiler recorded no CUDA kernel: no stage breakdown")
        return None
    events.sort(key=lambda e: e.time_range.start)
    return stage_times([(e.name, e.time_range.elapsed_us()) for e in events])


def _is_kernel(event) -> bool:
    """Kernel launches, not memory copies or sets (their names start with 'Memcpy'/'Memset')."""
    return not event.name.startswith(("Memcpy", "Memset"))
