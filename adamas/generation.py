"""Streaming greedy generation with per-step latency and, on request, traces of what Adamas did."""

from __future__ import annotations

import bisect
import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
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


def document_messages(document: str, question: str) -> list[dict[str, str]]:
    """A chat asking `question` about `document`."""
    return [{"role": "user", "content": f"{document.strip()}\n\nAnswer using the text above.\nQuestion: {question}"}]


@dataclass
class DocumentPrompt:
    """A chat asking a question about a document, and where the document's tokens sit in its prompt."""

    messages: list[dict[str, str]]
    document: str  # the document as the prompt holds it: stripped, and cut short if it did not fit
    length: int  # tokens in the whole prompt
    start: int  # prompt position of the document's first token
    tokens: list[str]  # the text of each document token, in order
    offsets: list[tuple[int, int]]  # each document token's character span [start, end) in `document`
    dropped: int = 0  # document tokens cut off so that the prompt fits

    @property
    def end(self) -> int:
        """Prompt position one past the document's last token."""
        return self.start + len(self.tokens)

    def token_span(self, char_start: int, char_end: int) -> tuple[int, int]:
        """Document tokens [i, j) that cover the characters [char_start, char_end) of `document`."""
        if not 0 <= char_start < char_end:
            raise ValueError(f"need 0 <= char_start < char_end, got {char_start}, {char_end}")
        i = bisect.bisect_right([end for _, end in self.offsets], char_start)
        j = bisect.bisect_left([start for start, _ in self.offsets], char_end)
        return i, max(i, j)


def document_prompt(
    tokenizer: PreTrainedTokenizerBase, document: str, question: str, max_tokens: int | None = None
) -> DocumentPrompt:
    """The chat of document_messages(), tokenized as prompt_ids() does, with the document's token span.

    With `max_tokens`, the document's end is cut (at a token boundary) until the whole prompt
    fits; `dropped` counts the document tokens lost. Needs a tokenizer with offset mapping (a
    fast tokenizer). ValueError for an empty document or question, or one that cannot fit.
    """
    for name, text in (("document", document), ("question", question)):
        if not isinstance(text, str):
            raise TypeError(f"the {name} must be text, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"the {name} is empty")
    if max_tokens is not None:
        check_int("max_tokens", max_tokens, 1)
    prompt = _locate_document(tokenizer, document.strip(), question)
    total = len(prompt.tokens)
    while max_tokens is not None and prompt.length > max_tokens:
        keep = len(prompt.tokens) - (prompt.length - max_tokens)
        if keep < 1:
            overhead = prompt.length - len(prompt.tokens)
            raise ValueError(
                f"the question and the chat template alone take {overhead} tokens; "
                f"only {max_tokens} fit, so no room is left for the document"
            )
        prompt = _locate_document(tokenizer, prompt.document[: prompt.offsets[keep - 1][1]].rstrip(), question)
    prompt.dropped = total - len(prompt.tokens)
    return prompt


def _locate_document(tokenizer: PreTrainedTokenizerBase, document: str, question: str) -> DocumentPrompt:
    """Render the chat, tokenize it with offsets and find the tokens that hold `document`."""
    messages = document_messages(document, question)
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    at = rendered.find(messages[0]["content"])  # the message opens with the document
    if at < 0:
        raise ValueError("the chat template altered the document's text, so its tokens cannot be placed")
    encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    spans = [(s, e) for s, e in encoded["offset_mapping"]]
    inside = [i for i, (s, e) in enumerate(spans) if s < at + len(document) and e > at]
    start, end = inside[0], inside[-1] + 1
    return DocumentPrompt(
        messages=messages,
        document=document,
        length=len(encoded["input_ids"]),
        start=start,
        tokens=[rendered[s:e] for s, e in spans[start:end]],
        offsets=[(max(s - at, 0), min(e - at, len(document))) for s, e in spans[start:end]],
    )


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
    (adamas.static.GraphDecoder), the fastest path on a GPU and on a CPU alike; on CUDA each
    step is one CUDA-graph replay (`cuda_graph`, default on CUDA; False runs the same steps
    eagerly), so the step latencies are the GPU's, and the capture counts in step 0's latency.
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


@dataclass
class Comparison:
    """What generate_side_by_side produced, kept as text and numpy arrays: answers, latencies, Adamas's traces."""

    answers: dict[str, str] = field(default_factory=lambda: {"adamas": "", "full": ""})
    prefill_ms: dict[str, float] = field(default_factory=dict)
    step_ms: dict[str, list[float]] = field(default_factory=lambda: {"adamas": [], "full": []})
    graph: dict[str, bool] = field(default_factory=dict)  # per mode: whether its decode steps were graph replays
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # per mode: device µs per stage of one step
    recall: list[np.ndarray] = field(default_factory=list)  # per decode step: [layers, Hq] fp32, NaN on dense layers
    heads: list[dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=list)
    """Per decode step, per traced (layer, head): selected [K] int64 (-1: empty), estimated [L] int16, true [L] fp16."""
    density: np.ndarray | None = None  # [layers, Hq, L] int32 selections summed over steps, set by finish()
    _recorder: TraceRecorder | None = field(default=None, repr=False)

    def add(self, mode: str, record: StepRecord) -> None:
        """Append one step of the "adamas" or the "full" run."""
        self.answers[mode] += record.text
        if record.step == 0:
            self.prefill_ms[mode] = record.latency_s * 1e3
            if record.stages is not None:
                self.stages[mode] = record.stages
        else:
            self.step_ms[mode].append(record.latency_s * 1e3)
            self.graph[mode] = record.graph
        if record.recorder is not None:
            self._recorder = record.recorder

    def finish(self) -> Comparison:
        """After the last step: compute the Adamas run's traces from its recorder, then let the recorder go."""
        if self._recorder is not None:
            run = self._recorder.finish()
            self.recall = [step.recall.numpy() for step in run.steps]
            self.heads = [
                {key: (h.selected.numpy(), h.estimated.numpy(), h.true.numpy()) for key, h in step.heads.items()}
                for step in run.steps
            ]
            self.density = run.density.numpy()
            self._recorder = None
        return self

    def to_dict(self, density_bins: int = 256) -> dict[str, object]:
        """The run as plain JSON values: per-step latencies, recall, every traced head's selections, the scores
        of the last step, and the density summed into at most `density_bins` near-equal position bins.

        NaN (recall on dense layers) becomes None. Scores are kept for the last step only: all of them
        would take pairs x steps x context numbers.
        """
        check_int("density_bins", density_bins, 1)
        run: dict[str, object] = {
            "answers": dict(self.answers),
            "prefill_ms": dict(self.prefill_ms),
            "step_ms": {mode: list(ms) for mode, ms in self.step_ms.items()},
            "decode": {mode: "cuda graph" if graph else "eager" for mode, graph in self.graph.items()},
            "stages_us": dict(self.stages),
            "recall": [np.where(np.isnan(r), None, r).tolist() for r in self.recall],  # [steps][layers][Hq]
        }
        pairs = sorted(self.heads[0]) if self.heads else []
        run["heads"] = [
            {
                "layer": layer,
                "head": head,
                "selected": [step[(layer, head)][0].tolist() for step in self.heads],  # per step, -1: empty
                "last_step_estimated": self.heads[-1][(layer, head)][1].tolist(),
                "last_step_true": self.heads[-1][(layer, head)][2].astype(float).tolist(),
            }
            for layer, head in pairs
        ]
        if self.density is not None:
            length = self.density.shape[-1]
            starts = (np.arange(min(density_bins, length)) * length) // min(density_bins, length)
            binned = np.add.reduceat(self.density, starts, axis=-1)  # [layers, Hq, bins]
            run["density"] = {"length": length, "bin_starts": starts.tolist(), "counts": binned.tolist()}
        return run

    def summary(self) -> dict[str, object]:
        """The answers and the headline numbers: mean decode ms per token, speedup (full / Adamas), mean recall."""
        ms = {mode: float(np.mean(steps)) if steps else None for mode, steps in self.step_ms.items()}
        recall = np.stack(self.recall) if self.recall else np.full(1, np.nan)
        return {
            "adamas_answer": self.answers["adamas"].strip(),
            "full_answer": self.answers["full"].strip(),
            "same_answer": self.answers["adamas"] == self.answers["full"],
            "new_tokens": {mode: len(steps) + 1 for mode, steps in self.step_ms.items() if mode in self.prefill_ms},
            "prefill_ms": dict(self.prefill_ms),
            "adamas_ms_per_token": ms["adamas"],
            "full_ms_per_token": ms["full"],
            "speedup": ms["full"] / ms["adamas"] if ms["adamas"] and ms["full"] else None,
            "decode": "cuda graph" if self.graph and all(self.graph.values()) else "eager",
            "stages_us": dict(self.stages),
            "mean_recall": None if np.isnan(recall).all() else float(np.nanmean(recall)),
        }


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
