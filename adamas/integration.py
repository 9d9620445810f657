"""Adamas inside transformers: a cache layer that keeps 2-bit key codes, and the attention function.

`enable(model, config)` registers the attention function "adamas" with transformers'
AttentionInterface (prefill and dense layers go to SDPA, one-token decode steps to
`adamas.decode_attention`) and forward hooks: before the forward, they give the cache that
`generate` creates Adamas layers before anything is stored in it, and make `config` the one
the attention function reads for the length of the forward. `disable(model)` undoes both.
Nothing in the model's classes is patched.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass, field

import torch
import transformers
from packaging.version import Version
from torch.utils.hooks import RemovableHandle
from transformers import AttentionInterface, Cache, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from adamas import cpu_decode, ops
from adamas.checks import resolve_backend
from adamas.config import ADAMAS_SELECTORS, AdamasConfig
from adamas.ops import calibrate, decode_attention, encode, query_thresholds
from adamas.tracing import ACTIVE_RECORDER, ACTIVE_TRACER

TRANSFORMERS_RANGE = ("5.17.0", "6.0.0")
"""Supported transformers releases: from the first (inclusive) up to the second (exclusive)."""
SUPPORTED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
logger = logging.getLogger(__name__)
ATTENTION_NAME = "adamas"

if not Version(TRANSFORMERS_RANGE[0]) <= Version(transformers.__version__) < Version(TRANSFORMERS_RANGE[1]):
    raise ImportError(
        f"adamas needs transformers >= {TRANSFORMERS_RANGE[0]}, < {TRANSFORMERS_RANGE[1]}; "
        f"found {transformers.__version__}"
    )

CACHE_ARGUMENT = "cache" if Version(transformers.__version__) >= Version("5.24.0") else "past_key_values"
"""The name under which forward() and generate() take a Cache (renamed in transformers 5.24)."""

# Set by AdamasLayer.update, read by the attention function called next in the same layer.
_LAST_UPDATE: ContextVar[tuple[object, torch.Tensor] | None] = ContextVar("adamas_last_update", default=None)
# The config of the enabled model whose forward runs now, set by its forward hooks: a dense layer's
# attention reads its dense_backend (it has no Adamas cache layer to carry the config).
_FORWARD_CONFIG: ContextVar[AdamasConfig | None] = ContextVar("adamas_forward_config", default=None)


def offer_codes(layer, keys: torch.Tensor) -> None:
    """Tell the attention function called next that `keys` come from `layer`, a cache layer with codes.

    The layer exposes `config`, `codes` (the codes of `keys`), `thresholds` and `compiled_step()`
    (the CPU's compiled step over its buffers, or None), and may expose `lengths` (a device count
    of its valid tokens where they are a prefix, else None); the attention function takes them
    only when it is handed this very `keys` tensor.
    """
    _LAST_UPDATE.set((layer, keys))


def layer_thresholds(config: AdamasConfig, keys: torch.Tensor) -> tuple[float, float, float] | torch.Tensor:
    """A cache layer's bucket edges: config.thresholds, or fp32 [Hkv, 3] fitted to its first `keys`."""
    if config.thresholds == "calibrated":
        return calibrate(keys, config.calibration_quantiles)
    return config.thresholds


def compiles_step(config: AdamasConfig, keys: torch.Tensor, values: torch.Tensor) -> bool:
    """Whether a cache layer of `config` holding such keys and values decodes through adamas.cpu_decode."""
    return (
        config.selector in ADAMAS_SELECTORS
        and resolve_backend(config.backend, keys.device) == "cpu"
        and cpu_decode.supports(keys, values)
    )


CompiledStep = tuple[cpu_decode.LayerBuffers, int, torch.Tensor | None, torch.Tensor | None]
"""A cache layer's answer to the attention function on the CPU: its LayerBuffers, the tokens the step runs over
(the first L of the buffers), the valid mask [B, L] to apply (None: all L valid) and positions whose codes the
step writes first (None: none)."""


class AdamasLayer(DynamicLayer):
    """A DynamicLayer that also keeps the packed 2-bit code of every cached key, in preallocated buffers.

    keys, values: [B, Hkv, L, d] and codes: [B, Hkv, L, d // 4] uint8 are views of buffers
    with room for more tokens; row t of codes is the code of keys[:, :, t] under
    `thresholds`. New rows are written in place (a full buffer grows to hold an eighth more,
    at least GROWTH tokens), and new keys are encoded as they arrive: one kernel call per
    update, the whole prompt at prefill, one token per decode step. Where the CPU's compiled
    step runs (`compiles_step`), the layer keeps its buffers as adamas.cpu_decode reads them.
    """

    GROWTH = 256

    def __init__(self, config: AdamasConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.codes: torch.Tensor | None = None
        # the bucket edges of this layer: config.thresholds, or fp32 [Hkv, 3] fitted to the first keys
        self.thresholds: tuple[float, float, float] | torch.Tensor | None = None
        self._compiled: cpu_decode.LayerBuffers | None = None  # the buffers as the compiled step reads them
        self.compiles = False  # whether decode steps run adamas.cpu_decode: fixed by the first keys and values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write the new K/V rows and their codes after the cached ones; return the whole K and V."""
        if self.thresholds is None:
            self.thresholds = layer_thresholds(self.config, key_states)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.compiles = compiles_step(self.config, key_states, value_states)
        start, end = self.get_seq_length(), self.get_seq_length() + key_states.shape[-2]
        decoding = key_states.shape[2] == 1 and self.compiles
        new_codes = None if decoding else encode(key_states, self.thresholds, backend=self.config.backend)
        self._reserve(key_states, value_states, end)
        for buffer, rows in ((self._keys, key_states), (self._values, value_states)):
            buffer[:, :, start:end] = rows
        self.keys, self.values, self.codes = (b[:, :, :end] for b in (self._keys, self._values, self._codes))
        if new_codes is None:  # a decode step's key, encoded by one compiled call
            self.compiled_buffers().encode(torch.arange(start, end))
        else:
            self._codes[:, :, start:end] = new_codes
        offer_codes(self, self.keys)
        return self.keys, self.values

    def compiled_buffers(self) -> cpu_decode.LayerBuffers:
        """The layer's buffers as adamas.cpu_decode reads them, made again when the buffers change."""
        if self._compiled is None:
            self._compiled = cpu_decode.LayerBuffers(self._keys, self._values, self._codes, self.thresholds)
        return self._compiled

    def compiled_step(self, valid: torch.Tensor | None) -> CompiledStep | None:
        """What the compiled step of a decode query runs on, given its valid tokens [B, L]; None where it does not run.

        The step runs over every cached token; `valid` is handed on unless it marks them all.
        """
        if self.keys is None or not self.compiles:
            return None
        mask = None if valid is None or bool(valid.all()) else valid
        return self.compiled_buffers(), self.get_seq_length(), mask, None

    def _reserve(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        """Make the buffers of keys, values and codes hold `length` tokens, keeping what is cached."""
        capacity = 0 if self.codes is None else self._codes.shape[2]
        if length <= capacity:
            return
        capacity = length + max(self.GROWTH, length // 8)
        old = (self.keys, self.values, self.codes) if self.codes is not None else (None, None, None)
        b, h, _, d = keys.shape
        layouts = ((keys.dtype, d), (values.dtype, values.shape[3]), (torch.uint8, d // 4))
        made = []
        for (dtype, last), cached in zip(layouts, old, strict=True):
            buffer = keys.new_empty(b, h, capacity, last, dtype=dtype)  # [B, Hkv, capacity, last]
            if cached is not None:
                buffer[:, :, : cached.shape[2]] = cached
            made.append(buffer)
        self._keys, self._values, self._codes = made
        self._compiled = None

    def _adopt(self) -> None:
        """After an operation that replaced keys/values/codes, take them as the new buffers."""
        if self.codes is not None:
            self._keys, self._values, self._codes = self.keys, self.values, self.codes
            self._compiled = None

    def reset(self) -> None:
        """Drop everything, codes and thresholds included (as 5.24's DynamicLayer does; 5.17 zeroed instead)."""
        self.keys = self.values = self.codes = self.thresholds = None
        self._keys = self._values = self._codes = self._compiled = None
        self.is_initialized = False

    def crop(self, *args, **kwargs) -> None:
        """Crop K/V as DynamicLayer does, and the codes to match (the buffers stay)."""
        super().crop(*args, **kwargs)
        if self.codes is not None:
            self.codes = self._codes[:, :, : self.get_seq_length()]

    def _batch_rows(self, take) -> None:
        """Apply `take` (a batch operation on dim 0) to the codes, then adopt them as the buffers."""
        if self.codes is not None:
            self.codes = take(self.codes)
        self._adopt()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch for beam search, codes included."""
        super().reorder_cache(beam_idx)
        self._batch_rows(lambda x: x.index_select(0, beam_idx.to(x.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat each batch row, codes included."""
        super().batch_repeat_interleave(repeats)
        self._batch_rows(lambda x: x.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the chosen batch rows, codes included."""
        super().batch_select_indices(indices)
        self._batch_rows(lambda x: x[indices, ...])


class AdamasCache(DynamicCache):
    """A DynamicCache whose full-attention layers keep 2-bit key codes (dense layers stay plain)."""

    def __init__(self, config: AdamasConfig, num_layers: int) -> None:
        layers = [DynamicLayer() if i in config.dense_layers else AdamasLayer(config) for i in range(num_layers)]
        Cache.__init__(self, layers=layers)


def adamas_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The "adamas" attention function: query [B, Hq, T, d], key/value [B, Hkv, L, d] -> ([B, T, Hq, d], None).

    A one-token decode step on an Adamas cache layer runs Adamas (or the config's baseline
    selector); everything else (prefill, dense layers, selector "full", training, caches
    without codes) runs `dense_attention` on the enabled config's dense_backend.
    """
    last = _LAST_UPDATE.get()
    _LAST_UPDATE.set(None)  # hold no reference to the cache past this layer
    layer = last[0] if last is not None and last[1] is key else None
    if layer is None or query.shape[2] != 1 or module.training or layer.config.selector == "full":
        enabled = _FORWARD_CONFIG.get()
        backend = "auto" if enabled is None else enabled.dense_backend
        return dense_attention(
            module, query, key, value, attention_mask, backend, dropout=dropout, scaling=scaling, **kwargs
        )
    valid = _valid_tokens(attention_mask, key.shape[2])
    q, config = query.select(2, 0), layer.config
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    per_head = layer.thresholds if isinstance(layer.thresholds, torch.Tensor) else None
    compiled = layer.compiled_step(valid)
    if compiled is not None:  # the CPU's one compiled call: the new key's code, selection and attention
        buffers, length, mask, encode_at = compiled
        out, idx = buffers.step(
            q, config.budget, config.sink, config.recent, scale, valid=mask, encode_at=encode_at, length=length
        )
    else:
        # a fixed cache's written slots are a prefix: its count (on the device) serves the kernels for a mask
        lengths = getattr(layer, "lengths", None)
        out, idx = decode_attention(
            q, key, value, layer.codes, config, scale=scale, valid=None if lengths is not None else valid,
            thresholds=per_head, return_indices=True, lengths=lengths,
            check_inputs=False,  # the layer's tensors and thresholds were checked as it made them
        )  # fmt: skip
    tracer, recorder = ACTIVE_TRACER.get(), ACTIVE_RECORDER.get()
    if recorder is not None:
        recorder.record(module.layer_idx, q, idx, scale, config.budget)
    if tracer is not None:
        edges = query_thresholds(config, per_head, q, key)
        tracer.observe(module.layer_idx, q, key, layer.codes, idx, scale, edges, valid)
    return out[:, None], None


def dense_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    backend: str = "auto",
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """SDPA, except for a one-token decode step, which reads K and V once per GQA group.

    The arguments are an attention function's (`kwargs` hold `scaling`, `dropout` and the rest)
    and `backend`, the config's dense_backend. A fixed-capacity cache decodes under a mask of its
    written slots, and SDPA takes no flash kernel with a mask: where the backend resolves to
    Triton ("auto" on CUDA) the step runs `adamas.dense_attention`, a split-K kernel. Elsewhere
    SDPA gets query [B, Hq, 1, d] as [B, Hkv, Hq / Hkv, d], each group's heads the queries of
    its KV head, so that K and V are not copied to every query head (transformers' SDPA path
    does that before 5.24 whenever it gets a mask). Unmasked steps (a dynamic cache) take the
    grouped call too on a CPU, where SDPA's enable_gqa path is slower (docs/performance.md);
    on CUDA they keep transformers' flash call.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    scaling = kwargs.get("scaling")
    masked = attention_mask is not None
    one_step = query.shape[2] == 1 and (attention_mask.shape[1] == 1 if masked else query.device.type != "cuda")
    kernel = one_step and masked and not module.training and resolve_backend(backend, query.device) == "triton"
    if kernel:
        valid = _valid_tokens(attention_mask, key.shape[2])
        out = ops.dense_attention(query[:, :, 0], key, value, scaling, valid, backend="triton")
        return out[:, None], None  # [B, T = 1, Hq, d]
    if not one_step or module.training or groups == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    b, hq, _, d = query.shape
    grouped = query.reshape(b, hq // groups, groups, d)  # [B, Hkv, Hq / Hkv, d]
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(b, 1, hq, value.shape[-1]), None  # [B, T = 1, Hq, d]


def _valid_tokens(attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """[B, L] bool of the tokens the decode query may see, from an SDPA-style mask [B, 1, 1, >= L]."""
    if attention_mask is None:
        return None
    row = attention_mask[:, 0, -1, :length]
    return row if row.dtype == torch.bool else row == 0


@dataclass
class _Enabled:
    """What enable() changed on a model, so that disable() can undo it; the forwards under way."""

    config: AdamasConfig
    previous_attention: str
    hooks: tuple[RemovableHandle, ...] = ()
    forwards: list[Token] = field(default_factory=list)


def enable(model: torch.nn.Module, config: AdamasConfig) -> None:
    """Make `model.generate()` decode with Adamas under `config` (again with a new config if enabled).

    On an enabled model only the config changes: the hooks hand the new one to the attention function,
    with no walk over the modules (set_attn_implementation's) and no hooks registered again, so that
    two runs taking turns on one model switch at no cost that grows with its layers.
    """
    if not isinstance(config, AdamasConfig):
        raise TypeError(f"config must be an AdamasConfig, got {type(config).__name__}")
    state = getattr(model, "_adamas", None)
    if state is not None and model.config._attn_implementation == ATTENTION_NAME:
        state.config = config
        return
    model_config = getattr(model, "config", None)
    family = getattr(model_config, "model_type", None)
    if family not in SUPPORTED_FAMILIES:
        raise ValueError(f"model type {family!r} is not supported; supported families: {', '.join(SUPPORTED_FAMILIES)}")
    if uses_sliding_window(model_config):
        logger.warning(
            "%s uses sliding-window attention (window %s): those layers keep running SDPA, only full-attention "
            "layers decode with Adamas",
            family,
            model_config.sliding_window,
        )
    disable(model)
    AttentionInterface.register(ATTENTION_NAME, adamas_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    previous = model_config._attn_implementation
    model.set_attn_implementation(ATTENTION_NAME)
    state = _Enabled(config, previous)
    state.hooks = (
        model.register_forward_pre_hook(functools.partial(_before_forward, state=state), with_kwargs=True),
        model.register_forward_hook(functools.partial(_after_forward, state=state), always_call=True),
    )
    model._adamas = state


def disable(model: torch.nn.Module) -> None:
    """Return `model` to the attention it had before enable(); a no-op if Adamas is not enabled."""
    state = getattr(model, "_adamas", None)
    if state is None:
        return
    for hook in state.hooks:
        hook.remove()
    model.set_attn_implementation(state.previous_attention)
    del model._adamas


def enabled_config(model: torch.nn.Module) -> AdamasConfig | None:
    """The config `model` decodes with, or None when Adamas is not enabled."""
    state = getattr(model, "_adamas", None)
    return None if state is None else state.config


def set_enabled(model: torch.nn.Module, config: AdamasConfig | None) -> None:
    """Enable Adamas under `config`, or disable it for None."""
    if config is None:
        disable(model)
    else:
        enable(model, config)


@contextlib.contextmanager
def adamas_state(model: torch.nn.Module, config: AdamasConfig | None) -> Iterator[None]:
    """Decode with Adamas under `config` (full attention for None) inside; the model's own state after.

    Between two configs on an enabled model this swaps the config and back (see enable); from or to
    None it walks the model's modules, twice: a loop of steps holds one state around them all.
    """
    previous = enabled_config(model)
    try:
        set_enabled(model, config)
        yield
    finally:
        set_enabled(model, previous)


def uses_sliding_window(model_config: object) -> bool:
    """Whether a model config turns on sliding-window attention (whose layers Adamas leaves to SDPA)."""
    return getattr(model_config, "sliding_window", None) is not None and getattr(
        model_config, "use_sliding_window", True
    )


def _before_forward(model: torch.nn.Module, args: tuple, kwargs: dict, state: _Enabled) -> None:
    """Forward pre-hook: Adamas layers for an empty cache, and the model's config for the attention function."""
    _adopt_cache(kwargs.get("cache", kwargs.get("past_key_values")), state.config)
    state.forwards.append(_FORWARD_CONFIG.set(state.config))


def _after_forward(model: torch.nn.Module, args: tuple, output: object, state: _Enabled) -> None:
    """Forward hook, run even when the forward raised: the attention function's config as before the forward."""
    if state.forwards:
        _FORWARD_CONFIG.reset(state.forwards.pop())


def _adopt_cache(cache: object, config: AdamasConfig) -> None:
    """Give an empty cache Adamas layers for its full-attention layers.

    Under selector "full" every step is dense and no layer needs codes: the cache stays as it is.
    """
    if config.selector == "full" or not isinstance(cache, Cache) or cache.get_seq_length() > 0:
        return
    if getattr(cache, "layer_class_to_replicate", None) is DynamicLayer:  # layers appear on first update
        cache.layer_class_to_replicate = functools.partial(_new_layer, cache, config)
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and i not in config.dense_layers:
            cache.layers[i] = AdamasLayer(config)


def _new_layer(cache: Cache, config: AdamasConfig) -> DynamicLayer:
    """The next layer of a lazily built cache: Adamas unless its index is a dense layer."""
    return DynamicLayer() if len(cache.layers) in config.dense_layers else AdamasLayer(config)
