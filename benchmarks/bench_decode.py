"""Per-token decode latency of a whole model, Adamas vs full attention, after a long prefill.

    python -m benchmarks.bench_decode [--shape smollm2] [--contexts 2048 8000] [--budgets 128]
                                      [--modes eager graph]

Random weights of a real model's shape (no download): prefill a random prompt, then time
each greedy decode step, for full attention and for Adamas at each budget, in two modes:
- eager: model.generate()'s own path, the dynamic cache, every step driven from Python
  (synchronized after each step; on a small model this measures launch overhead);
- graph (CUDA only): adamas.static.GraphDecoder, a fixed-capacity cache and the step
  replayed as one CUDA graph (CUDA events around each replay): what the GPU spends.
Prints a table and writes benchmarks/results/decode_<device>.json (or --out).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import transformers

import adamas
from adamas.integration import CACHE_ARGUMENT
from adamas.loading import execution_device
from adamas.static import GraphDecoder
from benchmarks.common import device_slug, print_table, write_results

SHAPES = {  # LlamaConfig fields of real models
    "smollm2": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        vocab_size=49152,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
    "llama-3.2-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        tie_word_embeddings=True,
    ),
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_parameters=dict(
            rope_type="llama3",
            rope_theta=500000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=8192,
        ),
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
}


def random_model(shape: str, device: torch.device, dtype: torch.dtype) -> transformers.PreTrainedModel:
    """A Llama-architecture model of `shape` with random weights."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**SHAPES[shape])
    with torch.device(device):  # initialize on the device: a 1B model's CPU init takes minutes
        return transformers.LlamaForCausalLM(config).to(dtype).eval()


@torch.no_grad()
def eager_latencies(model, config: adamas.AdamasConfig | None, context: int, steps: int) -> tuple[float, list[float]]:
    """Prefill `context` random tokens on the dynamic cache, then time `steps` decode steps: (prefill s, [step s])."""
    device = execution_device(model)  # a model spread over devices (accelerate) takes its ids on its main device
    layers = model.config.num_hidden_layers
    if config is None:
        adamas.disable(model)
        cache = transformers.DynamicCache()
    else:
        adamas.enable(model, config)
        cache = adamas.AdamasCache(config, layers)
    ids = torch.randint(0, model.config.vocab_size, (1, context), device=device)
    _sync(device)
    start = time.perf_counter()
    token = model(input_ids=ids, logits_to_keep=1, **{CACHE_ARGUMENT: cache}).logits[:, -1:].argmax(-1)
    _sync(device)
    prefill = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        token = model(input_ids=token, **{CACHE_ARGUMENT: cache}).logits[:, -1:].argmax(-1)
        _sync(device)
        times.append(time.perf_counter() - start)
    adamas.disable(model)
    return prefill, times


@torch.no_grad()
def graph_latencies(model, config: adamas.AdamasConfig | None, context: int, steps: int) -> tuple[float, list[float]]:
    """Prefill on a GraphDecoder, capture the step, then time `steps` replays with CUDA events."""
    device = next(model.parameters()).device
    decoder = GraphDecoder(model, config, context + steps + 8, cuda_graph=True)
    ids = torch.randint(0, model.config.vocab_size, (1, context), device=device)
    _sync(device)
    start = time.perf_counter()
    decoder.prefill(ids)
    _sync(device)
    prefill = time.perf_counter() - start
    decoder.step()  # warm-up and capture
    times = []
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(steps - 1):
        begin.record()
        decoder.step()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / 1e3)
    return prefill, times


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="smollm2", choices=list(SHAPES))
    parser.add_argument("--contexts", type=int, nargs="+", default=[2048, 8000])
    parser.add_argument("--budgets", type=int, nargs="+", default=[128])
    parser.add_argument("--thresholds", default="calibrated")
    parser.add_argument("--modes", nargs="+", default=["eager", "graph"], choices=["eager", "graph"])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="result file (default results/decode_<device>.json)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    modes = [m for m in args.modes if m == "eager" or device.type == "cuda"]
    model = random_model(args.shape, device, dtype)
    settings = [("full", None)] + [
        (f"adamas-{b}", adamas.AdamasConfig(budget=b, thresholds=args.thresholds)) for b in args.budgets
    ]
    measure = {"eager": eager_latencies, "graph": graph_latencies}
    records = []
    for context in args.contexts:
        for mode in modes:
            for name, config in settings:
                measure[mode](model, config, context, args.warmup)  # compile kernels, warm the allocator
                prefill, times = measure[mode](model, config, context, args.steps)
                records.append(
                    {
                        "shape": args.shape,
                        "context": context,
                        "mode": mode,
                        "attention": name,
                        "budget": None if config is None else config.budget,
                        "prefill_ms": prefill * 1e3,
                        "step_ms_median": statistics.median(times) * 1e3,
                        "step_ms_min": min(times) * 1e3,
                        "step_ms_max": max(times) * 1e3,
                    }
                )
            full = records[-len(settings)]["step_ms_median"]
            for record in records[-len(settings) :]:
                record["speedup"] = full / record["step_ms_median"]
    out = args.out or Path(__file__).parent / "results" / f"decode_{device_slug()}.json"
    write_results(out, vars(args) | {"out": str(out.name), "dtype": str(dtype)}, records)
    columns = ["shape", "context", "mode", "attention", "prefill_ms", "step_ms_median", "step_ms_min", "speedup"]
    print_table(records, columns)
    print(f"wrote {out.name}")


if __name__ == "__main__":
    main()
