"""Baseline selectors (Quest, StreamingLLM, oracle, full) against brute force, and through decode_attention."""

import pytest
import torch
from helpers import DEVICE, assert_close, randn, seeded
from tiny_models import TINY, prompt_batch, tiny_model

import adamas
from adamas import reference, selectors, tracing

GQA = [(4, 4), (8, 2), (6, 1)]


def qk(b: int, hq: int, hkv: int, length: int, d: int = 32, name: str = "selectors"):
    gen = seeded(f"{name}-{b}-{hq}-{hkv}-{length}")
    return randn(b, hq, d, gen=gen), randn(b, hkv, length, d, gen=gen), randn(b, hkv, length, d, gen=gen)


def true_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    group = q.shape[1] // k.shape[1]
    return torch.einsum("bhd,bhld->bhl", q.float(), k.float().repeat_interleave(group, dim=1))  # [B, Hq, L]


def as_sets(idx: torch.Tensor) -> list[list[set[int]]]:
    return [[set(row[row >= 0].tolist()) for row in head] for head in idx.cpu()]


@pytest.mark.parametrize(("hq", "hkv"), GQA, ids=lambda x: str(x))
@pytest.mark.parametrize("length", [1, 37, 300])
def test_oracle_picks_the_true_top_budget(hq, hkv, length):
    q, k, _ = qk(2, hq, hkv, length)
    idx = selectors.oracle_select(q, k, budget=16)
    expected = true_scores(q, k).topk(min(16, length), dim=-1).indices
    assert as_sets(idx) == as_sets(expected)


def test_oracle_keeps_forced_tokens_and_skips_invalid_ones():
    q, k, _ = qk(2, 4, 2, 40)
    valid = torch.ones(2, 40, dtype=torch.bool, device=DEVICE)
    valid[1, :30] = False  # row 1: 10 real tokens after padding
    idx = selectors.oracle_select(q, k, budget=16, sink=2, recent=3, valid=valid)
    for head in as_sets(idx)[0]:
        assert {0, 1, 37, 38, 39} <= head and len(head) == 16
    for head in as_sets(idx)[1]:
        assert head == set(range(30, 40)), "only the 10 valid tokens, the other slots empty"


@pytest.mark.parametrize("length", [5, 64, 300])
def test_streaming_keeps_the_sinks_and_the_recent_window(length):
    q, k, _ = qk(1, 4, 2, length)
    idx = selectors.streaming_select(q, k, budget=32, sink=4)
    expected = set(range(length)) if length <= 32 else set(range(4)) | set(range(length - 28, length))
    assert all(head == expected for head in as_sets(idx)[0])


def test_streaming_counts_valid_tokens_only():
    q, k, _ = qk(1, 2, 1, 50)
    valid = torch.zeros(1, 50, dtype=torch.bool, device=DEVICE)
    valid[0, 10:40] = True  # left padding 0..9, empty static slots 40..49
    idx = selectors.streaming_select(q, k, budget=8, sink=2, valid=valid)
    assert all(head == {10, 11} | set(range(34, 40)) for head in as_sets(idx)[0])


def brute_quest(q: torch.Tensor, k: torch.Tensor, budget: int, page: int) -> list[list[set[int]]]:
    """Page bounds computed page by page with Python loops, then the best pages' tokens."""
    b, hq, _ = q.shape
    group, length = hq // k.shape[1], k.shape[2]
    result = []
    for i in range(b):
        heads = []
        for h in range(hq):
            keys, query = k[i, h // group].float(), q[i, h].float()
            bounds = []
            for start in range(0, length, page):
                block = keys[start : start + page]
                high, low = block.max(0).values, block.min(0).values
                bounds.append(torch.maximum(query * high, query * low).sum().item())
            bounds[-1] = float("inf")  # the newest page is always kept
            order = sorted(range(len(bounds)), key=lambda p: -bounds[p])[: max(1, budget // page)]
            heads.append({t for p in order for t in range(p * page, min((p + 1) * page, length))})
        result.append(heads)
    return result


@pytest.mark.parametrize(("hq", "hkv"), GQA, ids=lambda x: str(x))
@pytest.mark.parametrize(("length", "budget"), [(100, 32), (64, 8), (37, 1024), (200, 50)])
def test_quest_picks_the_pages_with_the_highest_bound(hq, hkv, length, budget):
    q, k, _ = qk(1, hq, hkv, length)
    idx = selectors.quest_select(q, k, budget, page=16)
    assert idx.shape[-1] == 16 * min(max(1, budget // 16), -(-length // 16))
    assert as_sets(idx) == brute_quest(q, k, budget, 16)


def test_quest_never_picks_invalid_tokens():
    q, k, _ = qk(2, 4, 2, 70)
    valid = torch.ones(2, 70, dtype=torch.bool, device=DEVICE)
    valid[1, :40] = False
    idx = selectors.quest_select(q, k, budget=64, page=16, valid=valid)
    for head in as_sets(idx)[1]:
        assert head == set(range(40, 70))
    static = torch.ones(1, 70, dtype=torch.bool, device=DEVICE)
    static[0, 50:] = False  # a static cache: 50 tokens written
    idx = selectors.quest_select(q[:1], k[:1], budget=16, page=16, valid=static)
    assert all(head == set(range(48, 50)) for head in as_sets(idx)[0]), "the newest page is kept"


@pytest.mark.parametrize("selector", ["quest", "streaming", "oracle"])
def test_decode_attention_attends_over_the_selectors_choice(selector):
    q, k, v = qk(2, 8, 2, 150)
    config = adamas.AdamasConfig.paper(budget=32, selector=selector, dense_layers=())
    out, idx = adamas.decode_attention(q, k, v, adamas.encode(k), config, return_indices=True)
    assert_close(selector, out, reference.sparse_attention(q, k, v, idx, 32**-0.5), torch.float32)


@pytest.mark.parametrize("selector", ["quest", "streaming", "oracle", "adamas", "full"])
def test_a_budget_above_the_context_is_full_attention(selector):
    q, k, v = qk(1, 8, 2, 90)
    config = adamas.AdamasConfig.paper(budget=128, selector=selector, dense_layers=())
    out = adamas.decode_attention(q, k, v, adamas.encode(k), config)
    assert_close(selector, out, reference.dense_attention(q, k, v, 32**-0.5), torch.float32)


def test_full_selector_returns_no_indices():
    q, k, v = qk(1, 4, 2, 20)
    config = adamas.AdamasConfig(budget=8, selector="full")
    out, idx = adamas.decode_attention(q, k, v, adamas.encode(k), config, return_indices=True)
    assert idx is None
    assert_close("full", out, reference.dense_attention(q, k, v, 32**-0.5), torch.float32)


def test_selector_config():
    assert adamas.AdamasConfig().selector == "adamas"
    assert adamas.AdamasConfig(selector="adamas-calibrated").thresholds == "calibrated"
    with pytest.raises(ValueError, match="selector must be one of"):
        adamas.AdamasConfig(selector="h2o")
    with pytest.raises(ValueError, match="fits its own thresholds"):
        adamas.AdamasConfig(selector="adamas-calibrated", thresholds=(-1, 0, 1))


def greedy(model, ids, mask, config=None):
    if config is not None:
        adamas.enable(model, config)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
    adamas.disable(model)
    return out


@pytest.mark.parametrize("selector", ["quest", "streaming", "oracle", "full", "adamas-calibrated"])
def test_every_selector_at_a_full_budget_decodes_like_full_attention(selector, decode_calls):
    model = tiny_model("llama")
    ids, mask = prompt_batch()
    expected = greedy(model, ids, mask)
    assert torch.equal(greedy(model, ids, mask, adamas.AdamasConfig(budget=4096, selector=selector)), expected)
    assert len(decode_calls) == (0 if selector == "full" else (TINY["num_hidden_layers"] - 2) * 7)


@pytest.mark.parametrize("selector", ["quest", "streaming", "oracle", "adamas"])
def test_small_budget_selectors_trace_their_recall(selector):
    model = tiny_model("qwen3")
    ids, _ = prompt_batch(batch=1, length=120)
    config = adamas.AdamasConfig.paper(budget=32, selector=selector)
    tracer = tracing.Tracer(TINY["num_hidden_layers"], TINY["num_attention_heads"], 130, ())
    token = tracing.ACTIVE_TRACER.set(tracer)
    try:
        greedy(model, ids, torch.ones_like(ids), config)
    finally:
        tracing.ACTIVE_TRACER.reset(token)
    recall = tracer.current.recall[2:]  # the last step's sparse layers
    assert ((recall > 0) & (recall <= 1 + 1e-5)).all()
    if selector == "oracle":
        assert_close("oracle recall", recall, torch.ones_like(recall), torch.float32)
