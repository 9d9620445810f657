"""Adamas on a model that accelerate spreads over several devices (device_map="auto"), vs full attention.

    python -m benchmarks.bench_multi_gpu [--shape llama-3.1-8b] [--devices cuda:0 cuda:1 | cuda:0 cpu | cpu]
                                         [--contexts 8192 32768] [--budgets 128] [--out FILE]

Random weights of Llama-3.1-8B's shape (no download): the model is built on the meta
device, placed by accelerate's "auto" placement (balanced memory, then
infer_auto_device_map) under a max_memory that gives each listed device about an equal
share of the weights, so every one holds layers; each weight is then drawn on its device
(normal, std 0.02; norms 1) and the model dispatched. Then:
1. check: at --check-context tokens, --check-tokens greedy tokens of model.generate() with
   Adamas at a budget above the context must equal full attention's, and every layer's
   K, V and codes must sit on the device that layer runs on. Run on fp32 weights
   (--check-dtype), where full attention and Adamas round alike; the same check on the
   timed weights is recorded too, for information (bf16 rounding can flip a near tie);
2. latency: prefill each context, then time --steps eager decode steps (median, min,
   max), full attention and Adamas at each budget. A model spread over devices decodes
   eagerly: a CUDA graph records one device's stream, and accelerate's hooks move
   activations between devices from Python at every layer.
A "cpu" device runs its layers on the CPU (accelerate's main_device="cpu"), so one GPU
can stand in for a second device (--shape tiny); the default is every visible GPU, or
cuda:0 and the CPU on a machine with one. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch
import transformers

import adamas
from adamas.integration import CACHE_ARGUMENT, adamas_state
from adamas.loading import execution_device
from benchmarks.bench_decode import add_speedups, latencies, step_times
from benchmarks.common import device_slug, print_table, write_results
from benchmarks.models import SHAPES, spread_model

LLAMA_SHAPES = [name for name, (family, _) in SHAPES.items() if family == "llama"]
DEFAULTS = adamas.AdamasConfig()


def default_devices() -> list[str]:
    """Every visible GPU; cuda:0 and the CPU with one GPU; the CPU alone without."""
    count = torch.cuda.device_count()
    if count >= 2:
        return [f"cuda:{i}" for i in range(count)]
    return ["cuda:0", "cpu"] if count == 1 else ["cpu"]


def placement(model: transformers.PreTrainedModel) -> dict[str, dict]:
    """Per device the model's decoder layers run on: its name and which layers."""
    where: dict[str, dict] = {}
    for i, layer in enumerate(model.model.layers):
        device = execution_device(layer)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        where.setdefault(str(device), {"name": name, "layers": []})["layers"].append(i)
    return where


@torch.no_grad()
def check_full_budget(model, context: int, new_tokens: int, thresholds: str) -> dict:
    """Greedy tokens of model.generate() with Adamas at a budget above the context vs full attention's."""
    budget = 1 << (context + new_tokens - 1).bit_length()
    config = adamas.AdamasConfig(budget=budget, thresholds=thresholds)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (1, context), generator=generator).to(execution_device(model))
    settings = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    full = model.generate(ids, **settings)[0, context:]
    cache = adamas.AdamasCache(config, model.config.num_hidden_layers)
    with adamas_state(model, config):
        sparse = model.generate(ids, **settings, **{CACHE_ARGUMENT: cache})[0, context:]
    differ = (sparse != full).nonzero()
    on_device = all(
        {t.device for t in (layer.keys, layer.values, getattr(layer, "codes", None)) if t is not None}
        == {execution_device(module)}
        for layer, module in zip(cache.layers, model.model.layers, strict=True)
    )
    return {
        "kind": "check",
        "dtype": str(model.dtype),
        "context": context,
        "new_tokens": new_tokens,
        "budget": budget,
        "tokens_equal": differ.numel() == 0,
        "first_difference": int(differ[0]) if differ.numel() else None,
        "cache_on_layer_devices": on_device,
    }


def latency_records(model, contexts: list[int], budgets: list[int], args: argparse.Namespace) -> list[dict]:
    """Prefill and eager per-token latency at each context: full attention, then Adamas at each budget."""
    settings = [("full", None)] + [
        (f"adamas-{b}", adamas.AdamasConfig(budget=b, thresholds=args.thresholds)) for b in budgets
    ]
    records = []
    for context in contexts:
        for name, config in settings:
            measured = latencies(model, [(name, config)], ["eager"], context, args.steps, args.warmup)
            [(prefill, times)] = measured["eager"]
            adamas.disable(model)
            records.append(
                {
                    "kind": "latency",
                    "context": context,
                    "attention": name,
                    "budget": None if config is None else config.budget,
                }
                | step_times(prefill, times)
            )
        add_speedups(records[-len(settings) :])
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="llama-3.1-8b", choices=LLAMA_SHAPES)
    parser.add_argument("--devices", "--device", nargs="+", help="default: every GPU; cuda:0 cpu with one; else cpu")
    parser.add_argument("--contexts", type=int, nargs="+", default=[8192, 32768])
    parser.add_argument("--budgets", type=int, nargs="+", default=[DEFAULTS.budget])
    parser.add_argument("--thresholds", default=DEFAULTS.thresholds)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--check-context", type=int, default=1024)
    parser.add_argument("--check-tokens", type=int, default=32)
    parser.add_argument("--check-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", type=Path, default=None, help="default results/multi_gpu_<shape>_<device>.json")
    args = parser.parse_args()
    devices = args.devices or default_devices()
    gpus = [d for d in devices if torch.device(d).type == "cuda"]
    dtype = torch.bfloat16 if gpus else torch.float32

    check_model, _ = spread_model(args.shape, devices, getattr(torch, args.check_dtype))
    records = [check_full_budget(check_model, args.check_context, args.check_tokens, args.thresholds)]
    del check_model
    gc.collect()  # a dispatched model refers to itself (accelerate wraps its forward and .to): free it now
    if gpus:
        torch.cuda.empty_cache()
    model, max_memory = spread_model(args.shape, devices, dtype)
    if dtype != getattr(torch, args.check_dtype):
        records.append(check_full_budget(model, args.check_context, args.check_tokens, args.thresholds))
    records += latency_records(model, args.contexts, args.budgets, args)

    where = placement(model)
    name = f"{device_slug()}_{len(gpus)}gpu" + ("_cpu" if "cpu" in devices else "")
    out = args.out or Path(__file__).parent / "results" / f"multi_gpu_{args.shape}_{name}.json"
    params = vars(args) | {"out": out.name, "devices": devices, "dtype": str(dtype), "mode": "eager"}
    write_results(out, params | {"max_memory": max_memory, "placement": where}, records)
    print(", ".join(f"{d} ({p['name']}): layers {p['layers'][0]}-{p['layers'][-1]}" for d, p in where.items()))
    for check in (r for r in records if r["kind"] == "check"):
        print(
            f"check {check['dtype']}: tokens equal {check['tokens_equal']}, cache on layer devices "
            f"{check['cache_on_layer_devices']}"
        )
    columns = ["context", "attention", "prefill_ms", "step_ms_median", "step_ms_min", "step_ms_max", "speedup"]
    print_table([r for r in records if r["kind"] == "latency"], columns, markdown=True)
    print(f"wrote {out}")
    strict = records[0]
    return 0 if strict["tokens_equal"] and strict["cache_on_layer_devices"] else 1


if __name__ == "__main__":
    sys.exit(main())
