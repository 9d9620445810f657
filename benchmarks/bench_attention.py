"""Adamas decode attention vs PyTorch SDPA dense decode, stage by stage, on one GPU.

    python -m benchmarks.bench_attention [--lengths 8192 32768] [--budgets 128 1024] [--batches 1 8]

Times each stage (encode the query, manhattan over all key codes, select — the histogram
kernel, with torch.topk beside it for comparison — sparse attention) and the whole
`adamas.decode_attention` against dense SDPA over the same bf16 K/V cache, with CUDA graphs
over rotating input sets; prints a table and writes benchmarks/results/attention_<device>.json.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch
import torch.nn.functional as F

import adamas
from adamas import kernels
from benchmarks.common import device_slug, input_sets, print_table, time_us, write_results

SHAPES = {"llama3-8b": (32, 8, 128), "qwen2.5-7b": (28, 4, 128)}  # (Hq, Hkv, d)
COPY_BANDWIDTH = 3.0e12  # bytes/s, device-to-device copy measured on the H100 (see shared notes)


def make_inputs(batch: int, hq: int, hkv: int, length: int, d: int) -> dict:
    """One decode step's tensors: bf16 q, K, V cache and the keys' 2-bit codes."""
    q = torch.randn(batch, hq, d, device="cuda", dtype=torch.bfloat16) * 8
    k = torch.randn(batch, hkv, length, d, device="cuda", dtype=torch.bfloat16) * 8
    v = torch.randn(batch, hkv, length, d, device="cuda", dtype=torch.bfloat16)
    return {"q": q, "k": k, "v": v, "k_codes": kernels.encode(k, adamas.PAPER_THRESHOLDS)}


def bench_case(shape: str, length: int, batch: int, budgets: list[int]) -> list[dict]:
    """All budgets for one shape, length and batch: one dense time, stage times per budget."""
    hq, hkv, d = SHAPES[shape]
    kv_bytes = 2 * batch * hkv * length * d * 2
    sets = input_sets(functools.partial(make_inputs, batch, hq, hkv, length, d), kv_bytes)
    thresholds = adamas.PAPER_THRESHOLDS
    for s in sets:  # stage inputs that the later stages read
        s["q_codes"] = kernels.encode(s["q"], thresholds)
        s["dist"] = kernels.manhattan(s["q_codes"], s["k_codes"])

    def dense(s):
        return F.scaled_dot_product_attention(s["q"][:, :, None], s["k"], s["v"], enable_gqa=True)

    dense_us = time_us([functools.partial(dense, s) for s in sets])["median"]
    encode_us = time_us([functools.partial(kernels.encode, s["q"], thresholds) for s in sets])["median"]
    manhattan_us = time_us([functools.partial(kernels.manhattan, s["q_codes"], s["k_codes"]) for s in sets])["median"]
    codes_bytes = batch * hkv * length * d // 4
    records = []
    for budget in budgets:
        k = min(budget, length)
        for s in sets:
            s["idx"] = kernels.select(s["dist"], budget, 3 * d)
        select_us = time_us([functools.partial(kernels.select, s["dist"], budget, 3 * d) for s in sets])["median"]
        topk = [functools.partial(torch.topk, s["dist"], k, -1, False, False) for s in sets]
        topk_us = time_us(topk)["median"]  # what the histogram select replaced
        attn = [functools.partial(kernels.sparse_attention, s["q"], s["k"], s["v"], s["idx"], d**-0.5) for s in sets]
        attention_us = time_us(attn)["median"]
        config = adamas.AdamasConfig(budget=budget, dense_layers=())
        step = [functools.partial(adamas.decode_attention, s["q"], s["k"], s["v"], s["k_codes"], config) for s in sets]
        total = time_us(step)
        gathered = batch * hq * min(budget, length) * d * 2 * 2
        floor_us = (codes_bytes + gathered) / COPY_BANDWIDTH * 1e6
        records.append(
            {
                "shape": shape,
                "L": length,
                "budget": budget,
                "batch": batch,
                "adamas_us": total["median"],
                "adamas_us_min": total["min"],
                "adamas_us_max": total["max"],
                "dense_us": dense_us,
                "speedup": dense_us / total["median"],
                "encode_q_us": encode_us,
                "manhattan_us": manhattan_us,
                "select_us": select_us,
                "topk_us": topk_us,
                "attention_us": attention_us,
                "codes_bytes": codes_bytes,
                "codes_floor_us": floor_us,
                "over_floor": total["median"] / floor_us,
                "achieved_GBps": (codes_bytes + gathered) / total["median"] / 1e3,
                "dense_GBps": kv_bytes / dense_us / 1e3,
            }
        )
    del sets
    torch.cuda.empty_cache()
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--lengths", nargs="+", type=int, default=[2**k * 1024 for k in range(2, 9)])
    parser.add_argument("--budgets", nargs="+", type=int, default=[64, 128, 256, 512, 1024, 2048])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args()
    torch.manual_seed(0)
    records = []
    for shape in args.shapes:
        for batch in args.batches:
            for length in args.lengths:
                records += bench_case(shape, length, batch, args.budgets)
                last = records[-len(args.budgets) :]
                print_table(last, ["shape", "batch", "L", "budget", "dense_us", "adamas_us", "speedup"])
    out = args.out or Path(__file__).parent / "results" / f"attention_{device_slug()}.json"
    params = {k: v for k, v in vars(args).items() if k != "out"} | {"copy_bandwidth": COPY_BANDWIDTH}
    write_results(out, params, records)
    columns = ["shape", "batch", "L", "budget", "dense_us", "adamas_us", "speedup", "encode_q_us"]
    columns += ["manhattan_us", "select_us", "topk_us", "attention_us", "over_floor"]
    print_table(records, columns)
    print(f"wrote {out.name} ({len(records)} records)")


if __name__ == "__main__":
    main()
