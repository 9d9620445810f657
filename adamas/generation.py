"""Streaming greedy generation with per-step latency and, on request, traces of what Adamas did."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import Cache, DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

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
    copied: bool = False  # step 0 started from a copy of another run's prefilled cache: latency_s is the copy's


@dataclass
class _SharedPrefill:
    """One prompt's prefill for two runs: the first to start prefills and leaves it here, the second copies it."""

    decoder: GraphDecoder | None = None  # the fixed-capacity path: the prefilled decoder
    cache: Cache | None = None  # the dynamic-cache path: the prefilled cache
    token: int = 0  # the dynamic-cache path: the first new token


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
    The model decodes under the run's attention from its first step to its last (each step then
    costs no switch of the model's attention setting); its own Adamas state is restored when the
    generator finishes or is closed.
    """
    ids = _checked_prompt(model, tokenizer, messages_or_prompt, config, max_new_tokens)
    yield from _run(model, tokenizer, ids, config, max_new_tokens, trace, trace_heads, cuda_graph, profile, fixed_cache)


def _checked_prompt(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages_or_prompt: str | list[dict[str, str]],
    config: AdamasConfig | None,
    max_new_tokens: int,
) -> torch.Tensor:
    """The prompt's ids [1, T] on the device the model takes them on, once generate's arguments are checked."""
    if config is not None and not isinstance(config, AdamasConfig):
        raise TypeError(f"config must be an AdamasConfig or None, got {type(config).__name__}")
    check_int("max_new_tokens", max_new_tokens, 1)
    device = execution_device(model)  # where the model takes its ids: the main device of a dispatched one
    ids = prompt_ids(tokenizer, messages_or_prompt).to(device)
    check_context(model, ids.shape[-1] + max_new_tokens)
    return ids


@torch.no_grad()
def _run(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    ids: torch.Tensor,
    config: AdamasConfig | None,
    max_new_tokens: int,
    trace: bool = False,
    trace_heads: tuple[tuple[int, int], ...] | None = None,
    cuda_graph: bool | None = None,
    profile: bool = False,
    fixed_cache: bool | None = None,
    shared: _SharedPrefill | None = None,
) -> Iterator[StepRecord]:
    """generate's run on the checked prompt ids [1, T]; with `shared`, one prefill serves two runs (_SharedPrefill)."""
    recorder = None
    if trace and config is not None:
        layers = model.config.num_hidden_layers
        pairs = trace_heads if trace_heads is not None else default_pairs(layers, config.dense_layers)
        recorder = TraceRecorder(max_new_tokens, tuple(pairs))
    stop = stop_ids(model, tokenizer)
    fixed, graph = _decode_path(cuda_graph, fixed_cache, model, ids.device)
    if fixed:
        decoder = GraphDecoder(model, config, ids.shape[-1] + max_new_tokens, cuda_graph=graph, recorder=recorder)
        if recorder is not None:
            recorder.bind(decoder.cache, ids.shape[-1])
        with adamas_state(model, decoder.attention):  # held: each eager step finds it set, not switched twice
            steps = _fixed_steps(decoder, ids, max_new_tokens, profile, shared)
            yield from _decode(tokenizer, steps, stop, recorder, graph=decoder.cuda_graph)
        return
    with adamas_state(model, config):
        cache = AdamasCache(config, model.config.num_hidden_layers) if config is not None else DynamicCache()
        if recorder is not None:
            recorder.bind(cache, ids.shape[-1])
        steps = _eager_steps(model, ids, cache, max_new_tokens, recorder, shared)
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
    on the model before each of its steps: a swap of configs, both being enabled) and its own
    context, so its recorder survives the other run's steps and the thread hops of a web server.
    A run that ends drops out; the model's Adamas state is restored when this generator finishes
    or is closed.
    The prompt is prefilled once: the Adamas run prefills it, and the full run starts from a copy
    of its K and V (both prefills would be dense, so neither answer changes); the full run's step 0
    record times that copy and says so (`copied`).
    Both runs decode on the same path (`cuda_graph` and `profile` as in generate); only the
    Adamas run records traces, which cost it two buffer copies per layer and step.
    """
    if not isinstance(config, AdamasConfig):
        raise TypeError(f"config must be an AdamasConfig, got {type(config).__name__}")
    ids = _checked_prompt(model, tokenizer, messages_or_prompt, config, max_new_tokens)
    original = enabled_config(model)
    shared = _SharedPrefill()  # the Adamas run (first to step) prefills, the full run copies
    runs = {
        "adamas": _run(
            model, tokenizer, ids, config, max_new_tokens, trace, trace_heads, cuda_graph, profile, shared=shared
        ),
        "full": _run(
            model, tokenizer, ids, None, max_new_tokens, cuda_graph=cuda_graph, profile=profile, shared=shared
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
    model, ids: torch.Tensor, cache, max_new_tokens: int, recorder: TraceRecorder | None, shared: _SharedPrefill | None
) -> Iterator[tuple]:
    """One forward per token on `cache`, the first over the prompt, unless `shared` holds another run's prefilled
    cache, which step 0 copies: (token id, latency s, tokens attended over, stages None, copied) per step."""
    start = time.perf_counter()
    copied = shared is not None and shared.cache is not None
    if copied:
        for i, layer in enumerate(shared.cache.layers):  # an Adamas layer encodes the keys as it takes them
            cache.update(layer.keys, layer.values, i)
        next_id = shared.token
    else:
        next_id = _eager_forward(model, ids, cache, None)  # the prefill runs dense: nothing to record
        if shared is not None:
            shared.cache, shared.token = cache, next_id
    yield next_id, time.perf_counter() - start, cache.get_seq_length(), None, copied
    for _ in range(max_new_tokens - 1):
        start = time.perf_counter()
        next_id = _eager_forward(model, torch.tensor([[next_id]], device=ids.device), cache, recorder)
        if recorder is not None:
            recorder.advance()
            recorder.recorded += 1
        yield next_id, time.perf_counter() - start, cache.get_seq_length(), None, False


def _eager_forward(model, inputs: torch.Tensor, cache, recorder: TraceRecorder | None) -> int:
    """One forward of inputs [1, T] on `cache`, the sparse layers recording into `recorder`; the next token's id."""
    active = ACTIVE_RECORDER.set(recorder)
    try:
        logits = model(input_ids=inputs, use_cache=True, logits_to_keep=1, **{CACHE_ARGUMENT: cache}).logits
    finally:
        ACTIVE_RECORDER.reset(active)
    return int(logits[0, -1].argmax())  # int() waits for the GPU


def _fixed_steps(
    decoder: GraphDecoder, ids: torch.Tensor, max_new_tokens: int, profile: bool, shared: _SharedPrefill | None
) -> Iterator[tuple]:
    """Prefill (or copy `shared`'s prefilled decoder) and capture on `decoder`, then one step (a graph replay) per
    token; same tuples as _eager_steps."""
    start = time.perf_counter()
    source = None if shared is None else shared.decoder
    if source is None:
        token = int(decoder.prefill(ids))
        if shared is not None:
            shared.decoder = decoder
    else:
        token = int(decoder.prefill_from(source))
    if decoder.cuda_graph and max_new_tokens > 1:
        decoder.capture()
    latency = time.perf_counter() - start
    stages = profile_step(decoder) if profile and max_new_tokens > 1 else None
    yield token, latency, decoder.length, stages, source is not None
    for _ in range(max_new_tokens - 1):
        start = time.perf_counter()
        next_id = int(decoder.step())
        yield next_id, time.perf_counter() - start, decoder.length, None, False


def _decode(tokenizer, steps: Iterator[tuple], stop: set[int], recorder, graph: bool):
    """Turn each step's token into a StepRecord, its text found by decoding the answer so far."""
    answer: list[int] = []
    text = ""
    for step, (next_id, latency, context_length, stages, copied) in enumerate(steps):
        answer.append(next_id)
        full = tokenizer.decode(answer, skip_special_tokens=True)
        added = full[len(text) :]
        yield StepRecord(step, next_id, added, latency, context_length, graph and step > 0, recorder, stages, copied)
        text = full
        if next_id in stop:
            return


def stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The end-of-sequence ids of the model's generation config, else the tokenizer's."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else ({eos} if eos is not None else set())
