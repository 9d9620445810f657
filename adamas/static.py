"""Greedy decoding with a fixed-capacity cache, its decode step captured in one CUDA graph.

The dynamic cache grows as tokens arrive and each step is driven from Python, so on a GPU a
step of a small model costs what ~hundreds of kernel launches cost, not what attention costs.
Here every layer keeps K, V (and, on Adamas layers, the 2-bit key codes) in buffers of a
fixed capacity C, written at positions held in a device tensor, and the model sees a 4-D
boolean mask [B, 1, 1, C] of the written slots. Every tensor a decode step touches then has
a fixed address and shape: on CUDA the whole step (position update, embedding, every
layer's attention, the LM head and the greedy argmax) is captured once and replayed per
token, with no host synchronization inside it. On a CPU the same step runs eagerly.

Layout per layer: keys, values [B, Hkv, C, d]; codes [B, Hkv, C, d // 4] uint8. The B
prompts have equal lengths, so row b of every buffer holds sequence b at the same slots and
one position tensor serves them all. Slots not yet written are zeros and masked out;
`adamas.decode_attention` gives them the distance EXCLUDED, and its sink/recent tokens
count written slots only.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from transformers import Cache, PreTrainedModel
from transformers.cache_utils import CacheLayerMixin

from adamas import cpu_decode, kernels
from adamas.checks import resolve_backend
from adamas.config import AdamasConfig, check_int
from adamas.integration import (
    CACHE_ARGUMENT,
    CompiledStep,
    adamas_state,
    compiles_step,
    layer_thresholds,
    offer_codes,
    uses_sliding_window,
)
from adamas.loading import check_context
from adamas.ops import encode
from adamas.tracing import ACTIVE_RECORDER, TraceRecorder

PREFILL_CHUNK = 4096
"""Prompt tokens per prefill forward: bounds the explicit causal mask at PREFILL_CHUNK x T booleans."""
FULL = AdamasConfig(selector="full")
"""What full-attention steps run under: the "adamas" attention function, every layer dense (an Adamas
decoder's on its config's dense_backend)."""
WARMUP_STEPS = 2
"""Eager decode steps run (and undone) before capture: they compile the kernels and settle the allocator."""


class FixedLayer(CacheLayerMixin):
    """One layer's K, V and, with an Adamas config, key codes in buffers of `capacity` tokens.

    `update` writes the new rows at `positions` (a device tensor set through FixedCache.seek)
    and returns the first `visible` slots: the prompt so far at prefill, the whole buffer when
    decoding. The prompt's keys are encoded once, after prefill (`encode_prompt`), with
    thresholds fitted to all of them, as the dynamic cache does; each decode step encodes its key
    while the layer is `sparse` (the decoder can switch an Adamas layer to full attention). Where the
    CPU's compiled step runs, that key's code is written by the step itself (`compiled_step`).
    """

    is_sliding = False

    def __init__(self, capacity: int, config: AdamasConfig | None) -> None:
        super().__init__()
        self.capacity, self.config = capacity, config
        self.sparse = config is not None  # decode steps encode their keys and offer the codes to attention
        self.thresholds: tuple[float, float, float] | torch.Tensor | None = None
        self.fitted = False  # thresholds are fitted to each prompt's keys, at its prefill
        self._codes: torch.Tensor | None = None
        self._compiled: cpu_decode.LayerBuffers | None = None  # the buffers as the CPU's compiled step reads them
        self.pending: torch.Tensor | None = None  # slots whose keys the compiled step encodes (their codes are due)
        self.positions: torch.Tensor | None = None  # int64 [T]: the slots the next update writes
        # int64 [1] while decoding: the written slots, a prefix (the step's own included), for the attention function
        self.lengths: torch.Tensor | None = None
        self.visible = capacity
        self.length = 0  # slots written so far (host-side count, kept by FixedCache.seek)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate zeroed buffers shaped like the first keys and values (zeros: masked slots must hold no NaN)."""
        b, h, _, d = key_states.shape
        self.dtype, self.device = key_states.dtype, key_states.device
        # on a GPU one kernel writes K, V and the new keys' codes (four launches with PyTorch)
        backend = "auto" if self.config is None else self.config.backend
        self.appends = resolve_backend(backend, self.device) == "triton"
        self.keys = key_states.new_zeros(b, h, self.capacity, d)  # [B, Hkv, C, d]
        self.values = value_states.new_zeros(b, h, self.capacity, value_states.shape[-1])
        if self.config is not None:
            self._codes = torch.zeros(b, h, self.capacity, d // 4, dtype=torch.uint8, device=self.device)
        self.is_initialized = True

    def _visible(self, buffer: torch.Tensor, dim: int) -> torch.Tensor:
        """The first `visible` slots of a buffer along `dim`: the buffer itself while decoding (one view op less)."""
        return buffer if self.visible == self.capacity else buffer.narrow(dim, 0, self.visible)

    @property
    def codes(self) -> torch.Tensor | None:
        """The codes of the visible keys: [B, Hkv, visible, d // 4] uint8 (None on a dense layer)."""
        if self.pending is not None:  # read before the compiled step wrote them
            self._compiled.encode(self.pending)
            self.pending = None
        return None if self._codes is None else self._visible(self._codes, 2)

    def compiled_step(self, valid: torch.Tensor | None) -> CompiledStep | None:
        """What the compiled step of a decode query runs on (see integration.CompiledStep); None where it does not run.

        The written slots are those up to the step's own (the decoder writes them in order, the same in
        every row), so the step runs over them with no mask; it writes the new key's code first.
        """
        if self._compiled is None or self.pending is None:
            return None
        pending, self.pending = self.pending, None
        return self._compiled, int(pending[-1]) + 1, None, pending

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write K/V (and codes) of the new tokens at `positions`; return the visible K and V."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.appends:
            return self._append(key_states, value_states)
        self.keys.index_copy_(2, self.positions, key_states)
        self.values.index_copy_(2, self.positions, value_states)
        keys, values = self._visible(self.keys, 2), self._visible(self.values, 2)
        if self.sparse and self.fitted:  # decoding; a prompt's codes come from encode_prompt
            if self._compiled is not None:
                self.pending = self.positions
            else:
                new_codes = encode(key_states, self.thresholds, backend=self.config.backend)
                self._codes.index_copy_(2, self.positions, new_codes)
            offer_codes(self, keys)
        return keys, values

    def _append(self, key_states: torch.Tensor, value_states: torch.Tensor):
        """update() on a GPU: one kernel writes the rows and, while decoding sparse, the new keys' codes."""
        encodes = self.sparse and self.fitted
        rows = [x if x.stride(-1) == 1 else x.contiguous() for x in (key_states, value_states)]
        # Triton launches on the current device (a model spread over GPUs); the interpreter runs on the CPU
        with torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext():
            codes = self._codes if encodes else None
            kernels.append(self.keys, self.values, *rows, self.positions, codes, self.thresholds)
        keys, values = self._visible(self.keys, 2), self._visible(self.values, 2)
        if encodes:
            offer_codes(self, keys)
        return keys, values

    def encode_prompt(self, length: int) -> None:
        """After prefill: fit the thresholds to the prompt's keys and encode them, in one kernel call."""
        if self.config is None:
            return
        fitted = layer_thresholds(self.config, self.keys[:, :, :length])  # from the prompt's keys [B, Hkv, T, d]
        # into the existing tensor, so that a graph captured for an earlier prompt (and the compiled step's
        # buffers) read the new edges
        if isinstance(self.thresholds, torch.Tensor) and isinstance(fitted, torch.Tensor):
            self.thresholds.copy_(fitted)
        else:
            self.thresholds = fitted
            self._compiled = None
        if self._compiled is None and compiles_step(self.config, self.keys, self.values):
            self._compiled = cpu_decode.LayerBuffers(self.keys, self.values, self._codes, self.thresholds)
        self.fitted = True
        self.encode_slots(0, length)

    def encode_slots(self, start: int, end: int) -> None:
        """Encode the keys in slots start..end-1 under the fitted thresholds (a no-op on a dense layer)."""
        if self.config is None or end <= start:
            return
        keys = self.keys[:, :, start:end]  # [B, Hkv, end - start, d]
        self._codes[:, :, start:end] = encode(keys, self.thresholds, backend=self.config.backend)

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """Keys a mask built by transformers must cover: the visible slots (a prefill chunk's, or all)."""
        return self.visible, 0

    def reset(self) -> None:
        """Empty the layer: buffers zeroed; the thresholds are fitted again to the next prompt."""
        super().reset()
        if self._codes is not None:
            self._codes.zero_()
        self.fitted, self.length, self.pending = False, 0, None


class FixedCache(Cache):
    """A cache of FixedLayers; Adamas layers keep codes unless `config` is None or lists them as dense."""

    def __init__(self, num_layers: int, capacity: int, config: AdamasConfig | None) -> None:
        layers = [
            FixedLayer(capacity, None if config is None or i in config.dense_layers else config)
            for i in range(num_layers)
        ]
        Cache.__init__(self, layers=layers)
        self.capacity = capacity

    def seek(self, positions: torch.Tensor, visible: int, length: int, lengths: torch.Tensor | None = None) -> None:
        """Make every layer write the next update at `positions` and return `visible` slots; `lengths` (int64 [1],
        decoding) counts the slots written once the update is in, a prefix the attention needs no mask for."""
        for layer in self.layers:
            layer.positions, layer.visible, layer.length, layer.lengths = positions, visible, length, lengths

    def encode_prompt(self, length: int) -> None:
        """Fit thresholds to and encode the first `length` keys of every Adamas layer."""
        for layer in self.layers:
            layer.encode_prompt(length)

    def encode_slots(self, start: int, end: int) -> None:
        """Encode the keys in slots start..end-1 of every Adamas layer under its fitted thresholds."""
        for layer in self.layers:
            layer.encode_slots(start, end)

    def set_sparse(self, sparse: bool) -> None:
        """Make the Adamas layers' decode steps encode and offer their codes (True) or run as dense layers."""
        for layer in self.layers:
            layer.sparse = sparse and layer.config is not None


class GraphDecoder:
    """Greedy decoding of `batch` equal-length sequences on a FixedCache; on CUDA, each step is one graph replay.

    decoder = GraphDecoder(model, config, capacity)   # config None: full attention (SDPA)
    token = decoder.prefill(ids)                      # ids [B, T] -> first new tokens [B, 1]
    token = decoder.step()                            # then one token per sequence per call
    decoder.switch(None)                              # full attention from here on, same cache
    other.prefill_from(decoder)                       # or a second decoder starts from a copy of its prompt
    An Adamas decoder can switch to full attention and back, so one prefill serves both; or a
    full-attention decoder copies an Adamas decoder's prefilled K and V, so that both run on.
    With a `recorder` (adamas.tracing.TraceRecorder), each Adamas step also copies every
    sparse layer's query and selection into its buffers, inside the graph.
    The model's own attention setting is left as it was. Each eager step sets the model's attention
    to `attention` and back: a swap of configs where Adamas is enabled on the model, else two walks
    over its modules; a loop of steps (adamas.generate's) holds `adamas_state(model, decoder.attention)`.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        config: AdamasConfig | None,
        capacity: int,
        cuda_graph: bool | None = None,
        batch: int = 1,
        recorder: TraceRecorder | None = None,
    ) -> None:
        if config is not None and not isinstance(config, AdamasConfig):
            raise TypeError(f"config must be an AdamasConfig or None, got {type(config).__name__}")
        check_int("capacity", capacity, 2)
        check_int("batch", batch, 1)
        check_context(model, capacity)
        if uses_sliding_window(model.config):
            raise ValueError(
                f"GraphDecoder needs full-attention layers; {model.config.model_type} uses a sliding window "
                f"({model.config.sliding_window}): use adamas.generate(..., cuda_graph=False)"
            )
        self.device = next(model.parameters()).device
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the model on a CUDA device, it is on {self.device}")
        self.model, self.capacity, self.batch = model, capacity, batch
        self.recorder = recorder
        self.adamas_config = config  # what the cache keeps codes for
        self.config = config  # what decode steps run now: adamas_config, or None after switch(None)
        # what full-attention steps run under: every layer dense, on the Adamas config's dense_backend
        self.full = FULL if config is None else dataclasses.replace(FULL, dense_backend=config.dense_backend)
        self.cuda_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        self.cache = FixedCache(model.config.num_hidden_layers, capacity, config)
        self.mask = torch.zeros(batch, 1, 1, capacity, dtype=torch.bool, device=self.device)  # written slots
        self.position = torch.zeros(1, dtype=torch.long, device=self.device)  # slot of the newest tokens
        self.written = torch.zeros(1, dtype=torch.long, device=self.device)  # slots written, the step's own included
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=self.device)  # the newest tokens
        self.length = 0
        self.coded = 0  # slots whose key codes are written: full-attention steps write none
        self._graphs: dict[bool, torch.cuda.CUDAGraph] = {}  # one per setting: sparse (True) or full

    @property
    def graph(self) -> torch.cuda.CUDAGraph | None:
        """The captured decode step of the current setting (None until the first step or capture())."""
        return self._graphs.get(self.config is not None)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Run the prompts ids [B, T] with dense attention, filling slots 0..T-1; return the next tokens [B, 1]."""
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.shape[0] != self.batch or ids.shape[1] < 1:
            raise ValueError(
                f"ids must be a [{self.batch}, T] tensor of token ids, got {getattr(ids, 'shape', type(ids))}"
            )
        length = ids.shape[1]
        if length >= self.capacity:
            raise ValueError(f"the prompt ({length} tokens) must be shorter than the capacity ({self.capacity})")
        if self.length:
            self.reset()
        ids = ids.to(self.device)
        with adamas_state(self.model, self.attention):
            for start in range(0, length, PREFILL_CHUNK):
                end = min(start + PREFILL_CHUNK, length)
                positions = torch.arange(start, end, device=self.device)
                self.cache.seek(positions, visible=end, length=start)
                # the first chunk sees only itself: no mask, so that SDPA takes its causal kernel rather than
                # a masked one; a later chunk's rows also see the slots before it
                causal = None if start == 0 else torch.arange(end, device=self.device)[None, :] <= positions[:, None]
                mask = None if causal is None else causal[None, None]  # [1, 1, T', end]
                position_ids = positions[None].expand(self.batch, -1)
                logits = self._forward(ids[:, start:end], position_ids, mask, logits_to_keep=1)
        self.token.copy_(logits[:, -1:].argmax(-1))
        return self._prefilled(length)

    @torch.no_grad()
    def prefill_from(self, source: GraphDecoder) -> torch.Tensor:
        """Start where `source` (a prefilled decoder of the same model and batch) stands, without running the model.

        Its K and V of the written slots, its newest tokens [B, 1] (returned) and its position are
        copied; `source` keeps its own (and its codes). An Adamas decoder fits its thresholds to the
        copied keys and encodes them, as after a prefill. The prompt is then prefilled once for both.
        """
        if not isinstance(source, GraphDecoder):
            raise TypeError(f"source must be a GraphDecoder, got {type(source).__name__}")
        if source is self or source.length == 0:
            raise ValueError("source must be another decoder, prefilled: call source.prefill(ids) first")
        if (source.batch, len(source.cache.layers)) != (self.batch, len(self.cache.layers)):
            raise ValueError(
                f"source decodes {source.batch} sequences on {len(source.cache.layers)} layers, "
                f"this decoder {self.batch} on {len(self.cache.layers)}"
            )
        length = source.length
        if length >= self.capacity:
            raise ValueError(f"the source's {length} tokens must be fewer than the capacity ({self.capacity})")
        if self.length:
            self.reset()
        for mine, theirs in zip(self.cache.layers, source.cache.layers, strict=True):
            if not mine.is_initialized:
                mine.lazy_initialization(theirs.keys, theirs.values)
            mine.keys[:, :, :length] = theirs.keys[:, :, :length]  # [B, Hkv, T, d]
            mine.values[:, :, :length] = theirs.values[:, :, :length]
        self.token.copy_(source.token)
        return self._prefilled(length)

    def _prefilled(self, length: int) -> torch.Tensor:
        """Slots 0..length-1 hold the prompt's K and V: encode them, ready the first step; the next tokens [B, 1]."""
        self.cache.encode_prompt(length)
        self.mask[..., :length] = True
        self.position.fill_(length - 1)
        self.length = self.coded = length
        self.cache.seek(self.position, visible=self.capacity, length=length, lengths=self.written)
        return self.token

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Decode one token per sequence: the newest go in, the next come out in `self.token` [B, 1] (in place)."""
        if self.length == 0:
            raise RuntimeError("call prefill(ids) before step()")
        if self.length >= self.capacity:
            raise ValueError(f"the cache is full: {self.capacity} tokens (make a decoder with a larger capacity)")
        self.run_step()
        self.length += 1
        if self.config is not None:
            self.coded = self.length
            if self.recorder is not None:
                self.recorder.recorded += 1
        for layer in self.cache.layers:
            layer.length = self.length
        return self.token

    @torch.no_grad()
    def switch(self, config: AdamasConfig | None) -> None:
        """Decode the next steps with full attention (None) or again under the decoder's own Adamas config.

        The cache, and so the prompt's prefill, is shared. Full-attention steps write K and V only;
        switching back encodes the keys they wrote. Each setting keeps its own captured graph.
        """
        if config is not None and config != self.adamas_config:
            raise ValueError(
                f"switch() takes None (full attention) or the decoder's own config {self.adamas_config}, got {config}"
            )
        if config is not None and self.config is None:
            self.cache.encode_slots(self.coded, self.length)
            self.coded = self.length
        self.config = config
        self.cache.set_sparse(config is not None)

    def reset(self) -> None:
        """Forget the sequences (buffers zeroed); captured graphs stay valid for the next prompts."""
        self.cache.reset()
        self.mask.zero_()
        self.length = self.coded = 0

    @property
    def attention(self) -> AdamasConfig:
        """What the model runs for this decoder's steps now, under the "adamas" attention function: the Adamas config,
        or (full attention) every layer dense on its dense_backend."""
        return self.config if self.config is not None else self.full

    def _forward(self, ids, position_ids, mask, **kwargs) -> torch.Tensor:
        inputs = {"input_ids": ids, "position_ids": position_ids, "attention_mask": mask, CACHE_ARGUMENT: self.cache}
        return self.model(**inputs, use_cache=True, **kwargs).logits

    def run_step(self) -> None:
        """One decode step of the current setting on the device (a graph replay, captured on first use)."""
        if not self.cuda_graph:
            with adamas_state(self.model, self.attention):
                self._decode_step()
            return
        if self.graph is None:
            self.capture()
        self.graph.replay()

    def snapshot(self) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Copies of the device state a step moves on (position, token, mask, trace slots), for restore()."""
        slots = self.recorder.slot_values() if self.recorder is not None else None
        return [self.position.clone(), self.token.clone(), self.mask.clone()], slots

    def restore(self, saved: tuple[list[torch.Tensor], list[torch.Tensor] | None]) -> None:
        """Undo the steps run since snapshot(): the slots they wrote stay masked until written again."""
        tensors, slots = saved
        for tensor, value in zip((self.position, self.token, self.mask), tensors, strict=True):
            tensor.copy_(value)
        if self.recorder is not None:
            if len(slots) < len(self.recorder.slots):  # the steps made the slots: they start at step 0
                slots = [torch.zeros_like(slot) for slot in self.recorder.slots.values()]
            self.recorder.restore(slots)

    def _decode_step(self) -> None:
        """What a step does, all on the device: the graph captures exactly this."""
        self.position += 1
        torch.add(self.position, 1, out=self.written)
        self.mask.index_fill_(-1, self.position, True)
        recorder = self.recorder if self.config is not None else None
        active = ACTIVE_RECORDER.set(recorder)
        try:
            logits = self._forward(self.token, self.position.view(1, 1).expand(self.batch, 1), self.mask)
        finally:
            ACTIVE_RECORDER.reset(active)
        if recorder is not None:
            recorder.advance()
        self.token.copy_(logits[:, -1:].argmax(-1))

    def capture(self) -> None:
        """Capture the decode step of the current setting (after prefill; step() does it): warm up, undo, capture."""
        if not self.cuda_graph:
            raise RuntimeError("capture() needs a decoder made with cuda_graph on a CUDA device")
        if self.length == 0 or self.length >= self.capacity:
            raise RuntimeError("capture() needs a prefilled decoder with room for a token")
        saved = self.snapshot()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with adamas_state(self.model, self.attention), torch.cuda.stream(stream):
            for _ in range(min(WARMUP_STEPS, self.capacity - self.length)):
                self._decode_step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.restore(saved)
        graph = torch.cuda.CUDAGraph()
        with adamas_state(self.model, self.attention), torch.cuda.graph(graph):
            self._decode_step()
        self._graphs[self.config is not None] = graph
