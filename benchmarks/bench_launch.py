"""What a kernel boundary costs inside a CUDA graph: how many kernels a short decode step can afford.

    python -m benchmarks.bench_launch [--programs 132] [--max-chain 7] [--out results.json]

Three ways to run stages of trivial work (each program reads and writes one 4-byte word):
- a chain of 1 to --max-chain kernels, each launched plainly;
- the same chain with programmatic dependent launch (Hopper: each kernel launches while the one
  before finishes and waits with griddepcontrol before it reads; Triton's launch_pdl);
- one kernel whose programs count themselves done on an atomic counter, the last to finish running
  the next stage alone ("handoff"): 2 stages as one launch, as the decode step's scan hands its
  histograms to its threshold pass.
Every time is a CUDA-graph replay (benchmarks.common.time_us), so what differs between rows is
what the GPU spends between kernels. Prints a table and writes
benchmarks/results/launch_<device>.json (or --out).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from benchmarks.common import device_slug, print_table, time_us, write_results


@triton.jit
def _touch_kernel(x_ptr, PDL: tl.constexpr):
    i = tl.program_id(0)
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    tl.store(x_ptr + i, tl.load(x_ptr + i) + 1)


@triton.jit
def _handoff_kernel(x_ptr, count_ptr, N, BLOCK: tl.constexpr, PDL: tl.constexpr):
    i = tl.program_id(0)
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    tl.store(x_ptr + i, tl.load(x_ptr + i) + 1)
    tl.debug_barrier()
    if tl.atomic_add(count_ptr, 1, sem="acq_rel") == N - 1:  # the last program runs stage 2 over every word
        o = tl.arange(0, BLOCK)
        p = x_ptr + o
        tl.store(p, tl.load(p, mask=o < N, other=0, cache_modifier=".cg") + 1, mask=o < N)
        tl.store(count_ptr, 0)


def chain(x: torch.Tensor, kernels: int, use_pdl: bool) -> None:
    """`kernels` touch kernels back to back over x (one program a word)."""
    for _ in range(kernels):
        _touch_kernel[(x.numel(),)](x, PDL=use_pdl, launch_pdl=use_pdl)


def handoff(x: torch.Tensor, count: torch.Tensor, use_pdl: bool) -> None:
    """Two stages in one launch: every program's touch, then the last program's pass over all words."""
    _handoff_kernel[(x.numel(),)](x, count, x.numel(), BLOCK=triton.next_power_of_2(x.numel()), PDL=use_pdl,
                                  launch_pdl=use_pdl)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--programs", type=int, default=132, help="programs a kernel (default: one per H100/H200 SM)")
    parser.add_argument("--max-chain", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args()
    out = args.out or Path(__file__).parent / "results" / f"launch_{device_slug()}.json"
    x = torch.zeros(args.programs, dtype=torch.int32, device="cuda")
    count = torch.zeros(1, dtype=torch.int32, device="cuda")
    records = []
    for kernels in range(1, args.max_chain + 1):
        row = {"way": "chain", "stages": kernels, "kernels": kernels}
        for use_pdl in (False, True):
            step = functools.partial(chain, x, kernels, use_pdl)
            row["pdl_us" if use_pdl else "plain_us"] = time_us([step])["median"]
        records.append(row)
    row = {"way": "handoff", "stages": 2, "kernels": 1}
    for use_pdl in (False, True):
        row["pdl_us" if use_pdl else "plain_us"] = time_us([functools.partial(handoff, x, count, use_pdl)])["median"]
    records.append(row)
    if int(count) != 0 or int(x.min()) < 1:  # every program ran, and the last handoff reset its counter
        raise RuntimeError(f"the handoff counter ended at {int(count)}, words at least {int(x.min())}")
    chained = {r["kernels"]: r for r in records if r["way"] == "chain"}
    for r in records:  # each kernel past the first, and the handoff against the two-kernel chain
        if r["way"] == "chain" and r["kernels"] > 1:
            r["plain_per_extra_kernel_us"] = (r["plain_us"] - chained[1]["plain_us"]) / (r["kernels"] - 1)
            r["pdl_per_extra_kernel_us"] = (r["pdl_us"] - chained[1]["pdl_us"]) / (r["kernels"] - 1)
        if r["way"] == "handoff":
            r["saved_against_chain_of_2_us"] = chained[2]["plain_us"] - r["plain_us"]
    params = {k: v for k, v in vars(args).items() if k != "out"}
    write_results(out, params, records)
    columns = ["way", "stages", "kernels", "plain_us", "pdl_us", "plain_per_extra_kernel_us"]
    print_table(records, [*columns, "pdl_per_extra_kernel_us", "saved_against_chain_of_2_us"])
    print(f"wrote {out.name} ({len(records)} records)")


if __name__ == "__main__":
    main()
