"""The PyTorch reference against float64 ground truths written independently of it."""

import math

import pytest
import torch
from helpers import DEVICE, assert_close, assert_valid_selection, dtypes, randn, random_codes, seeded, shapes

from adamas import reference

THRESHOLDS = (-10.0, 0.0, 10.0)


def fwht64(x: torch.Tensor) -> torch.Tensor:
    """Ground truth: the in-place butterfly Walsh–Hadamard transform in float64, orthonormal."""
    y = x.double().clone()
    d, h = y.shape[-1], 1
    while h < d:
        blocks = y.unflatten(-1, (d // (2 * h), 2, h))
        a, b = blocks[..., 0, :].clone(), blocks[..., 1, :].clone()
        blocks[..., 0, :], blocks[..., 1, :] = a + b, a - b
        y = blocks.flatten(-3)
        h *= 2
    return y / math.sqrt(d)


def softmax_attention64(q, k_rows, v_rows, scale):
    """Ground truth: softmax attention of one query over explicit rows, float64, one head at a time."""
    scores = (k_rows.double() @ q.double()) * scale
    weights = torch.exp(scores - scores.max())
    return (weights / weights.sum()) @ v_rows.double()


@pytest.mark.parametrize("d", [16, 64, 128, 256])
@dtypes
def test_hadamard_matches_butterfly(d, dtype):
    x = randn(5, 3, d, gen=seeded(d, dtype), dtype=dtype, std=4.0)
    assert_close("hadamard", reference.hadamard(x), fwht64(x).to(dtype), dtype)


@pytest.mark.parametrize("d", [16, 128])
def test_hadamard_is_orthonormal_and_keeps_dot_products(d):
    gen = seeded("ortho", d)
    q, k = randn(7, d, gen=gen, dtype=torch.float64), randn(7, d, gen=gen, dtype=torch.float64)
    hq, hk = reference.hadamard(q), reference.hadamard(k)
    assert_close("H(H x)", reference.hadamard(hq), q, torch.float64)
    assert_close("Hq . Hk", (hq * hk).sum(-1), (q * k).sum(-1), torch.float64)
    h = reference.hadamard_matrix(d, torch.float64)
    assert_close("H H^T", h @ h.T, torch.eye(d, dtype=torch.float64), torch.float64)


@dtypes
@pytest.mark.parametrize("d", [64, 128])
def test_encode_buckets_the_transformed_values(d, dtype):
    x = randn(4, 33, d, gen=seeded("enc", d, dtype), dtype=dtype, std=10.0)
    codes = reference.encode(x, THRESHOLDS)
    assert codes.dtype == torch.uint8 and codes.shape == (4, 33, d // 4)
    y = fwht64(x)  # ground truth values; count the thresholds strictly below each
    expected = sum((y > t).to(torch.uint8) for t in THRESHOLDS)
    near = torch.stack([(y - t).abs() < 1e-3 for t in THRESHOLDS]).any(0)
    got = reference.unpack(codes)
    assert ((got == expected) | near).all()
    assert set(got.unique().tolist()) == {0, 1, 2, 3}, "the test inputs should reach every bucket"


def test_bucketize_edges_follow_right_false():
    y = torch.tensor([-10.5, -10.0, -9.9, 0.0, 0.1, 10.0, 10.1])
    assert reference.bucketize(y, THRESHOLDS).tolist() == [0, 0, 1, 1, 2, 2, 3]


def test_pack_layout_puts_dim_j_at_byte_j_div_4_bit_2_j_mod_4():
    codes = torch.zeros(16, dtype=torch.uint8)
    codes[5] = 3  # byte 1, bits 2..3
    codes[14] = 2  # byte 3, bits 4..5
    assert reference.pack(codes).tolist() == [0, 3 << 2, 0, 2 << 4]
    all_codes = torch.randint(0, 4, (3, 64), generator=seeded("pack"), dtype=torch.uint8)
    assert torch.equal(reference.unpack(reference.pack(all_codes)), all_codes)


@shapes
def test_manhattan_matches_loops(shape):
    b, hq, hkv, length, d = shape
    length = min(length, 40)  # python loops below
    gen = seeded("man", shape)
    q_codes, k_codes = random_codes(b, hq, d // 4, gen=gen), random_codes(b, hkv, length, d // 4, gen=gen)
    dist = reference.manhattan(q_codes, k_codes)
    assert dist.dtype == torch.int32 and dist.shape == (b, hq, length)
    cq, ck = reference.unpack(q_codes).tolist(), reference.unpack(k_codes).tolist()
    group = hq // hkv
    for i_b in range(b):
        for h in range(hq):
            for t in range(length):
                expected = sum(abs(a - c) for a, c in zip(cq[i_b][h], ck[i_b][h // group][t], strict=True))
                assert dist[i_b, h, t].item() == expected


@pytest.mark.parametrize("budget", [1, 5, 64, 1000])
def test_select_returns_a_smallest_set(budget):
    dist = torch.randint(0, 20, (3, 4, 130), generator=seeded("sel", budget), dtype=torch.int32)  # many ties
    assert_valid_selection(reference.select(dist, budget), dist, budget)


def test_mark_forced_keeps_sink_and_recent():
    dist = torch.full((1, 2, 10), 7, dtype=torch.int32)
    marked = reference.mark_forced(dist, sink=2, recent=3)
    assert marked[0, 0].tolist() == [-1, -1, 7, 7, 7, 7, 7, -1, -1, -1]
    assert dist.eq(7).all(), "the input is not modified"
    assert reference.mark_forced(dist, sink=20, recent=0).eq(-1).all()


@shapes
@dtypes
def test_sparse_attention_matches_float64(shape, dtype):
    b, hq, hkv, length, d = shape
    gen = seeded("attn", shape, dtype)
    q, k, v = (randn(*s, gen=gen, dtype=dtype) for s in [(b, hq, d), (b, hkv, length, d), (b, hkv, length, d)])
    n_sel = max(1, length // 3)
    idx = torch.stack([torch.randperm(length, generator=gen)[:n_sel] for _ in range(b * hq)]).view(b, hq, n_sel)
    scale = d**-0.5
    out = reference.sparse_attention(q, k, v, idx.to(DEVICE), scale)
    group = hq // hkv
    expected = torch.stack(
        [
            softmax_attention64(q[i_b, h], k[i_b, h // group, idx[i_b, h]], v[i_b, h // group, idx[i_b, h]], scale)
            for i_b in range(b)
            for h in range(hq)
        ]
    ).view(b, hq, d)
    assert out.dtype == dtype
    assert_close("sparse_attention", out, expected, dtype)


@dtypes
def test_dense_attention_matches_sdpa(dtype):
    gen = seeded("dense", dtype)
    q, k, v = randn(2, 8, 64, gen=gen), randn(2, 2, 50, 64, gen=gen), randn(2, 2, 50, 64, gen=gen)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.double()[:, :, None], k.double(), v.double(), enable_gqa=True
    )[:, :, 0]
    out = reference.dense_attention(q.to(dtype), k.to(dtype), v.to(dtype), 64**-0.5)
    assert_close("dense_attention", out, expected, dtype)


def test_empty_slots_get_no_weight():
    gen = seeded("empty-slots")
    q, k, v = randn(1, 2, 64, gen=gen), randn(1, 1, 10, 64, gen=gen), randn(1, 1, 10, 64, gen=gen)
    idx = torch.tensor([[[3, -1, 7, -1], [-1, -1, -1, 5]]], device=DEVICE)
    out = reference.sparse_attention(q, k, v, idx, 0.125)
    expected = reference.sparse_attention(q, k, v, torch.tensor([[[3, 7], [5, 5]]], device=DEVICE), 0.125)
    assert_close("empty slots", out, expected, torch.float32)


def test_mark_forced_counts_sink_over_valid_tokens_and_excludes_padding():
    dist = torch.full((2, 1, 8), 5, dtype=torch.int32)
    valid = torch.tensor([[True] * 8, [False, False, False] + [True] * 5])
    marked = reference.mark_forced(dist, sink=2, recent=1, valid=valid)
    x = reference.EXCLUDED
    assert marked[0, 0].tolist() == [-1, -1, 5, 5, 5, 5, 5, -1]
    assert marked[1, 0].tolist() == [x, x, x, -1, -1, 5, 5, -1]
    idx = reference.select(marked, 8)
    assert (reference.drop_excluded(idx, marked) == -1).sum(-1).tolist() == [[0], [3]]


def test_mark_forced_counts_recent_over_valid_tokens_when_the_cache_has_empty_slots():
    dist = torch.full((1, 1, 8), 5, dtype=torch.int32)
    valid = torch.tensor([[True] * 5 + [False] * 3])  # a static cache: 5 tokens written, 3 slots empty
    marked = reference.mark_forced(dist, sink=1, recent=2, valid=valid)
    x = reference.EXCLUDED
    assert marked[0, 0].tolist() == [-1, 5, 5, -1, -1, x, x, x]


@pytest.mark.parametrize(
    ("length", "sink", "recent", "valid", "forced"),
    [
        (5, 0, 0, None, [0, 0, 0, 0, 0]),
        (5, 1, 2, None, [1, 0, 0, 1, 1]),
        (3, 4, 4, None, [1, 1, 1]),
        (6, 1, 1, [[0, 1, 1, 1, 1, 0]], [[0, 1, 0, 0, 1, 0]]),
        (4, 2, 2, [[0, 0, 0, 0]], [[0, 0, 0, 0]]),
    ],
    ids=["none", "sink-and-recent", "overlapping", "padded-and-unwritten", "nothing-valid"],
)
def test_forced_mask_counts_over_the_valid_tokens(length, sink, recent, valid, forced):
    valid = None if valid is None else torch.tensor(valid, dtype=torch.bool)
    assert reference.forced_mask(length, sink, recent, valid).int().tolist() == forced


def test_per_head_thresholds_bucket_each_head_by_its_own_edges():
    y = torch.tensor([[[0.5, 1.5, 2.5, 3.5]], [[0.5, 1.5, 2.5, 3.5]]]).transpose(0, 1)  # [1, H=2, 4]
    edges = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.1, 0.2]])
    assert reference.bucketize(y, edges).tolist() == [[[0, 1, 2, 3], [3, 3, 3, 3]]]


def test_calibrate_puts_the_quantiles_of_each_head_at_the_edges():
    gen = seeded("calibrate")
    k = randn(2, 3, 500, 64, gen=gen) * torch.tensor([1.0, 4.0, 0.5], device=DEVICE).view(1, 3, 1, 1)
    edges = reference.calibrate(k, (0.25, 0.5, 0.75))
    assert edges.shape == (3, 3) and (edges.diff(dim=1) > 0).all()
    y = reference.hadamard(k).transpose(0, 1).reshape(3, -1)
    below = (y[:, :, None] <= edges[:, None, :]).double().mean(dim=1)  # share of values under each edge
    assert torch.allclose(below, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64, device=DEVICE), atol=2e-3)
    assert edges[1, 2] > 3 * edges[0, 2], "a wider head gets wider edges"


@pytest.mark.parametrize("seed", range(4))
def test_forced_mask_counts_valid_tokens_row_by_row(seed):
    """Each row forces its own first `sink` and last `recent` valid tokens, whatever the other rows hold."""
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(5, 61, generator=g) < torch.tensor([[0.0], [0.2], [0.7], [1.0], [0.5]])
    for rows in (valid, valid[:, ::2]):  # contiguous, and strided
        for sink, recent in ((0, 0), (3, 0), (0, 5), (2, 9), (70, 1)):
            want = torch.zeros_like(rows)
            for b, row in enumerate(rows):
                kept = row.nonzero().flatten().tolist()
                want[b, kept[:sink] + kept[max(0, len(kept) - recent) :]] = True
            assert torch.equal(reference.forced_mask(rows.shape[1], sink, recent, rows), want)
