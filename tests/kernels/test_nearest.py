"""Fused nearest (manhattan + select) against the reference stages and the two-kernel path: the same sets."""

import pytest
import torch
from helpers import CUDA, DEVICE, random_codes, seeded

from adamas import kernels, reference
from adamas.kernels import scan_select

# (B, Hq, Hkv, L, d): GQA groups 1, 4 and 7, batch 1 to 3, L = 1 and L off every block, d 16 to 256
CASES = [
    (1, 4, 1, 300, 64),
    (3, 8, 2, 1000, 128),
    (2, 7, 1, 67, 16),
    (2, 4, 4, 1, 64),
    (1, 14, 2, 257, 256),
    (2, 3, 3, 130, 32),
]
BUDGETS = [1, 100, 4096]  # one token, a few chunks' worth, every token
FORCED_BUDGETS = [4, 150]  # fewer than the forced tokens allow, and every token
if CUDA:  # the GPU runs the same cases plus real lengths and budgets between (the interpreter is slow)
    CASES += [(1, 32, 8, 32_771, 128), (3, 28, 4, 8_191, 128)]
    BUDGETS += [16]
    FORCED_BUDGETS += [20]


def case_id(case: tuple[int, ...]) -> str:
    b, hq, hkv, length, d = case
    return f"B{b}-Hq{hq}-Hkv{hkv}-L{length}-d{d}"


@pytest.fixture(params=["default-blocks", "small-blocks"])
def blocks(request) -> scan_select.NearestLaunch:
    """The launch parameters as shipped, or shrunk so that small inputs span many chunks and loop steps."""
    if request.param == "small-blocks":
        return scan_select.NearestLaunch(block_l=32, max_chunks=8, split_block=64, finish_block=32)
    return scan_select.NearestLaunch()


def expected_sets(q_codes, k_codes, budget, sink=0, recent=0, valid=None) -> torch.Tensor:
    """The reference's choice with ties to the earliest tokens, -1 for padding, each row sorted."""
    dist = reference.mark_forced(reference.manhattan(q_codes, k_codes), sink, recent, valid)
    k = min(budget, dist.shape[-1])
    idx = torch.sort(dist, dim=-1, stable=True).indices[..., :k]  # by (distance, token)
    idx = reference.drop_excluded(idx, dist) if valid is not None else idx
    return idx.sort(dim=-1).values


def two_kernel_sets(q_codes, k_codes, budget, sink=0, recent=0, valid=None) -> torch.Tensor:
    """What the GPU path did before the fusion: kernels.manhattan, then kernels.select."""
    dist = reference.mark_forced(kernels.manhattan(q_codes, k_codes), sink, recent, valid)
    idx = kernels.select(dist, budget, 3 * 4 * q_codes.shape[-1])
    idx = reference.drop_excluded(idx, dist) if valid is not None else idx
    return idx.sort(dim=-1).values


def assert_same_sets(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == torch.int64 and got.shape == want.shape, (got.dtype, tuple(got.shape), tuple(want.shape))
    got = got.sort(dim=-1).values.cpu()
    differ = (got != want.cpu()).any(dim=-1)
    assert not differ.any(), f"{int(differ.sum())} rows differ, first {differ.nonzero()[0].tolist()}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
@pytest.mark.parametrize("budget", BUDGETS)
def test_nearest_kernel(case, budget, blocks):
    b, hq, hkv, length, d = case
    gen = seeded("nearest", case, budget)
    q_codes, k_codes = random_codes(b, hq, d // 4, gen=gen), random_codes(b, hkv, length, d // 4, gen=gen)
    idx = kernels.nearest(q_codes, k_codes, budget, launch=blocks)
    assert_same_sets(idx, expected_sets(q_codes, k_codes, budget))
    assert_same_sets(idx, two_kernel_sets(q_codes, k_codes, budget))


@pytest.mark.parametrize("case", [(2, 7, 1, 67, 16), (1, 8, 2, 500, 128)], ids=case_id)
@pytest.mark.parametrize("budget", [1, 100])
@pytest.mark.parametrize("bins", [32, 128], ids=lambda n: f"{n}-bins")
def test_nearest_kernel_with_other_coarse_bins(case, budget, bins):
    """Fewer, wider bins leave more candidates to the finish (and low bits even at d = 16); more leave fewer."""
    launch = scan_select.NearestLaunch(coarse_bins=bins)
    b, hq, hkv, length, d = case
    gen = seeded("bins", bins, case, budget)
    q_codes, k_codes = random_codes(b, hq, d // 4, gen=gen), random_codes(b, hkv, length, d // 4, gen=gen)
    assert_same_sets(kernels.nearest(q_codes, k_codes, budget, launch=launch), expected_sets(q_codes, k_codes, budget))


@pytest.mark.parametrize("budget", [1, 40, 333])
def test_nearest_kernel_with_heavy_ties_takes_the_earliest_in_a_fixed_order(budget, blocks):
    gen = seeded("ties", budget)
    palette = random_codes(3, 32, gen=gen)  # three distinct keys: every distance ties hundreds of times
    k_codes = palette[torch.randint(0, 3, (2, 2, 600), generator=gen).to(DEVICE)]  # [2, 2, 600, 32]
    q_codes = random_codes(2, 4, 32, gen=gen)
    idx = kernels.nearest(q_codes, k_codes, budget, launch=blocks)
    assert_same_sets(idx, expected_sets(q_codes, k_codes, budget))
    assert torch.equal(idx, kernels.nearest(q_codes, k_codes, budget, launch=blocks)), "the order changed"


def padding(length: int) -> torch.Tensor:
    """Row 0: a static cache's unwritten tail; row 1: left padding with a hole; row 2: all valid."""
    valid = torch.ones(3, length, dtype=torch.bool)
    valid[0, length * 2 // 3 :] = False
    valid[1, : length // 2] = False
    valid[1, length // 2 + 3] = False
    return valid.to(DEVICE)


@pytest.mark.parametrize(("sink", "recent"), [(0, 0), (3, 0), (0, 5), (2, 7)], ids=lambda v: str(v))
@pytest.mark.parametrize("with_valid", [False, True], ids=["no-mask", "padded"])
@pytest.mark.parametrize("budget", FORCED_BUDGETS)
def test_nearest_kernel_keeps_forced_tokens_and_drops_padding(sink, recent, with_valid, budget, blocks):
    if sink + recent > budget:
        pytest.skip("the config forbids sink + recent > budget")
    gen = seeded("forced", sink, recent, with_valid, budget)
    length = 150
    q_codes, k_codes = random_codes(3, 8, 16, gen=gen), random_codes(3, 2, length, 16, gen=gen)
    valid = padding(length) if with_valid else None
    idx = kernels.nearest(q_codes, k_codes, budget, sink, recent, valid, launch=blocks)
    assert_same_sets(idx, expected_sets(q_codes, k_codes, budget, sink, recent, valid))
    assert_same_sets(idx, two_kernel_sets(q_codes, k_codes, budget, sink, recent, valid))
    if valid is not None:
        n_empty = (budget - valid.sum(-1)).clamp(min=0)  # [B] slots left without a valid token
        assert torch.equal((idx == -1).sum(-1), n_empty[:, None].expand(-1, 8))


def test_nearest_kernel_scan_writes_marked_int16_distances(blocks):
    gen = seeded("scan")
    q_codes, k_codes = random_codes(3, 8, 32, gen=gen), random_codes(3, 2, 150, 32, gen=gen)
    valid = padding(150)
    s = scan_select.scan_distances(q_codes, k_codes, 2, 3, valid, launch=blocks)
    want = reference.mark_forced(reference.manhattan(q_codes, k_codes), 2, 3, valid)
    want = want.masked_fill(want == reference.EXCLUDED, scan_select.EXCLUDED_16.value)
    assert s.dist.dtype == torch.int16 and torch.equal(s.dist.int(), want)
    assert (s.hist.sum(dim=(1, 2)) == 150).all(), "the histograms must count every token once"


def test_nearest_kernel_reads_a_cache_slice():
    gen = seeded("nearest-slice")
    cache = random_codes(2, 2, 300, 32, gen=gen)
    k_codes = cache[:, :, :129]  # the filled part of a preallocated code cache
    q_codes = random_codes(2, 6, 32, gen=gen)
    valid = torch.ones(2, 300, dtype=torch.bool, device=DEVICE)[:, :129]
    idx = kernels.nearest(q_codes, k_codes, 50, 1, 4, valid)
    assert_same_sets(idx, expected_sets(q_codes, k_codes, 50, 1, 4, valid))


def grouped_codes(q: torch.Tensor, hkv: int, thresholds) -> torch.Tensor:
    """The reference's codes of q [B, Hq, d] (fp64 sums), query head h under KV head h // (Hq // Hkv)'s edges."""
    b, hq, d = q.shape
    grouped = q.double().reshape(b, hkv, hq // hkv, d)  # [B, Hkv, G, d]: per-head edges index dim 1
    return reference.encode(grouped, thresholds).reshape(b, hq, d // 4)


def off_the_edges(q: torch.Tensor, thresholds) -> torch.Tensor:
    """[B, Hq] whether no value of hadamard(q) sits so near an edge that fp32 summation order could move it across."""
    hq = q.shape[1]
    edges = torch.as_tensor(thresholds, dtype=torch.float64, device=q.device)
    y = reference.hadamard(q.double())  # [B, Hq, d]
    spread = edges.repeat_interleave(hq // edges.shape[0], 0).view(1, hq, 1, 3) if edges.ndim == 2 else edges
    return ((y[..., None] - spread).abs() > 1e-4 * (1 + y[..., None].abs())).all(-1).all(-1)


QUERY_CASES = [(1, 4, 1, 300, 64), (3, 8, 2, 1000, 128), (2, 7, 1, 67, 16), (1, 14, 2, 257, 256)]


@pytest.mark.parametrize("case", QUERY_CASES, ids=[case_id(c) for c in QUERY_CASES])
@pytest.mark.parametrize("budget", [1, 100])
@pytest.mark.parametrize(
    ("per_head", "dtype"), [(False, torch.float32), (True, torch.bfloat16)], ids=["paper-fp32", "per-kv-head-bf16"]
)
def test_nearest_query_encodes_the_query_inside_the_scan(case, budget, per_head, dtype, blocks):
    b, hq, hkv, length, d = case
    gen = seeded("nearest-query", case, budget, per_head, dtype)
    q = (torch.randn(b, hq, d, generator=gen) * 8).to(DEVICE, dtype)
    thresholds = (-10.0, 0.0, 10.0)
    if per_head:
        thresholds = torch.sort(torch.randn(hkv, 3, generator=gen) * 6, dim=1).values.to(DEVICE)
    k_codes = random_codes(b, hkv, length, d // 4, gen=gen)
    idx = kernels.nearest_query(q, thresholds, k_codes, budget, launch=blocks)
    want = expected_sets(grouped_codes(q, hkv, thresholds), k_codes, budget)
    clear = off_the_edges(q, thresholds)
    assert clear.float().mean() > 0.5, "too few query heads away from the edges to compare"
    assert idx.shape == want.shape
    assert_same_sets(idx[clear], want[clear.cpu()])


@pytest.mark.parametrize(("sink", "recent"), [(0, 0), (2, 7)], ids=lambda v: str(v))
@pytest.mark.parametrize("per_row", [False, True], ids=["one-length", "a-length-a-row"])
@pytest.mark.parametrize("budget", [4, 150])
def test_nearest_with_lengths_reads_only_the_written_prefix(sink, recent, per_row, budget, blocks):
    """A fixed cache's rows: valid tokens are the first lengths[b]; what lies past them (stale codes) is never
    taken, and sink and recent count from the prefix's ends, as with the same prefix given as a mask."""
    if sink + recent > budget:
        pytest.skip("the config forbids sink + recent > budget")
    gen = seeded("lengths", sink, recent, per_row, budget)
    capacity = 150
    q_codes, k_codes = random_codes(3, 8, 16, gen=gen), random_codes(3, 2, capacity, 16, gen=gen)
    written = [97, 3, 150] if per_row else [120]
    lengths = torch.tensor(written, device=DEVICE)
    valid = (torch.arange(capacity, device=DEVICE) < lengths[:, None]).expand(3, capacity)
    idx = kernels.nearest(q_codes, k_codes, budget, sink, recent, lengths=lengths, launch=blocks)
    assert_same_sets(idx, expected_sets(q_codes, k_codes, budget, sink, recent, valid))
    assert (idx < lengths.view(-1, 1, 1)).all(), "a token past the written prefix was taken"


@pytest.mark.parametrize("case", [(1, 4, 1, 300, 64), (3, 8, 2, 1000, 128)], ids=case_id)
@pytest.mark.parametrize("budget", [1, 100])
def test_nearest_attention_attends_over_what_nearest_query_selects(case, budget, blocks):
    """The step in two kernels: the split kernel's last program per row attends over the row's selection."""
    b, hq, hkv, length, d = case
    gen = seeded("nearest-attention", case, budget)
    q = (torch.randn(b, hq, d, generator=gen) * 8).to(DEVICE)
    k = (torch.randn(b, hkv, length + 5, d, generator=gen) * 8).to(DEVICE)[:, :, :length]  # a cache's slice
    v = torch.randn(b, hkv, length, d, generator=gen).to(DEVICE)
    k_codes = reference.encode(k, (-10.0, 0.0, 10.0))
    lengths = torch.tensor([length - 7], device=DEVICE)  # the last slots unwritten
    out, idx = kernels.nearest_attention(q, (-10.0, 0.0, 10.0), k_codes, k, v, budget, d**-0.5, 2, 3, lengths=lengths)
    want = kernels.nearest_query(q, (-10.0, 0.0, 10.0), k_codes, budget, 2, 3, lengths=lengths, launch=blocks)
    assert_same_sets(idx, want.sort(-1).values.cpu())
    assert out.shape == q.shape and out.dtype == q.dtype
    expected = reference.sparse_attention(q, k, v, idx, d**-0.5)
    assert torch.allclose(out, expected, atol=1e-4, rtol=1e-4), (out - expected).abs().max()
