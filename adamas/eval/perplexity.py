"""Perplexity in decode mode: every scored token is predicted by a decode step through the selector.

As in the paper's PG-19 test (after Quest): a prefix is prefilled densely, then the text is
fed one token at a time with teacher forcing; the step that feeds token t scores token t + 1.
So the prediction of every scored token reads a context its selector picked.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel

from adamas.config import AdamasConfig, check_int
from adamas.eval.decoding import Prefill, decoding, prefill


def continuation_nll(
    model: PreTrainedModel,
    pre: Prefill,
    config: AdamasConfig | None,
    continuation: Sequence[int],
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """NLL of continuation[1:], fp32 [len - 1]: the step feeding continuation[j] scores continuation[j + 1].

    `continuation` starts right after the prefilled prompt; `on_step` runs after each step.
    """
    if len(continuation) < 2:
        raise ValueError(f"continuation must hold at least 2 tokens (one fed, one scored), got {len(continuation)}")
    nll = []
    with decoding(model, pre, config) as step:
        for token, target in itertools.pairwise(continuation):
            logits = step(token)
            nll.append(logits.logsumexp(-1) - logits[target])
            if on_step is not None:
                on_step()
    return torch.stack(nll).cpu()


def decode_perplexity(model: PreTrainedModel, ids: Sequence[int], prefix: int, config: AdamasConfig | None) -> float:
    """exp(mean NLL) of ids[prefix + 1:], after a dense prefill of ids[:prefix] and decode steps from ids[prefix]."""
    check_int("prefix", prefix, 1)
    if prefix > len(ids) - 2:
        raise ValueError(f"prefix ({prefix}) must leave at least 2 of the {len(ids)} tokens to decode")
    nll = continuation_nll(model, prefill(model, ids[:prefix]), config, ids[prefix:])
    return math.exp(float(nll.mean()))
