"""Streaming greedy generation with per-step latency and, on request, traces of what Adamas did."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from adamas.config import AdamasConfig, check_int
from adamas.integration import CACHE_ARGUMENT, AdamasCache, disable, enable, enabled_config
from adamas.loading import check_context
from adamas.static import GraphDecoder
from adamas.tracing import ACTIVE_TRACER, StepTrace, Tracer, default_pairs


@dataclass
class StepRecord:
    """One generated token: step 0 is the prefill (the whole prompt), then one decode step each."""

    step: int
    token_id: int
    text: str  # what this token adds to the answer's text
    latency_s: float  # wall time of the step, synchronized on CUDA
    context_length: int  # tokens the step attended over
    trace: StepTrace | None = None  # with trace=True, on decode steps of an Adamas run
    tracer: Tracer | None = None  # with trace=True: the run's tracer (density over all steps so far)


def document_messages(document: str, question: str) -> list[dict[str, str]]:
    """A chat asking `question` about `document`."""
    return [{"role": "user", "content": f"{document.strip()}\n\nAnswer using the text above.\nQuestion: {question}"}]


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
) -> Iterator[StepRecord]:
    """Greedy-decode, yielding a StepRecord per token; Adamas under `config`, full attention if None.

    Both modes share the prefill (dense SDPA), so their answers and latencies compare.
    With `trace`, decode steps carry a StepTrace (see adamas.tracing for what and how much);
    `trace_heads` picks the (layer, head) pairs whose scores are kept (default: four).
    `cuda_graph` (default: on CUDA without tracing, for full-attention models) decodes on a
    fixed-capacity cache with each step replayed as one CUDA graph (adamas.static), so the
    step latencies are the GPU's; the graph's capture counts in step 0's latency. Otherwise
    the steps run eagerly on transformers' dynamic cache.
    The model's own Adamas state is restored when the generator finishes or is closed.
    """
    if config is not None and not isinstance(config, AdamasConfig):
        raise TypeError(f"config must be an AdamasConfig or None, got {type(config).__name__}")
    check_int("max_new_tokens", max_new_tokens, 1)
    device = next(model.parameters()).device
    ids = prompt_ids(tokenizer, messages_or_prompt).to(device)
    check_context(model, ids.shape[-1] + max_new_tokens)
    if _use_graph(cuda_graph, model, device, trace):
        decoder = GraphDecoder(model, config, ids.shape[-1] + max_new_tokens, cuda_graph=True)
        yield from _decode(tokenizer, _graph_steps(decoder, ids, max_new_tokens), _stop_ids(model, tokenizer), None)
        return
    layers = model.config.num_hidden_layers
    tracer = None
    if trace and config is not None:
        pairs = trace_heads if trace_heads is not None else default_pairs(layers, config.dense_layers)
        tracer = Tracer(layers, model.config.num_attention_heads, ids.shape[-1] + max_new_tokens, tuple(pairs))
    previous = enabled_config(model)
    _set_adamas(model, config)
    token = ACTIVE_TRACER.set(tracer)
    try:
        cache = AdamasCache(config, layers) if config is not None else DynamicCache()
        steps = _eager_steps(model, ids, cache, max_new_tokens)
        yield from _decode(tokenizer, steps, _stop_ids(model, tokenizer), tracer)
    finally:
        ACTIVE_TRACER.reset(token)
        _set_adamas(model, previous)


def _set_adamas(model: PreTrainedModel, config: AdamasConfig | None) -> None:
    """Enable Adamas under `config`, or disable it for None."""
    if config is None:
        disable(model)
    else:
        enable(model, config)


def _use_graph(cuda_graph: bool | None, model: PreTrainedModel, device: torch.device, trace: bool) -> bool:
    """Whether to decode with a captured CUDA graph; ValueError when asked for one that cannot be had."""
    if cuda_graph is not None and not isinstance(cuda_graph, bool):
        raise TypeError(f"cuda_graph must be True, False or None, got {cuda_graph!r}")
    sliding = getattr(model.config, "sliding_window", None) is not None and getattr(
        model.config, "use_sliding_window", True
    )
    if cuda_graph is None:
        return device.type == "cuda" and not trace and not sliding
    if cuda_graph and trace:
        raise ValueError("trace=True records from Python at every layer, so it cannot run in a CUDA graph")
    return cuda_graph


def _eager_steps(model, ids: torch.Tensor, cache, max_new_tokens: int) -> Iterator[tuple[int, float, int]]:
    """One forward per token on `cache`: (token id, latency s, tokens attended over) per step."""
    inputs = ids
    for _ in range(max_new_tokens):
        start = time.perf_counter()
        logits = model(input_ids=inputs, use_cache=True, logits_to_keep=1, **{CACHE_ARGUMENT: cache}).logits
        next_id = int(logits[0, -1].argmax())  # int() waits for the GPU
        yield next_id, time.perf_counter() - start, cache.get_seq_length()
        inputs = torch.tensor([[next_id]], device=ids.device)


def _graph_steps(decoder: GraphDecoder, ids: torch.Tensor, max_new_tokens: int) -> Iterator[tuple[int, float, int]]:
    """Prefill (and capture) on `decoder`, then one graph replay per token; same tuples as _eager_steps."""
    start = time.perf_counter()
    token = decoder.prefill(ids)
    if max_new_tokens > 1:
        decoder.capture()
    yield int(token), time.perf_counter() - start, decoder.length
    for _ in range(max_new_tokens - 1):
        start = time.perf_counter()
        next_id = int(decoder.step())
        yield next_id, time.perf_counter() - start, decoder.length


def _decode(tokenizer, steps: Iterator[tuple[int, float, int]], stop: set[int], tracer: Tracer | None):
    """Turn each step's token into a StepRecord, its text found by decoding the answer so far."""
    answer: list[int] = []
    text = ""
    for step, (next_id, latency, context_length) in enumerate(steps):
        answer.append(next_id)
        full = tokenizer.decode(answer, skip_special_tokens=True)
        record = StepRecord(step, next_id, full[len(text) :], latency, context_length)
        if tracer is not None and step > 0:
            record.trace, record.tracer = tracer.finish_step(), tracer
        text = full
        yield record
        if next_id in stop:
            return


def _stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The end-of-sequence ids of the model's generation config, else the tokenizer's."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else ({eos} if eos is not None else set())
