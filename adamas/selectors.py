"""The baseline selectors Adamas is compared with, in plain PyTorch: Quest, StreamingLLM and the oracle.

Each takes one decode step's query q [B, Hq, d] and the cached keys k [B, Hkv, L, d]
(query head h reads KV head h // (Hq / Hkv)) and returns int64 indices [B, Hq, K] of the
tokens to attend, -1 marking an empty slot. `valid` ([B, L] bool) leaves out padding and a
static cache's empty slots. The attention over the chosen tokens is Adamas' own
(`sparse_attention`), so only the choice differs.
"""

from __future__ import annotations

import torch

from adamas import reference


def _grouped(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q [B, Hq, d] viewed as [B, Hkv, G, d], the G query heads that read each KV head."""
    b, hq, d = q.shape
    return q.view(b, k.shape[1], hq // k.shape[1], d)


def oracle_select(
    q: torch.Tensor, k: torch.Tensor, budget: int, sink: int = 0, recent: int = 0, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """The true top-`budget` tokens by q·k (plus the forced sink and recent ones): [B, Hq, min(budget, L)]."""
    b, hq, _ = q.shape
    scores = torch.einsum("bhgd,bhld->bhgl", _grouped(q, k).float(), k.float()).reshape(b, hq, -1)  # [B, Hq, L]
    forced = reference.forced_mask(scores.shape[-1], sink, recent, valid, scores.device)  # [L], or [B, L] with valid
    if valid is None:
        scores = scores.masked_fill(forced, float("inf"))
    else:
        scores = scores.masked_fill(forced[:, None, :], float("inf")).masked_fill(~valid[:, None, :], float("-inf"))
    top = scores.topk(min(budget, scores.shape[-1]), dim=-1)
    return top.indices.masked_fill(top.values == float("-inf"), -1)


def streaming_select(
    q: torch.Tensor, k: torch.Tensor, budget: int, sink: int, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """StreamingLLM: the first `sink` and the last `budget - sink` tokens: [B, Hq, min(budget, L)]."""
    sink = min(sink, budget)
    zeros = torch.zeros(q.shape[0], q.shape[1], k.shape[2], dtype=torch.int32, device=q.device)  # [B, Hq, L]
    dist = reference.mark_forced(zeros, sink, budget - sink, valid)
    idx = reference.select(dist, budget)
    return reference.drop_excluded(idx, dist) if valid is not None else idx


def quest_select(
    q: torch.Tensor, k: torch.Tensor, budget: int, page: int, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Quest: the max(1, budget // page) pages with the highest bound on q·k, all their tokens.

    The page holding the newest token is always among them, as in Quest. A page's bound is
    sum_i max(q_i · max_i, q_i · min_i) over the elementwise max and min of its keys; returns
    [B, Hq, pages_kept · page], slots past the end or invalid set to -1.
    """
    b, hkv, length, d = k.shape
    pages = -(-length // page)
    padded = torch.zeros(b, hkv, pages * page, d, dtype=torch.float32, device=k.device)
    padded[:, :, :length] = k.float()
    usable = torch.zeros(b, pages * page, dtype=torch.bool, device=k.device)  # [B, P·page]
    usable[:, :length] = True if valid is None else valid
    keys = padded.view(b, hkv, pages, page, d)
    in_page = usable.view(b, 1, pages, page, 1)
    filled = in_page.any(dim=3)  # [B, 1, P, 1]: the page holds a usable token
    high = keys.masked_fill(~in_page, float("-inf")).amax(dim=3).where(filled, 0.0)  # [B, Hkv, P, d]
    low = keys.masked_fill(~in_page, float("inf")).amin(dim=3).where(filled, 0.0)
    qg = _grouped(q, k).float()[:, :, :, None, :]  # [B, Hkv, G, 1, d]
    bound = torch.maximum(qg * high[:, :, None], qg * low[:, :, None]).sum(-1)  # [B, Hkv, G, P]
    bound = bound.masked_fill(~filled[:, :, None, :, 0], float("-inf")).reshape(b, q.shape[1], pages)
    # the page of the newest token is always kept, as Quest does (its bound is still being filled)
    newest = (torch.arange(pages * page, device=k.device) * usable).amax(-1) // page  # [B]
    bound = bound.scatter(-1, newest[:, None, None].expand(b, q.shape[1], 1), float("inf"))
    kept = bound.topk(min(max(1, budget // page), pages), dim=-1)  # [B, Hq, kept]
    tokens = (kept.indices[..., None] * page + torch.arange(page, device=k.device)).flatten(2)  # [B, Hq, kept·page]
    ok = usable.gather(1, tokens.flatten(1)).view_as(tokens)
    return tokens.masked_fill(~ok, -1)
