"""Greedy decoding with a fixed-capacity cache, its decode step captured in one CUDA graph.

The dynamic cache grows as tokens arrive and each step is driven from Python, so on a GPU a
step of a small model costs what ~hundreds of kernel launches cost, not what attention costs.
Here every layer keeps K, V (and, on Adamas layers, the 2-bit key codes) in buffers of a
fixed capacity C, written at positions held in a device tensor, and the model sees a 4-D
boolean mask [1, 1, 1, C] of the written slots. Every tensor a decode step touches then has
a fixed address and shape: on CUDA the whole step (position update, embedding, every
layer's attention, the LM head and the greedy argmax) is captured once and replayed per
token, with no host synchronization inside it. On a CPU the same step runs eagerly.

Layout per layer (batch 1): keys, values [1, Hkv, C, d]; codes [1, Hkv, C, d // 4] uint8.
Slots not yet written are zeros and masked out; `adamas.decode_attention` gives them the
distance EXCLUDED, and its sink/recent tokens count written slots only.
"""

from __future__ import annotations

import torch
from transformers import Cache, PreTrainedModel
from transformers.cache_utils import CacheLayerMixin

from adamas.config import AdamasConfig, check_int
from adamas.integration import CACHE_ARGUMENT, adamas_state, layer_thresholds, offer_codes, uses_sliding_window
from adamas.loading import check_context
from adamas.ops import encode

PREFILL_CHUNK = 4096
"""Prompt tokens per prefill forward: bounds the explicit causal mask at PREFILL_CHUNK x T booleans."""
WARMUP_STEPS = 2
"""Eager decode steps run (and undone) before capture: they compile the kernels and settle the allocator."""


class FixedLayer(CacheLayerMixin):
    """One layer's K, V and, with an Adamas config, key codes in buffers of `capacity` tokens.

    `update` writes the new rows at `positions` (a device tensor set through FixedCache.seek)
    and returns the first `visible` slots: the prompt so far at prefill, the whole buffer when
    decoding. The prompt's keys are encoded once, after prefill (`encode_prompt`), with
    thresholds fitted to all of them, as the dynamic cache does; each decode step encodes its key.
    """

    is_sliding = False

    def __init__(self, capacity: int, config: AdamasConfig | None) -> None:
        super().__init__()
        self.capacity, self.config = capacity, config
        self.thresholds: tuple[float, float, float] | torch.Tensor | None = None
        self.fitted = False  # thresholds are fitted to each prompt's keys, at its prefill
        self._codes: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None  # int64 [T]: the slots the next update writes
        self.visible = capacity
        self.length = 0  # slots written so far (host-side count, kept by FixedCache.seek)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate zeroed buffers shaped like the first keys and values (zeros: masked slots must hold no NaN)."""
        b, h, _, d = key_states.shape
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = key_states.new_zeros(b, h, self.capacity, d)  # [1, Hkv, C, d]
        self.values = value_states.new_zeros(b, h, self.capacity, value_states.shape[-1])
        if self.config is not None:
            self._codes = torch.zeros(b, h, self.capacity, d // 4, dtype=torch.uint8, device=self.device)
        self.is_initialized = True

    @property
    def codes(self) -> torch.Tensor | None:
        """The codes of the visible keys: [1, Hkv, visible, d // 4] uint8 (None on a dense layer)."""
        return None if self._codes is None else self._codes[:, :, : self.visible]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write K/V (and codes) of the new tokens at `positions`; return the visible K and V."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys.index_copy_(2, self.positions, key_states)
        self.values.index_copy_(2, self.positions, value_states)
        keys, values = self.keys[:, :, : self.visible], self.values[:, :, : self.visible]
        if self.config is not None and self.fitted:  # decoding; a prompt's codes come from encode_prompt
            new_codes = encode(key_states, self.thresholds, backend=self.config.backend)
            self._codes.index_copy_(2, self.positions, new_codes)
            offer_codes(self, keys)
        return keys, values

    def encode_prompt(self, length: int) -> None:
        """After prefill: fit the thresholds to the prompt's keys and encode them, in one kernel call."""
        if self.config is None:
            return
        prompt = self.keys[:, :, :length]  # [1, Hkv, T, d]
        fitted = layer_thresholds(self.config, prompt)
        # into the existing tensor, so that a graph captured for an earlier prompt reads the new edges
        if isinstance(self.thresholds, torch.Tensor) and isinstance(fitted, torch.Tensor):
            self.thresholds.copy_(fitted)
        else:
            self.thresholds = fitted
        self._codes[:, :, :length] = encode(prompt, self.thresholds, backend=self.config.backend)
        self.fitted = True

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.capacity, 0

    def reset(self) -> None:
        """Empty the layer: buffers zeroed; the thresholds are fitted again to the next prompt."""
        super().reset()
        if self._codes is not None:
            self._codes.zero_()
        self.fitted, self.length = False, 0


class FixedCache(Cache):
    """A cache of FixedLayers; Adamas layers keep codes unless `config` is None or lists them as dense."""

    def __init__(self, num_layers: int, capacity: int, config: AdamasConfig | None) -> None:
        layers = [
            FixedLayer(capacity, None if config is None or i in config.dense_layers else config)
            for i in range(num_layers)
        ]
        Cache.__init__(self, layers=layers)
        self.capacity = capacity

    def seek(self, positions: torch.Tensor, visible: int, length: int) -> None:
        """Make every layer write the next update at `positions` and return `visible` slots."""
        for layer in self.layers:
            layer.positions, layer.visible, layer.length = positions, visible, length

    def encode_prompt(self, length: int) -> None:
        """Fit thresholds to and encode the first `length` keys of every Adamas layer."""
        for layer in self.layers:
            layer.encode_prompt(length)


class GraphDecoder:
    """Greedy decoding of one sequence on a FixedCache; on CUDA, each decode step is one CUDA-graph replay.

    decoder = GraphDecoder(model, config, capacity)   # config None: full attention (SDPA)
    token = decoder.prefill(ids)                      # ids [1, T] -> first new token [1, 1]
    token = decoder.step()                            # then one token per call
    The model's own attention setting is left as it was.
    """

    def __init__(
        self, model: PreTrainedModel, config: AdamasConfig | None, capacity: int, cuda_graph: bool | None = None
    ) -> None:
        if config is not None and not isinstance(config, AdamasConfig):
            raise TypeError(f"config must be an AdamasConfig or None, got {type(config).__name__}")
        check_int("capacity", capacity, 2)
        check_context(model, capacity)
        if uses_sliding_window(model.config):
            raise ValueError(
                f"GraphDecoder needs full-attention layers; {model.config.model_type} uses a sliding window "
                f"({model.config.sliding_window}): use adamas.generate(..., cuda_graph=False)"
            )
        self.device = next(model.parameters()).device
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the model on a CUDA device, it is on {self.device}")
        self.model, self.config, self.capacity = model, config, capacity
        self.cuda_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        self.cache = FixedCache(model.config.num_hidden_layers, capacity, config)
        self.mask = torch.zeros(1, 1, 1, capacity, dtype=torch.bool, device=self.device)  # written slots
        self.position = torch.zeros(1, dtype=torch.long, device=self.device)  # slot of the newest token
        self.token = torch.zeros(1, 1, dtype=torch.long, device=self.device)  # the newest token
        self.length = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Run the prompt ids [1, T] with dense attention, filling slots 0..T-1; return the next token [1, 1]."""
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] < 1:
            raise ValueError(f"ids must be a [1, T] tensor of token ids, got {getattr(ids, 'shape', type(ids))}")
        length = ids.shape[1]
        if length >= self.capacity:
            raise ValueError(f"the prompt ({length} tokens) must be shorter than the capacity ({self.capacity})")
        if self.length:
            self.reset()
        ids = ids.to(self.device)
        with adamas_state(self.model, self.config):
            for start in range(0, length, PREFILL_CHUNK):
                end = min(start + PREFILL_CHUNK, length)
                positions = torch.arange(start, end, device=self.device)
                self.cache.seek(positions, visible=end, length=start)
                causal = torch.arange(end, device=self.device)[None, :] <= positions[:, None]  # [T', end]
                logits = self._forward(ids[:, start:end], positions[None], causal[None, None], logits_to_keep=1)
        self.cache.encode_prompt(length)
        self.token.copy_(logits[:, -1:].argmax(-1))
        self.mask[..., :length] = True
        self.position.fill_(length - 1)
        self.length = length
        self.cache.seek(self.position, visible=self.capacity, length=length)
        return self.token

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Decode one token: the newest token goes in, the next comes out in `self.token` [1, 1] (in place)."""
        if self.length == 0:
            raise RuntimeError("call prefill(ids) before step()")
        if self.length >= self.capacity:
            raise ValueError(f"the cache is full: {self.capacity} tokens (make a decoder with a larger capacity)")
        if not self.cuda_graph:
            with adamas_state(self.model, self.config):
                self._decode_step()
        else:
            if self.graph is None:
                self.capture()
            self.graph.replay()
        self.length += 1
        for layer in self.cache.layers:
            layer.length = self.length
        return self.token

    def reset(self) -> None:
        """Forget the sequence (buffers zeroed); a captured graph stays valid for the next prompt."""
        self.cache.reset()
        self.mask.zero_()
        self.length = 0

    def _forward(self, ids, position_ids, mask, **kwargs) -> torch.Tensor:
        inputs = {"input_ids": ids, "position_ids": position_ids, "attention_mask": mask, CACHE_ARGUMENT: self.cache}
        return self.model(**inputs, use_cache=True, **kwargs).logits

    def _decode_step(self) -> None:
        """What a step does, all on the device: the graph captures exactly this."""
        self.position += 1
        self.mask.index_fill_(-1, self.position, True)
        logits = self._forward(self.token, self.position.view(1, 1), self.mask)
        self.token.copy_(logits[:, -1:].argmax(-1))

    def capture(self) -> None:
        """Capture the decode step (after prefill; step() does it when needed): warm up, undo, capture."""
        if not self.cuda_graph:
            raise RuntimeError("capture() needs a decoder made with cuda_graph on a CUDA device")
        if self.length == 0 or self.length >= self.capacity:
            raise RuntimeError("capture() needs a prefilled decoder with room for a token")
        saved = (self.position.clone(), self.token.clone(), self.mask.clone())
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with adamas_state(self.model, self.config), torch.cuda.stream(stream):
            for _ in range(min(WARMUP_STEPS, self.capacity - self.length)):
                self._decode_step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        for tensor, value in zip((self.position, self.token, self.mask), saved, strict=True):
            tensor.copy_(value)
        graph = torch.cuda.CUDAGraph()
        with adamas_state(self.model, self.config), torch.cuda.graph(graph):
            self._decode_step()
        self.graph = graph
