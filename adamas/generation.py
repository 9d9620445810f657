"""Streaming greedy generation with per-step latency and, on request, traces of what Adamas did."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from adamas.config import AdamasConfig, check_int
from adamas.integration import (
    CACHE_ARGUMENT,
    AdamasCache,
    adamas_state,
    enabled_config,
    set_enabled,
    uses_sliding_window,
)
from adamas.loading import check_context, execution_device, is_dispatched
from adamas.profiling import profile_step
from adamas.static import GraphDecoder
from adamas.tracing import ACTIVE_RECORDER, TraceRecorder, default_pairs


@dataclass
class StepRecord:
    """One generated token: step 0 is the prefill (the whole prompt), then one decode step each."""

    step: int
    token_id: int
    text: str  # what this token adds to the answer's text
    latency_s: float  # wall time of the step, synchronized on CUDA
    context_length: int  # tokens the step attended over
    graph: bool = False  # whether the step ran as a CUDA-graph replay (else eagerly, from Python)
    recorder: TraceRecorder | None = None  # with trace=True, on an Adamas run: finish() it after the last step
    stages: dict[str, float] | None = None  # with profile=True, on step 0 of a GPU run: µs per stage of one step


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages_or_prompt: str | list[dict[str, str]]) -> torch.Tensor:
    """Token ids [1, T]: a chat (list of messages) through the chat template, a string as it is."""
    if isinstance(messages_or_prompt, str):
        ids = tokenizer(messages_or_prompt, return_tensors="pt")["input_ids"]
    elif isinstance(messages_or_prompt, list) and all(isinstance(m, dict) for m in messages_or_prompt):
        encoded = tokenizer.apply_chat_template(
            messages_or_prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        ids = encoded["input_ids"]
    else:
        raise TypeError(f"messages_or_prompt must be a str or a list of chat messages, got {type(messages_or_prompt)}")
    if ids.shape[-1] == 0:
        raise ValueError("the prompt is empty")
    return ids


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages_or_prompt: str | list[dict[str, str]],
    config: AdamasConfig | None = None,
    max_new_tokens: int = 256,
    trace: bool = False,
    trace_heads: tuple[tuple[int, int], ...] | None = None,
    cuda_graph: bool | None = None,
    profile: bool = False,
    fixed_cache: bool | None = None,
) -> Iterator[StepRecord]:
    """Greedy-decode, yielding a StepRecord per token; Adamas under `config`, full attention if None.

    Both modes share the prefill (dense SDPA), so their answers and latencies compare.
    A model on one device without sliding-window layers decodes on a fixed-capacity cache
    (adamas.static.GraphDecoder), which writes each step's K and V in place rather than
    growing them; on CUDA each step is one CUDA-graph replay (`cuda_graph`, default on CUDA;
    False runs the same steps eagerly), so the step latencies are the GPU's, and the capture
    counts in step 0's latency.
    A model that accelerate spread over several devices or offloaded (a device_map), or one
    with sliding-window layers, decodes eagerly on transformers' dynamic cache, each layer's
    K, V and codes living on that layer's device (`graph_obstacle` says why); so does any
    model with `fixed_cache=False`, as model.generate() decodes.
    With `trace` (Adamas runs), every record carries the run's TraceRecorder: each sparse
    layer's query and selection go into its buffers as the steps run (inside the graph too),
    and `record.recorder.finish()` after the last step gives the StepTraces and the selection
    density (see adamas.tracing); `trace_heads` picks the (layer, head) pairs whose scores
    are kept (default: four).
    With `profile` on a GPU's fixed-cache path, step 0's record carries `stages`: the device
    µs of one extra decode step's kernels per stage (adamas.profiling), measured after the
    prefill and undone, so no timed step pays for it.
    The model's own Adamas state is restored when the generator finishes or is closed.
    """
    if config is not None and not isinstance(config, AdamasConfig):
        raise TypeError(f"config must be an AdamasConfig or None, got {type(config).__name__}")
    check_int("max_new_tokens", max_new_tokens, 1)
    device = execution_device(model)  # where the model takes its ids: the main device of a dispatched one
    ids = prompt_ids(tokenizer, messages_or_prompt).to(device)
    check_context(model, ids.shape[-1] + max_new_tokens)
    recorder = None
    if trace and config is not None:
        layers = model.config.num_hidden_layers
        pairs = trace_heads if trace_heads is not None else default_pairs(layers, config.dense_layers)
        recorder = TraceRecorder(max_new_tokens, tuple(pairs))
    stop = stop_ids(model, tokenizer)
    fixed, graph = _decode_path(cuda_graph, fixed_cache, model, device)
    if fixed:
        decoder = GraphDecoder(model, config, ids.shape[-1] + max_new_tokens, cuda_graph=graph, recorder=recorder)
        if recorder is not None:
            recorder.bind(decoder.cache, ids.shape[-1])
        steps = _fixed_steps(decoder, ids, max_new_tokens, profile)
        yield from _decode(tokenizer, steps, stop, recorder, graph=decoder.cuda_graph)
        return
    with adamas_state(model, config):
        cache = AdamasCache(config, model.config.num_hidden_layers) if config is not None else DynamicCache()
        if recorder is not None:
            recorder.bind(cache, ids.shape[-1])
        steps = _eager_steps(model, ids, cache, max_new_tokens, recorder)
        yield from _decode(tokenizer, steps, stop, recorder, graph=False)


def generate_side_by_side(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages_or_prompt: str | list[dict[str, str]],
    config: AdamasConfig,
    max_new_tokens: int = 256,
    trace: bool = False,
    trace_heads: tuple[tuple[int, int], ...] | None = None,
    cuda_graph: bool | None = None,
    profile: bool = False,
) -> Iterator[tuple[str, StepRecord]]:
    """Adamas under `config` and full attention on one prompt, a step of each in turn: ("adamas" | "full", record).

    Both answers grow together on one model: each run keeps its own attention state (restored
    on the model before each of its steps) and its own context, so its recorder survives the
    other run's steps and the thread hops of a web server. A run that ends drops out; the
    model's Adamas state is restored when this generator finishes or is closed.
    Both runs decode on the same path (`cuda_graph` and `profile` as in generate); only the
    Adamas run records traces, which cost it two buffer copies per layer and step.
    """
    if not isinstance(config, AdamasConfig):
        raise TypeError(f"config must be an AdamasConfig, got {type(config).__name__}")
    original = enabled_config(model)
    runs = {
        "adamas": generate(
            model, tokenizer, messages_or_prompt, config, max_new_tokens, trace, trace_heads, cuda_graph, profile
        ),
        "full": generate(
            model, tokenizer, messages_or_prompt, None, max_new_tokens, cuda_graph=cuda_graph, profile=profile
        ),
    }
    contexts = {mode: contextvars.copy_context() for mode in runs}
    states = dict.fromkeys(runs, original)  # the Adamas state each run last left on the model
    try:
        while runs:
            for mode in list(runs):
                if enabled_config(model) is not states[mode]:
                    set_enabled(model, states[mode])
                record = contexts[mode].run(next, runs[mode], None)
                states[mode] = enabled_config(model)
                if record is None:
                    del runs[mode]
                else:
                    yield mode, record
    finally:
        for mode, run in runs.items():
            contexts[mode].run(run.close)
        set_enabled(model, original)


def graph_obstacle(model: PreTrainedModel) -> str | None:
    """Why `model` decodes eagerly rather than as CUDA-graph replays, in words; None when it can be captured."""
    obstacle = _fixed_cache_obstacle(model)
    if obstacle is None and execution_device(model).type != "cuda":
        return "the model is not on a CUDA device"
    return obstacle


def _fixed_cache_obstacle(model: PreTrainedModel) -> str | None:
    """Why `model` cannot decode on a fixed-capacity cache (adamas.static), in words; None when it can."""
    if is_dispatched(model):
        return (
            "the model is placed by accelerate (device_map: spread over devices or offloaded); its hooks move "
            "inputs and weights from Python at every layer"
        )
    if uses_sliding_window(model.config):
        return f"{model.config.model_type} uses sliding-window attention, which the fixed-capacity cache does not hold"
    return None


def _decode_path(
    cuda_graph: bool | None, fixed_cache: bool | None, model: PreTrainedModel, device: torch.device
) -> tuple[bool, bool]:
    """(fixed-capacity cache, CUDA graph) for `model`; ValueError when asked for one that cannot be had."""
    for name, value in (("cuda_graph", cuda_graph), ("fixed_cache", fixed_cache)):
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{name} must be True, False or None, got {value!r}")
    if fixed_cache is False and cuda_graph:
        raise ValueError("cuda_graph=True replays steps on the fixed-capacity cache: it needs fixed_cache True or None")
    if fixed_cache is False:
        return False, False
    obstacle = _fixed_cache_obstacle(model)
    if obstacle is not None:
        if cuda_graph or fixed_cache:
            raise ValueError(f"{obstacle}, so it cannot decode on a fixed-capacity cache or in a graph")
        return False, False
    return True, device.type == "cuda" if cuda_graph is None else cuda_graph


def _eager_steps(
    model, ids: torch.Tensor, cache, max_new_tokens: int, recorder: TraceRecorder | None
) -> Iterator[tuple]:
    """One forward per token on `cache`: (token id, latency s, tokens attended over, stages None) per step."""
    inputs = ids
    for step in range(max_new_tokens):
        start = time.perf_counter()
        active = ACTIVE_RECORDER.set(recorder if step > 0 else None)  # the prefill runs dense: nothing to record
        try:
            logits = model(input_ids=inputs, use_cache=True, logits_to_keep=1, **{CACHE_ARGUMENT: cache}).logits
        finally:
            ACTIVE_RECORDER.reset(active)
        if recorder is not None and step > 0:
            recorder.advance()
            recorder.recorded += 1
        next_id = int(logits[0, -1].argmax())  # int() waits for the GPU
        yield next_id, time.perf_counter() - start, cache.get_seq_length(), None
        inputs = torch.tensor([[next_id]], device=ids.device)


def _fixed_steps(decoder: GraphDecoder, ids: torch.Tensor, max_new_tokens: int, profile: bool) -> Iterator[tuple]:
    """Prefill (and capture) on `decoder`, then one step (a graph replay) per token; same tuples as _eager_steps."""
    start = time.perf_counter()
    token = int(decoder.prefill(ids))
    if decoder.cuda_graph and max_new_tokens > 1:
        decoder.capture()
    latency = time.perf_counter() - start
    stages = profile_step(decoder) if profile and max_new_tokens > 1 else None
    yield token, latency, decoder.length, stages
    for _ in range(max_new_tokens - 1):
        start = time.perf_counter()
        next_id = int(decoder.step())
        yield next_id, time.perf_counter() - start, decoder.length, None


def _decode(tokenizer, steps: Iterator[tuple], stop: set[int], recorder, graph: bool):
    """Turn each step's token into a StepRecord, its text found by decoding the answer so far."""
    answer: list[int] = []
    text = ""
    for step, (next_id, latency, context_length, stages) in enumerate(steps):
        answer.append(next_id)
        full = tokenizer.decode(answer, skip_special_tokens=True)
        added = full[len(text) :]
        yield StepRecord(step, next_id, added, latency, context_length, graph and step > 0, recorder, stages)
        text = full
        if next_id in stop:
            return


def stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The end-of-sequence ids of the model's generation config, else the tokenizer's."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else ({eos} if eos is not None else set())
