"""Adamas decode attention vs PyTorch SDPA dense decode, stage by stage, on one GPU.

    python -m benchmarks.bench_attention [--shapes llama3-8b] [--lengths 32768 131072] [--budgets 128]
        [--batches 1 8] [--topk] [--flex] [--sweep [VARIANT ...]] [--profile] [--out results.json]

Times each stage — encode the query; select the nearest keys, fused (`kernels.nearest`: one
scan of the codes with its histograms, then threshold, split and finish; `scan_us` is the scan
alone) beside the two-kernel path that large budgets over short contexts take
(`kernels.manhattan`, then the histogram `kernels.select`); sparse attention — and the whole
step three ways (`adamas.decode_attention` as it picks its path, the same step through the two
kernels, and through the fused path at every length and budget: `adamas_fused_us`), against
dense SDPA over the same bf16 K/V cache, with CUDA graphs over rotating input sets. Dense
decode is timed three ways: SDPA's flash path (no mask), the split-K kernel
`kernels.dense_attention` under a mask of all slots (what a fixed-capacity cache's dense step
runs), and SDPA with that mask.
Checks that both selection paths pick the same tokens. `--flex` adds FlexAttention's dense
decode (compiled per shape; its error is recorded if it fails); `--topk` adds torch.topk over
the distances; `--profile` adds each kernel's device time in the budget-128 step (eager, the
PyTorch profiler: beside the graph time, what the gaps between kernels cost); `--sweep` times
the fused selection under other launch constants, all of SWEEP or the variants named (written
beside the results as <out>_sweep.json).
Prints a table and writes benchmarks/results/attention_<device>.json (or --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from pathlib import Path

import torch
import torch.nn.functional as F

import adamas
from adamas import kernels
from adamas.config import max_code_distance
from adamas.kernels import scan_select
from adamas.ops import FusedSelection, uses_fused_selection
from benchmarks.common import device_slug, input_sets, kernel_us, print_table, time_us, write_results
from benchmarks.models import ATTENTION_SHAPES as SHAPES

# bytes/s of the codes floor: what the device can read at best, so that the floor is one no kernel
# beats: the H100's device-to-device copy, the H200's best dense SDPA read over its grid (dense_GBps
# in results/attention_h200.json); other devices take the H100's
FLOOR_BANDWIDTH = {"h100": 3.0e12, "h200": 4.6e12}
COPY_BANDWIDTH = FLOOR_BANDWIDTH.get(device_slug(), 3.0e12)
SWEEP = {  # launch parameters of the fused selection tried by --sweep, one change at a time
    "default": scan_select.NearestLaunch(),
    "block_l=128": scan_select.NearestLaunch(block_l=128),
    "block_l=512": scan_select.NearestLaunch(block_l=512),
    "scan_warps=8": scan_select.NearestLaunch(scan_warps=8),
    "scan_programs=512": scan_select.NearestLaunch(scan_programs=512),
    "scan_programs=2048": scan_select.NearestLaunch(scan_programs=2048),
    "max_chunks=128": scan_select.NearestLaunch(max_chunks=128),
    "coarse_bins=32": scan_select.NearestLaunch(coarse_bins=32),
    "coarse_bins=128": scan_select.NearestLaunch(coarse_bins=128),
}
FUSED_EVERYWHERE = FusedSelection(min_tokens=0)  # every step selects with kernels.nearest
PROFILED_BUDGET = 128  # --profile breaks this budget's step (the targets') into its kernels
SECONDARY_REPS = 3  # graph timings of the stages that only explain the totals (the totals take 5)


def make_inputs(batch: int, hq: int, hkv: int, length: int, d: int) -> dict:
    """One decode step's tensors: bf16 q, K, V cache and the keys' 2-bit codes."""
    q = torch.randn(batch, hq, d, device="cuda", dtype=torch.bfloat16) * 8
    k = torch.randn(batch, hkv, length, d, device="cuda", dtype=torch.bfloat16) * 8
    v = torch.randn(batch, hkv, length, d, device="cuda", dtype=torch.bfloat16)
    return {"q": q, "k": k, "v": v, "k_codes": kernels.encode(k, adamas.PAPER_THRESHOLDS)}


def calls(sets: list[dict], fn, keys: list[str], *args) -> list:
    """One call per input set: fn(*(that set's tensors under `keys`), *args)."""
    return [functools.partial(fn, *(s[key] for key in keys), *args) for s in sets]


def two_kernel_step(q, k, v, k_codes, budget: int) -> torch.Tensor:
    """The decode step through the two selection kernels: encode, manhattan, select, attend."""
    d = q.shape[-1]
    q_codes = kernels.encode(q, adamas.PAPER_THRESHOLDS)
    idx = kernels.select(kernels.manhattan(q_codes, k_codes), budget, max_code_distance(d))
    return kernels.sparse_attention(q, k, v, idx, d**-0.5)


def same_selection(s: dict, budget: int, launch: scan_select.NearestLaunch | None = None) -> bool:
    """Whether the fused and the two-kernel paths pick the same set of tokens in every row."""
    fused = kernels.nearest(s["q_codes"], s["k_codes"], budget, launch=launch or scan_select.NearestLaunch())
    split = kernels.select(s["dist"], budget, max_code_distance(s["q"].shape[-1]))
    return torch.equal(fused.sort(-1).values, split.sort(-1).values)


@functools.cache
def flex_decode():
    """FlexAttention's dense decode, compiled once (torch.compile specializes it per shape on first call)."""
    from torch.nn.attention.flex_attention import flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: compiled(q[:, :, None], k, v, enable_gqa=True)


def flex_us(sets: list[dict]) -> dict:
    """FlexAttention over the sets' q, K, V: {"flex_us": µs} if it compiles and runs, else {"flex_error": why}."""
    try:
        flex_decode()(sets[0]["q"], sets[0]["k"], sets[0]["v"])  # compile outside the graph capture
        return {"flex_us": time_us(calls(sets, flex_decode(), ["q", "k", "v"]), SECONDARY_REPS)["median"]}
    except Exception as error:  # any failure to compile or run is the result recorded
        return {"flex_error": f"{type(error).__name__}: {error}"[:300]}


def profile_record(step, dense_split_k) -> dict:
    """Kernel by kernel device times of one Adamas step and of the split-K dense step (eager, profiler)."""
    try:
        adamas_kernels, split_k_kernels = kernel_us(step), kernel_us(dense_split_k)
    except Exception as error:  # a profiler that fails here is the result recorded
        return {"profile_error": f"{type(error).__name__}: {error}"[:300]}
    record = {"adamas_kernels_us": adamas_kernels, "dense_split_k_kernels_us": split_k_kernels}
    if "error" not in adamas_kernels:
        record["adamas_kernels_sum_us"] = sum(adamas_kernels.values())
    return record


def bench_case(
    shape: str, length: int, batch: int, budgets: list[int], topk: bool, flex: bool, profile: bool = False
) -> list[dict]:
    """All budgets for one shape, length and batch: one dense time, stage times per budget."""
    hq, hkv, d = SHAPES[shape]
    kv_bytes = 2 * batch * hkv * length * d * 2
    sets = input_sets(functools.partial(make_inputs, batch, hq, hkv, length, d), kv_bytes)
    thresholds = adamas.PAPER_THRESHOLDS
    for s in sets:  # stage inputs that the later stages read
        s["q_codes"] = kernels.encode(s["q"], thresholds)
        s["valid"] = torch.ones(batch, length, dtype=torch.bool, device="cuda")
        s["dist"] = kernels.manhattan(s["q_codes"], s["k_codes"])

    def dense(q, k, v):
        return F.scaled_dot_product_attention(q[:, :, None], k, v, enable_gqa=True)

    def dense_split_k(q, k, v, valid):  # a fixed-capacity cache's masked step, as the integration runs it
        return kernels.dense_attention(q, k, v, d**-0.5, valid)

    def dense_masked_sdpa(q, k, v, valid):  # the same step through SDPA with the mask, what the kernel is for
        grouped = q.view(batch, hkv, hq // hkv, d)
        return F.scaled_dot_product_attention(grouped, k, v, attn_mask=valid[:, None, None, :])

    def stage_us(fn, keys: list[str], *args) -> float:
        return time_us(calls(sets, fn, keys, *args), SECONDARY_REPS)["median"]

    dense_us = time_us(calls(sets, dense, ["q", "k", "v"]))["median"]
    split_k_us = stage_us(dense_split_k, ["q", "k", "v", "valid"])
    masked_sdpa_us = stage_us(dense_masked_sdpa, ["q", "k", "v", "valid"])
    encode_us = stage_us(kernels.encode, ["q"], thresholds)
    flex_record = flex_us(sets) if flex else {}
    s0 = sets[0]
    split_k_out = dense_split_k(s0["q"], s0["k"], s0["v"], s0["valid"])
    split_k_error = (split_k_out - dense(s0["q"], s0["k"], s0["v"])[:, :, 0]).abs().max().item()
    manhattan_us = stage_us(kernels.manhattan, ["q_codes", "k_codes"])
    scan_us = stage_us(scan_select.scan_distances, ["q_codes", "k_codes"])
    codes_bytes = batch * hkv * length * d // 4
    records = []
    for budget in budgets:
        k = min(budget, length)
        for s in sets:
            s["idx"] = kernels.nearest(s["q_codes"], s["k_codes"], budget)
        nearest = time_us(calls(sets, kernels.nearest, ["q_codes", "k_codes"], budget))
        select_us = stage_us(kernels.select, ["dist"], budget, max_code_distance(d))
        attention_us = stage_us(kernels.sparse_attention, ["q", "k", "v", "idx"], d**-0.5)
        config = adamas.AdamasConfig.paper(budget, dense_layers=())  # the stages above force no tokens
        total = time_us(calls(sets, adamas.decode_attention, ["q", "k", "v", "k_codes"], config))
        two_kernel_us = stage_us(two_kernel_step, ["q", "k", "v", "k_codes"], budget)
        if uses_fused_selection(budget, batch * length):
            fused_us = total["median"]  # decode_attention took the fused path already
        else:
            fused_step = functools.partial(adamas.decode_attention, fused_selection=FUSED_EVERYWHERE)
            fused_us = stage_us(fused_step, ["q", "k", "v", "k_codes"], config)

        # the step in two kernels: the split kernel's last program per row attends too (kernels.nearest_attention)
        def two_kernel_attention(q, k, v, k_codes, budget=budget):
            return kernels.nearest_attention(q, thresholds, k_codes, k, v, budget, d**-0.5)

        fused_attention_us = stage_us(two_kernel_attention, ["q", "k", "v", "k_codes"])
        out_step = adamas.decode_attention(s0["q"], s0["k"], s0["v"], s0["k_codes"], config)
        out_fused = two_kernel_attention(s0["q"], s0["k"], s0["v"], s0["k_codes"])[0]
        gathered = batch * hq * k * d * 2 * 2
        floor_us = (codes_bytes + gathered) / COPY_BANDWIDTH * 1e6
        record = {
            "shape": shape,
            "L": length,
            "budget": budget,
            "batch": batch,
            "adamas_us": total["median"],
            "adamas_us_min": total["min"],
            "adamas_us_max": total["max"],
            "adamas_two_kernel_us": two_kernel_us,
            "adamas_fused_us": fused_us,
            "adamas_attend_in_split_us": fused_attention_us,
            "attend_in_split_max_error": (out_fused.float() - out_step.float()).abs().max().item(),
            "speedup_attend_in_split": min(dense_us, split_k_us) / fused_attention_us,
            "dense_us": dense_us,
            "dense_split_k_us": split_k_us,
            "dense_masked_sdpa_us": masked_sdpa_us,
            "dense_split_k_max_error": split_k_error,  # against SDPA's output, bf16
            # against the fastest dense decode of this run: SDPA's flash path or the split-K kernel
            "dense_best_us": min(dense_us, split_k_us),
            "speedup": min(dense_us, split_k_us) / total["median"],
            "speedup_two_kernel": min(dense_us, split_k_us) / two_kernel_us,
            "encode_q_us": encode_us,
            "nearest_us": nearest["median"],
            "nearest_us_min": nearest["min"],
            "nearest_us_max": nearest["max"],
            "scan_us": scan_us,
            "manhattan_us": manhattan_us,
            "select_us": select_us,
            "manhattan_select_us": manhattan_us + select_us,
            "attention_us": attention_us,
            "same_selection": same_selection(sets[0], budget),
            "codes_bytes": codes_bytes,
            "codes_floor_us": floor_us,
            "over_floor": total["median"] / floor_us,
            "achieved_GBps": (codes_bytes + gathered) / total["median"] / 1e3,
            "dense_GBps": kv_bytes / dense_us / 1e3,
        }
        record |= flex_record
        if topk:  # the sort-based selection, beside the histogram select
            record["topk_us"] = stage_us(torch.topk, ["dist"], k, -1, False, False)
        if profile and budget == PROFILED_BUDGET:
            step = functools.partial(adamas.decode_attention, s0["q"], s0["k"], s0["v"], s0["k_codes"], config)
            record |= profile_record(step, functools.partial(dense_split_k, s0["q"], s0["k"], s0["v"], s0["valid"]))
        records.append(record)
    sets.clear()  # free the inputs before the next case allocates its own
    torch.cuda.empty_cache()
    return records


def sweep_case(shape: str, length: int, batch: int, budget: int, variants: list[str]) -> list[dict]:
    """The fused selection (and its scan alone) under the named SWEEP variants of its launch constants."""
    hq, hkv, d = SHAPES[shape]
    sets = input_sets(functools.partial(make_inputs, batch, hq, hkv, length, d), 2 * batch * hkv * length * d * 2)
    for s in sets:
        s["q_codes"] = kernels.encode(s["q"], adamas.PAPER_THRESHOLDS)
    sets[0]["dist"] = kernels.manhattan(sets[0]["q_codes"], sets[0]["k_codes"])
    records = []
    for variant in variants:
        launch = SWEEP[variant]
        select = functools.partial(kernels.nearest, launch=launch)
        nearest = time_us(calls(sets, select, ["q_codes", "k_codes"], budget), SECONDARY_REPS)
        scan = functools.partial(scan_select.scan_distances, launch=launch)
        scan = time_us(calls(sets, scan, ["q_codes", "k_codes"]), SECONDARY_REPS)
        same = same_selection(sets[0], budget, launch)
        records.append(
            {
                "shape": shape,
                "L": length,
                "budget": budget,
                "batch": batch,
                "variant": variant,
                "nearest_us": nearest["median"],
                "scan_us": scan["median"],
                "same_selection": same,
            }
        )
    sets.clear()  # free the inputs before the next case allocates its own
    torch.cuda.empty_cache()
    return records


def parse_case(text: str) -> tuple[str, int, int, list[int]]:
    """SHAPE:L:BATCH:BUDGET, e.g. llama3-8b:131072:8:128 -> (shape, length, batch, [budget])."""
    try:
        shape, length, batch, budget = text.split(":")
        case = (shape, int(length), int(batch), [int(budget)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"a case is SHAPE:L:BATCH:BUDGET, got {text!r}") from None
    if shape not in SHAPES:
        raise argparse.ArgumentTypeError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--lengths", nargs="+", type=int, default=[2**k * 1024 for k in range(2, 9)])
    parser.add_argument("--budgets", nargs="+", type=int, default=[64, 128, 256, 512, 1024, 2048])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--topk", action="store_true", help="also time torch.topk over the distances")
    parser.add_argument("--flex", action="store_true", help="also time FlexAttention's decode")
    parser.add_argument(
        "--sweep",
        nargs="*",
        choices=list(SWEEP),
        default=None,
        metavar="VARIANT",
        help=f"also time the fused selection's launch-constant variants: all, or those named ({', '.join(SWEEP)})",
    )
    parser.add_argument(
        "--profile", action="store_true", help=f"also time each kernel of the budget-{PROFILED_BUDGET} step (profiler)"
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        type=parse_case,
        default=None,
        metavar="SHAPE:L:BATCH:BUDGET",
        help="time these cases instead of the grid of shapes x batches x lengths x budgets",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args()
    torch.manual_seed(0)
    out = args.out or Path(__file__).parent / "results" / f"attention_{device_slug()}.json"
    params = {k: v for k, v in vars(args).items() if k != "out"} | {"copy_bandwidth": COPY_BANDWIDTH}
    short = ["shape", "batch", "L", "budget", "dense_us", "adamas_us", "adamas_two_kernel_us", "speedup"]
    short += ["adamas_attend_in_split_us", "nearest_us", "manhattan_select_us", "same_selection"]
    records, sweep = [], []
    grid = [(s, n, b, args.budgets) for s in args.shapes for b in args.batches for n in args.lengths]
    variants = list(SWEEP) if args.sweep == [] else args.sweep or []
    sweep_params = params | {"sweep_variants": {name: dataclasses.asdict(SWEEP[name]) for name in variants}}
    for shape, length, batch, budgets in grid if args.cases is None else args.cases:
        records += bench_case(shape, length, batch, budgets, args.topk, args.flex, args.profile)
        write_results(out, params, records)  # after every case: a run cut short keeps what it measured
        print_table(records[-len(budgets) :], short)
        if variants:
            sweep += sweep_case(shape, length, batch, budgets[0], variants)
            write_results(out.with_name(f"{out.stem}_sweep.json"), sweep_params, sweep)
            print_table(sweep[-len(variants) :], ["L", "batch", "variant", "nearest_us", "scan_us", "same_selection"])
    write_results(out, params, records)
    columns = [*short[:-3], "encode_q_us", "scan_us", "nearest_us", "manhattan_us", "select_us"]
    columns += ["attention_us", "over_floor", "dense_split_k_us", "dense_masked_sdpa_us", "same_selection"]
    columns += (["topk_us"] if args.topk else []) + (["flex_us"] if args.flex else [])
    print_table(records, columns)
    print(f"wrote {out.name} ({len(records)} records)")


if __name__ == "__main__":
    main()
