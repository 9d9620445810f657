"""The CPU fast path (adamas.cpu) against the reference: equal codes and distances, equal selections up to ties."""

import pytest
import torch
from helpers import CUDA, assert_close, dtypes, randn, random_codes, seeded

import adamas
from adamas import cpu, cpu_decode, reference

pytestmark = pytest.mark.skipif(CUDA, reason="adamas.cpu runs on CPU tensors; the GPU runs the Triton kernels")

# (B, Hq, Hkv, L, d): GQA groups 1, 3, 4 and 7, batch 1 and 2, L = 1 and L off every word size, d 16 to 256
CASES = [
    (1, 9, 3, 1000, 64),
    (2, 8, 2, 67, 16),
    (2, 4, 4, 1, 128),
    (1, 14, 2, 257, 256),
    (2, 3, 3, 130, 32),
    (1, 7, 1, 33, 64),
]
BUDGETS = [1, 50, 4096]  # one token, some, every token


def case_id(case: tuple[int, ...]) -> str:
    b, hq, hkv, length, d = case
    return f"B{b}-Hq{hq}-Hkv{hkv}-L{length}-d{d}"


cases = pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])


def codes_for(case, *parts):
    b, hq, hkv, length, d = case
    gen = seeded("cpu", case, *parts)
    return random_codes(b, hq, d // 4, gen=gen), random_codes(b, hkv, length, d // 4, gen=gen)


def padding(batch: int, length: int) -> torch.Tensor:
    """Row 0: a static cache's unwritten tail; row 1: left padding with a hole (then all valid)."""
    valid = torch.ones(batch, length, dtype=torch.bool)
    valid[0, max(1, length * 2 // 3) :] = False
    if batch > 1:
        valid[1, : length // 2] = False
        valid[1, length // 2 + 3 : length // 2 + 4] = False
    return valid


def reference_selection(q_codes, k_codes, budget, sink=0, recent=0, valid=None):
    """What ops' reference path selects: (indices with -1 for padding, the marked distances)."""
    dist = reference.mark_forced(reference.manhattan(q_codes, k_codes), sink, recent, valid)
    idx = reference.select(dist, budget)
    return (reference.drop_excluded(idx, dist) if valid is not None else idx), dist


def chosen_distances(idx: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """The sorted distances of the chosen tokens, an empty slot (-1) counted as -2: [B, Hq, K]."""
    return torch.where(idx >= 0, dist.gather(-1, idx.clamp(min=0)), -2).sort(dim=-1).values


def assert_same_choice(got: torch.Tensor, want: torch.Tensor, dist: torch.Tensor) -> None:
    """Same shape, no repeats, and the same multiset of distances per row (ties may break either way)."""
    assert got.dtype == torch.int64 and got.shape == want.shape, (got.dtype, tuple(got.shape), tuple(want.shape))
    real = got.sort(dim=-1).values
    assert not ((real.diff(dim=-1) == 0) & (real[..., 1:] >= 0)).any(), "an index repeats"
    differ = (chosen_distances(got, dist) != chosen_distances(want, dist)).any(dim=-1)
    assert not differ.any(), f"{int(differ.sum())} rows differ, first {differ.nonzero()[0].tolist()}"


@cases
def test_manhattan_equals_the_reference(case):
    q_codes, k_codes = codes_for(case, "manhattan")
    got = cpu.manhattan(q_codes, k_codes)
    assert got.dtype == torch.int32
    assert torch.equal(got, reference.manhattan(q_codes, k_codes))


@cases
@pytest.mark.parametrize("budget", BUDGETS)
def test_select_takes_a_smallest_set(case, budget):
    q_codes, k_codes = codes_for(case, "select", budget)
    dist = reference.manhattan(q_codes, k_codes)
    assert_same_choice(cpu.select(dist, budget), reference.select(dist, budget), dist)


@cases
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize(("sink", "recent"), [(0, 0), (3, 0), (0, 5), (2, 7)], ids=lambda v: str(v))
@pytest.mark.parametrize("with_valid", [False, True], ids=["no-mask", "padded"])
def test_nearest_matches_the_reference_path(case, budget, sink, recent, with_valid):
    q_codes, k_codes = codes_for(case, "nearest", budget, sink, recent, with_valid)
    before = q_codes.clone(), k_codes.clone()
    valid = padding(case[0], case[3]) if with_valid else None
    got = cpu.nearest(q_codes, k_codes, budget, sink, recent, valid)
    want, dist = reference_selection(q_codes, k_codes, budget, sink, recent, valid)
    assert_same_choice(got, want, dist)
    assert torch.equal(q_codes, before[0]) and torch.equal(k_codes, before[1]), "nearest wrote into its inputs"
    planes = cpu.bit_planes(k_codes), cpu.bit_planes(q_codes[:, :, None])[..., 0]  # as a cache and query_planes give
    assert torch.equal(cpu.nearest(q_codes, k_codes, budget, sink, recent, valid, *planes), got)
    assert torch.equal(cpu.nearest(None, k_codes, budget, sink, recent, valid, *planes), got)


def test_nearest_leaves_empty_slots_when_too_few_tokens_are_valid():
    q_codes, k_codes = codes_for((2, 6, 2, 40, 64), "few-valid")
    valid = torch.zeros(2, 40, dtype=torch.bool)
    valid[0, :5] = True  # 5 written slots of 40
    valid[1, 30:] = True  # 10 real tokens after left padding
    idx = cpu.nearest(q_codes, k_codes, 16, sink=1, recent=2, valid=valid)
    assert idx.shape == (2, 6, 16)
    assert ((idx >= 0).sum(-1) == torch.tensor([5, 10])[:, None]).all(), "every valid token, then -1"
    assert set(idx[0].flatten().tolist()) == {-1, 0, 1, 2, 3, 4}
    assert set(idx[1].flatten().tolist()) == {-1, *range(30, 40)}


@dtypes
@pytest.mark.parametrize("shape", [(1, 9, 64), (2, 3, 7, 64), (2, 4, 16), (1, 2, 3, 256)], ids=str)
@pytest.mark.parametrize("per_head", [False, True], ids=["paper", "per-head"])
def test_encode_equals_the_reference(shape, dtype, per_head):
    gen = seeded("encode", shape, dtype, per_head)
    x = randn(*shape, gen=gen, dtype=dtype, std=8.0)
    edges = torch.randn(shape[1], 3, generator=gen).sort(dim=-1).values if per_head else (-10.0, 0.0, 10.0)
    assert torch.equal(cpu.encode(x, edges), reference.encode(x, edges))


@pytest.mark.parametrize(
    "shape", [(1, 3, 1, 64), (2, 3, 3, 64), (2, 4, 16), (1, 2, 5, 32), (1, 2, 2, 128), (1, 1, 256)], ids=str
)
def test_query_planes_are_the_bit_planes_of_the_codes(shape):
    gen = seeded("encode-planes", shape)
    x = randn(*shape, gen=gen, dtype=torch.float32, std=8.0)
    edges = torch.randn(shape[1], 3, generator=gen).sort(dim=-1).values
    codes = reference.encode(x, edges)
    tokens = codes if codes.ndim == 4 else codes[:, :, None]  # bit_planes takes [B, H, N, d // 4]
    planes = cpu.query_planes(x, edges)
    assert torch.equal(planes, cpu.bit_planes(tokens).transpose(-1, -2).reshape(planes.shape))


@dtypes
@cases
@pytest.mark.parametrize("layout", ["contiguous", "sliced", "token-major"])
def test_sparse_attention_equals_the_reference(case, dtype, layout):
    b, hq, hkv, length, d = case
    gen = seeded("sparse", case, dtype, layout)
    q = randn(b, hq, d, gen=gen, dtype=dtype)
    k, v = (randn(b, length + 3, hkv, d, gen=gen, dtype=dtype).transpose(1, 2) for _ in range(2))
    if layout == "contiguous":
        k, v = k[:, :, :length].contiguous(), v[:, :, :length].contiguous()
    elif layout == "sliced":  # a slice of a larger buffer, as a growing or fixed-capacity cache hands out
        k, v = k.contiguous()[:, :, :length], v.contiguous()[:, :, :length]
    else:  # rows of one token's heads side by side: no common row stride, indexed element-wise
        k, v = k[:, :, :length], v[:, :, :length]
    q_codes, k_codes = codes_for(case, "sparse-codes", dtype, layout)
    idx = cpu.nearest(q_codes, k_codes, 50, valid=padding(b, length))  # empty slots where few are valid
    assert_close(
        "sparse_attention",
        cpu.sparse_attention(q, k, v, idx, d**-0.5),
        reference.sparse_attention(q, k, v, idx, d**-0.5),
        dtype,
    )


@dtypes
@pytest.mark.parametrize("masked", [False, True], ids=["all", "masked"])
def test_dense_attention_equals_the_reference(dtype, masked):
    gen = seeded("dense", dtype, masked)
    q, k, v = randn(2, 8, 64, gen=gen, dtype=dtype), *(randn(2, 2, 70, 64, gen=gen, dtype=dtype) for _ in range(2))
    valid = padding(2, 70) if masked else None
    want = reference.dense_attention(q, k, v, 0.125, valid)
    assert_close("dense_attention", cpu.dense_attention(q, k, v, 0.125, valid), want, dtype)


def test_auto_runs_this_module_on_cpu_tensors_and_cpu_refuses_other_devices(monkeypatch):
    """fp16 K/V take this module's stages; fp32 ones the compiled step (adamas.cpu_decode), where numba is installed."""
    calls = {"stages": 0, "compiled": 0}
    real, real_step = cpu.nearest, cpu_decode.decode_step

    def stages(*args, **kwargs):
        calls["stages"] += 1
        return real(*args, **kwargs)

    def compiled(*args, **kwargs):
        calls["compiled"] += 1
        return real_step(*args, **kwargs)

    monkeypatch.setattr(cpu, "nearest", stages)
    monkeypatch.setattr(cpu_decode, "decode_step", compiled)
    _, k_codes = codes_for((1, 2, 1, 10, 64), "dispatch")
    q, k = torch.randn(1, 2, 64), torch.randn(1, 1, 10, 64)
    config = adamas.AdamasConfig(budget=2, thresholds="paper", dense_layers=(), sink=0, recent=0)
    adamas.decode_attention(q.half(), k.half(), k.half(), k_codes, config)
    assert calls == {"stages": 1, "compiled": 0}, "the auto backend did not take adamas.cpu for fp16"
    adamas.decode_attention(q, k, k, k_codes, config)
    expected = {"stages": 1, "compiled": 1} if cpu_decode.available() else {"stages": 2, "compiled": 0}
    assert calls == expected, "the auto backend did not take the compiled step for fp32"
    with pytest.raises(ValueError, match="backend='cpu' needs CPU tensors"):
        adamas.hadamard(torch.zeros(2, 64, device="meta"), backend="cpu")
