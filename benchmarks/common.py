"""What every benchmark shares: GPU timing, and the table + JSON output (with adamas.environment's record)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import triton
import triton.testing

from adamas.environment import environment


def device_slug() -> str:
    """A file-name-safe short name of the GPU, e.g. 'h100', or 'cpu' without one."""
    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name().lower()
    for chip in ("h200", "h100", "a100", "l40s", "a6000", "4090"):
        if chip in name:
            return chip
    return "".join(c if c.isalnum() else "_" for c in name)


def time_us(fns: Sequence[Callable[[], object]], reps: int = 5) -> dict:
    """Median and spread (µs) of one call, from CUDA-graph replays of all `fns` in turn.

    Each fn runs the same work on its own input set, so consecutive calls do not find
    their inputs in L2; the graph removes launch gaps from the measurement.
    """

    def run_all() -> None:
        for fn in fns:
            fn()

    times = [triton.testing.do_bench_cudagraph(run_all, rep=20) * 1e3 / len(fns) for _ in range(reps)]
    times.sort()
    return {"median": times[len(times) // 2], "min": times[0], "max": times[-1]}


def kernel_us(fn: Callable[[], object], reps: int = 20) -> dict:
    """Device time (µs) per call of each GPU kernel that `fn` launches, from the PyTorch profiler.

    Eager calls, so the sum of the kernels beside a graph-replay time shows what the gaps between
    kernels cost. {"error": why} where the profiler yields no CUDA events.
    """
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    times = {}
    for event in prof.key_averages():
        total = getattr(event, "self_device_time_total", 0)
        if event.device_type == torch.autograd.DeviceType.CUDA and total > 0:
            times[event.key] = total / reps
    return times or {"error": "the profiler recorded no CUDA kernel"}


def input_sets(make: Callable[[], object], bytes_per_set: int, l2_bytes: int = 50 * 2**20) -> list:
    """Enough independent input sets that cycling through them spills the L2 (at most 8)."""
    n = min(8, max(1, -(-4 * l2_bytes // max(bytes_per_set, 1))))
    return [make() for _ in range(n)]


def write_results(path: Path, params: dict, records: list[dict], **sections: list[dict] | None) -> None:
    """Write {environment, parameters, records} as JSON, and after them each of `sections` that is not None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"environment": environment(), "parameters": params, "records": records}
    payload |= {name: rows for name, rows in sections.items() if rows is not None}
    path.write_text(json.dumps(payload, indent=1) + "\n")


def print_table(records: list[dict], columns: Sequence[str], markdown: bool = False) -> None:
    """An aligned table of the chosen columns: plain, or as markdown (pipes and a rule under the header)."""
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in records)) for c in columns]
    rows = [[c.rjust(w) for c, w in zip(columns, widths, strict=True)]]
    if markdown:
        rows.append(["-" * (w - 1) + ":" for w in widths])
    rows += [[_fmt(r.get(c)).rjust(w) for c, w in zip(columns, widths, strict=True)] for r in records]
    for row in rows:
        print(f"| {' | '.join(row)} |" if markdown else "  ".join(row))


def _fmt(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)
