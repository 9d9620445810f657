"""One dense prefill per prompt, replayed into a fresh cache for every selector and budget.

The prefill runs dense attention under every selector, so it is done once: its keys and
values are handed, layer by layer, to a new cache's `update`, as the model's own prefill
would hand them, and each cache layer builds its selector's state (key codes, fitted
thresholds) from them. Decoding then runs one token per forward through the
model's attention function, so each step goes through the selector under test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import Cache, DynamicCache, PreTrainedModel

from adamas.config import AdamasConfig
from adamas.integration import CACHE_ARGUMENT, AdamasCache, adamas_state
from adamas.loading import execution_device

Step = Callable[[int], torch.Tensor]
"""One decode step: feed a token id, get the next token's logits [vocab] fp32."""


@dataclass
class Prefill:
    """A prompt's dense prefill: per layer K and V [1, Hkv, T, d], and the logits after its last token."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    logits: torch.Tensor  # [vocab] fp32: the prediction of the first token after the prompt
    length: int  # T, tokens in the prompt


@torch.no_grad()
def prefill(model: PreTrainedModel, ids: Sequence[int]) -> Prefill:
    """Run the prompt `ids` through the model with full attention, keeping its K/V."""
    if len(ids) == 0:
        raise ValueError("the prompt is empty")
    device = execution_device(model)
    cache = DynamicCache()
    with adamas_state(model, None):
        out = model(
            input_ids=torch.tensor([list(ids)], device=device),
            use_cache=True,
            logits_to_keep=1,
            **{CACHE_ARGUMENT: cache},
        )
    keys = [layer.keys for layer in cache.layers]
    values = [layer.values for layer in cache.layers]
    return Prefill(keys, values, out.logits[0, -1].float(), len(ids))


def replay(pre: Prefill, config: AdamasConfig | None) -> Cache:
    """A new cache for `config` (plain dynamic for None) holding the prefill, built by its layers' own update."""
    cache = DynamicCache() if config is None else AdamasCache(config, len(pre.keys))
    for i, (k, v) in enumerate(zip(pre.keys, pre.values, strict=True)):
        cache.update(k, v, i)
    return cache


@contextlib.contextmanager
def decoding(model: PreTrainedModel, pre: Prefill, config: AdamasConfig | None) -> Iterator[Step]:
    """Decode steps after the prefill `pre` under `config`: a function from a token id to the next logits."""
    device = execution_device(model)
    cache = replay(pre, config)

    def step(token: int) -> torch.Tensor:
        ids = torch.tensor([[token]], device=device)
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{CACHE_ARGUMENT: cache})
        return out.logits[0, -1].float()

    with adamas_state(model, config), torch.no_grad():
        yield step


def greedy_answer(
    model: PreTrainedModel,
    pre: Prefill,
    config: AdamasConfig | None,
    max_new_tokens: int,
    stop: Callable[[list[int]], bool],
) -> list[int]:
    """Greedy tokens after the prefill, at most `max_new_tokens`, ending early once `stop(tokens)` holds."""
    tokens = [int(pre.logits.argmax())]
    if stop(tokens) or max_new_tokens == 1:
        return tokens
    with decoding(model, pre, config) as step:
        while len(tokens) < max_new_tokens and not stop(tokens):
            tokens.append(int(step(tokens[-1]).argmax()))
    return tokens
