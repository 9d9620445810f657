"""End-to-end decode of a Llama-3.1-8B-shaped model: per-token latency, Adamas vs full attention, 8K to 128K.

    python -m benchmarks.bench_e2e [--contexts 8192 32768 131072] [--batches 1 4] [--budget 128]
                                   [--steps 32] [--shape llama-3.1-8b] [--out FILE] [--no-graph]
                                   [--dense-backend auto|torch]

Random weights of the real shape (no download), built on the device in bf16. For each
(context, batch): one adamas.static.GraphDecoder of capacity `context` (a decode step attends
over every slot of the fixed cache, so it costs what a `context`-token step costs), a random
prompt of `batch` rows filling it but for the decode room, and one prefill, shared by both
settings: its time, and the time of encoding the prompt's keys (FixedCache.encode_prompt,
run again after the prefill, which ran it once). Then `steps` decode steps under full
attention and `steps` under Adamas on that same cache (GraphDecoder.switch), each step one
CUDA-graph replay timed with CUDA events (eager steps with --no-graph or on a CPU); and, as
the baseline a user has without this project, transformers' StaticCache decode of the same
context with its step captured in a CUDA graph (SDPA under a mask). Full
attention, and Adamas' dense layers, decode the masked cache with the split-K kernel
`adamas.dense_attention` (`--dense-backend torch`: with grouped SDPA, to compare). The key
codes' bytes are compared with K+V's, from the cache's own buffers. A configuration whose
cache would not fit in the free GPU memory is recorded as skipped, with the numbers.
Prints a markdown table and writes benchmarks/results/e2e_<device>.json (or --out).
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

import adamas
from adamas.integration import CACHE_ARGUMENT
from adamas.static import PREFILL_CHUNK, WARMUP_STEPS, GraphDecoder
from benchmarks.common import device_slug, write_results
from benchmarks.models import SHAPES, random_model, shape_config

GIB = 2**30
SETTINGS = ("full", "adamas")
logger = logging.getLogger("bench_e2e")


def decode_room(steps: int) -> int:
    """Slots kept free after the prompt: a capture and `steps` steps per setting, the capture's warm-up.

    Rounded up to 64, so that prompt lengths share the kernels' integer specializations with the warm-up.
    """
    return -(-(2 * (steps + 1) + WARMUP_STEPS + 1) // 64) * 64


def memory_need(model: transformers.PreTrainedModel, config: adamas.AdamasConfig, context: int, batch: int) -> dict:
    """Bytes a (context, batch) configuration allocates beside the weights: K/V, codes and a workspace estimate.

    The workspace holds one layer's K and V repeated to every query head twice (in each captured
    graph's pool, when SDPA gets a mask and transformers repeats K/V: before 5.24), and the
    prefill chunk's activations; 1 GiB more for the rest.
    """
    c = model.config
    size = next(model.parameters()).element_size()
    sparse_layers = c.num_hidden_layers - len([i for i in config.dense_layers if i < c.num_hidden_layers])
    kv = 2 * c.num_hidden_layers * batch * c.num_key_value_heads * context * c.head_dim * size
    codes = sparse_layers * batch * c.num_key_value_heads * context * c.head_dim // 4
    repeated = 2 * batch * c.num_attention_heads * context * c.head_dim * size
    chunk = min(PREFILL_CHUNK, context)
    activations = batch * chunk * (3 * c.intermediate_size + 6 * c.hidden_size) * size + chunk * context * size
    workspace = 2 * repeated + activations + GIB
    return {"kv": kv, "codes": codes, "workspace": workspace, "total": kv + codes + workspace}


def elapsed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds `fn` takes: CUDA events around it on a GPU, the wall clock elsewhere."""
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3


def warm_up(model, config: adamas.AdamasConfig, batch: int, steps: int, cuda_graph: bool) -> None:
    """Prefill and encode a short prompt of `batch` rows: compiles and caches what the timed prefill runs."""
    capacity = min(1024, model.config.max_position_embeddings)
    decoder = GraphDecoder(model, config, capacity, cuda_graph=cuda_graph, batch=batch)
    ids = torch.randint(0, model.config.vocab_size, (batch, capacity - decode_room(steps)), device=decoder.device)
    decoder.prefill(ids)
    decoder.cache.encode_prompt(ids.shape[1])


@torch.no_grad()
def measure(model, config: adamas.AdamasConfig, context: int, batch: int, steps: int, cuda_graph: bool) -> dict:
    """Prefill one random prompt of `batch` rows on a `context`-slot decoder, then time each setting's steps."""
    decoder = GraphDecoder(model, config, context, cuda_graph=cuda_graph, batch=batch)
    device = decoder.device
    prompt = context - decode_room(steps)
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt), device=device)
    prefill = elapsed(lambda: decoder.prefill(ids), device)
    encode = elapsed(lambda: decoder.cache.encode_prompt(prompt), device)
    record = {"prompt_tokens": prompt, "prefill_ms": prefill * 1e3, "encode_ms": encode * 1e3}
    record["encode_share"] = encode / prefill
    record["prefill_tokens_per_s"] = batch * prompt / prefill
    record |= cache_bytes(decoder)
    for name, setting in zip(SETTINGS, (None, config), strict=True):
        decoder.switch(setting)
        decoder.step()  # captures the graph (or warms the eager step)
        times = [elapsed(decoder.step, device) for _ in range(steps)]
        record |= {
            f"{name}_ms_median": statistics.median(times) * 1e3,
            f"{name}_ms_min": min(times) * 1e3,
            f"{name}_ms_max": max(times) * 1e3,
            f"{name}_tokens_per_s": batch / statistics.median(times),
        }
    record["speedup"] = record["full_ms_median"] / record["adamas_ms_median"]
    return record


@torch.no_grad()
def transformers_static_ms(model, context: int, batch: int, steps: int) -> dict:
    """What a user gets without this project: transformers' StaticCache of `context` slots, each decode step
    (the model's forward, SDPA under the cache's mask, and the greedy pick) captured in one CUDA graph.

    The cache is not prefilled: a step reads every slot under the mask whatever they hold, so its time is
    that of a step at this context. {"transformers_static_ms_median": ...}, or {"transformers_static_error": why}.
    """
    device = next(model.parameters()).device
    try:
        cache = transformers.StaticCache(config=model.config, max_cache_len=context)
        position = torch.full((1,), context - decode_room(steps), dtype=torch.long, device=device)
        token = torch.zeros(batch, 1, dtype=torch.long, device=device)

        def step() -> None:
            inputs = {"input_ids": token, "position_ids": position.view(1, 1).expand(batch, 1), CACHE_ARGUMENT: cache}
            logits = model(**inputs, cache_position=position, use_cache=True).logits
            token.copy_(logits[:, -1:].argmax(-1))
            position.add_(1)

        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_STEPS):
                step()
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        graph.replay()
        times = [elapsed(graph.replay, device) for _ in range(steps)]
    except Exception as error:  # a transformers release whose step cannot be captured: the error is the result
        return {"transformers_static_error": f"{type(error).__name__}: {error}"[:300]}
    return {
        "transformers_static_ms_median": statistics.median(times) * 1e3,
        "transformers_static_ms_min": min(times) * 1e3,
    }


def cache_bytes(decoder: GraphDecoder) -> dict:
    """Bytes of K+V and of the key codes in the decoder's buffers, over all layers and per Adamas layer."""
    layers = decoder.cache.layers
    kv = sum(layer.keys.nbytes + layer.values.nbytes for layer in layers)
    coded = [layer for layer in layers if layer.codes is not None]
    codes = sum(layer.codes.nbytes for layer in coded)  # the whole buffers: decoding, every slot is visible
    per_layer = coded[0].codes.nbytes / (coded[0].keys.nbytes + coded[0].values.nbytes) if coded else None
    return {"kv_bytes": kv, "codes_bytes": codes, "codes_per_kv": codes / kv, "codes_per_kv_adamas_layer": per_layer}


def run_config(model, config: adamas.AdamasConfig, context: int, batch: int, args: argparse.Namespace) -> dict:
    """One (context, batch) record: measured, or skipped with the memory numbers when it cannot fit."""
    device = next(model.parameters()).device
    need = memory_need(model, config, context, batch)
    record = {"shape": args.shape, "context": context, "batch": batch, "budget": config.budget}
    record["need_gib"] = need["total"] / GIB
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        if need["total"] > free:
            weights = sum(p.nbytes for p in model.parameters()) / GIB
            record["skipped"] = (
                f"needs {need['total'] / GIB:.1f} GiB (K/V {need['kv'] / GIB:.1f}, codes {need['codes'] / GIB:.1f}, "
                f"workspace ~{need['workspace'] / GIB:.1f}) but {free / GIB:.1f} GiB are free "
                f"({total / GIB:.1f} GiB device, {weights:.1f} GiB of weights)"
            )
            return record
        torch.cuda.reset_peak_memory_stats(device)
    try:
        record |= measure(model, config, context, batch, args.steps, cuda_graph=device.type == "cuda" and args.graph)
    except torch.cuda.OutOfMemoryError as error:
        record["skipped"] = f"out of memory, needed ~{need['total'] / GIB:.1f} GiB: {str(error).splitlines()[0]}"
    if device.type == "cuda" and args.graph and args.transformers_baseline and "skipped" not in record:
        free_memory(device)  # the decoder's cache and graphs are gone: the static cache takes their room
        record |= transformers_static_ms(model, context, batch, args.steps)
        if "transformers_static_ms_median" in record:
            record["speedup_vs_transformers_full"] = record["transformers_static_ms_median"] / record["full_ms_median"]
            record["speedup_vs_transformers_adamas"] = (
                record["transformers_static_ms_median"] / record["adamas_ms_median"]
            )
    if device.type == "cuda":
        record["peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
    return record


def free_memory(device: torch.device) -> None:
    """Give back what the last configuration held: its cache, graphs and their pools."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def dense_decode_kv(config: adamas.AdamasConfig) -> str:
    """How a masked decode step reads K/V, in full attention and in Adamas' dense layers."""
    if config.dense_backend == "torch":
        return "grouped SDPA with the mask: K/V read once per KV head (adamas.integration.dense_attention)"
    return "split-K Triton kernel, K/V read once per GQA group (adamas.dense_attention) on CUDA"


def markdown_table(records: list[dict]) -> str:
    """The records as a markdown table: one row per (context, batch)."""
    lines = [
        "| context | batch | prefill | encode share | transformers (static cache) | full attention | Adamas | speedup "
        "| codes / K+V (Adamas layer) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        context = f"{r['context'] // 1024}K" if r["context"] % 1024 == 0 else str(r["context"])
        if "skipped" in r:
            lines.append(f"| {context} | {r['batch']} | skipped: {r['skipped']} | | | | | | |")
            continue
        baseline = r.get("transformers_static_ms_median")
        baseline = "—" if baseline is None else f"{baseline:.2f} ms"
        lines.append(
            f"| {context} | {r['batch']} | {r['prefill_ms'] / 1e3:.2f} s | {r['encode_share']:.1%} "
            f"| {baseline} | {r['full_ms_median']:.2f} ms | {r['adamas_ms_median']:.2f} ms | {r['speedup']:.2f}x "
            f"| 1/{1 / r['codes_per_kv']:.1f} (1/{1 / r['codes_per_kv_adamas_layer']:.0f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="llama-3.1-8b", choices=list(SHAPES))
    parser.add_argument("--contexts", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--budget", type=int, default=adamas.AdamasConfig().budget)
    parser.add_argument("--thresholds", default=adamas.AdamasConfig().thresholds)
    parser.add_argument("--steps", type=int, default=32, help="timed decode steps per setting")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-graph", dest="graph", action="store_false", help="eager decode steps on CUDA")
    parser.add_argument(
        "--dense-backend",
        default=adamas.AdamasConfig().dense_backend,
        choices=["auto", "torch"],
        help="masked dense decode steps: the split-K kernel on CUDA (auto) or grouped SDPA (torch)",
    )
    parser.add_argument(
        "--no-transformers-baseline",
        dest="transformers_baseline",
        action="store_false",
        help="skip transformers' own static-cache decode (its step in a CUDA graph, SDPA with a mask)",
    )
    parser.add_argument("--out", type=Path, default=None, help="result file (default results/e2e_<device>.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = adamas.AdamasConfig(budget=args.budget, thresholds=args.thresholds, dense_backend=args.dense_backend)
    for context in args.contexts:
        if context - decode_room(args.steps) < 1 or context > shape_config(args.shape).max_position_embeddings:
            parser.error(f"context {context} leaves no prompt or exceeds the shape's {args.shape} context")
    start = time.perf_counter()
    model = random_model(args.shape, device, dtype)
    logger.info(
        "model %s built in %.1f s; dense decode: %s", args.shape, time.perf_counter() - start, dense_decode_kv(config)
    )
    slug = device_slug() if device.type == "cuda" else "cpu"
    out = args.out or Path(__file__).parent / "results" / f"e2e_{slug}.json"
    mode = "graph" if device.type == "cuda" and args.graph else "eager"
    params = vars(args) | {
        "out": str(out.name),
        "dtype": str(dtype),
        "mode": mode,
        "dense_decode_kv": dense_decode_kv(config),
        "weights_gib": sum(p.nbytes for p in model.parameters()) / GIB,
    }
    records = []
    for batch in args.batches:
        warm_up(model, config, batch, args.steps, cuda_graph=device.type == "cuda" and args.graph)
        for context in args.contexts:
            free_memory(device)  # what the allocator caches counts as taken in the free memory seen
            records.append(run_config(model, config, context, batch, args))
            logger.info("context %d, batch %d: %s", context, batch, records[-1].get("skipped", "done"))
            write_results(out, params, records)  # after every setting: a run cut short keeps what it measured
    records.sort(key=lambda r: (r["context"], r["batch"]))
    params["seconds"] = time.perf_counter() - start
    write_results(out, params, records)
    print(markdown_table(records))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
