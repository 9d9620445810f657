"""The compiled CPU decode step (adamas.cpu_decode) against the reference: equal codes, the same tokens, equal outputs.

Selections are compared exactly with the reference's stable ranking (forced tokens first, then by distance,
ties to the earliest token): each head's tokens in increasing order, then its empty slots (-1). Keys and
queries are drawn so that their Hadamard transforms stay a tenth of a bucket or more from every edge: the
compiled fast transform and the reference's matrix product round differently, and only a value within
rounding of an edge could fall into another bucket.
"""

import functools

import pytest
import torch
from helpers import assert_close, seeded, shape_id

from adamas import cpu_decode, reference

pytestmark = pytest.mark.skipif(not cpu_decode.available(), reason="the compiled CPU step needs numba (not installed)")

# (B, Hq, Hkv, L, d): GQA groups 1, 3, 4 and 8, batch 1 and 3, L = 1 and L off every size, d = 16 (uint32
# words), 32 (one uint64 word: an odd count), 64 and 128
CASES = [
    (1, 1, 1, 1, 64),
    (3, 3, 1, 67, 16),
    (1, 4, 1, 130, 32),
    (3, 8, 1, 130, 128),
    (1, 4, 4, 1000, 64),
    (1, 8, 2, 1000, 16),
    (3, 6, 2, 67, 32),
]
BUDGETS = [1, 50, 4096]  # one token, some, every token
FORCED = [(0, 0), (4, 32), (48, 96)]  # none, the usual, more than the shorter contexts hold
MASKS = ["all", "prefix", "left-padded", "holes", "few-valid"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp64": torch.float64}
EDGES = (-1.0, 0.0, 1.0)
"""The three-float thresholds; per-head ones are a centre and width per KV head (head_edges)."""

cases = pytest.mark.parametrize("case", CASES, ids=[shape_id(c) for c in CASES])
dtypes = pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
per_head = pytest.mark.parametrize("per_head", [True, False], ids=["per-head", "three-floats"])


def head_edges(hkv: int, per_head: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Each KV head's bucket width and centre: [Hkv] each, unlike from head to head, or those of EDGES for all."""
    if not per_head:
        return torch.ones(hkv), torch.zeros(hkv)
    heads = torch.arange(hkv)
    return torch.tensor([0.5, 1.0, 2.0, 0.75])[heads % 4], 0.25 * (heads % 3 - 1)


def edges_of(width: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Per-head thresholds centre + width * (-1, 0, 1): fp32 [Hkv, 3], as calibrate gives them."""
    return (centre[:, None] + width[:, None] * torch.tensor(EDGES)).float()


def off_the_edges(gen, shape, width, centre, dtype) -> torch.Tensor:
    """Vectors of `shape` (heads at dim 1) whose Hadamard transform lies inside a bucket of their head's edges.

    Each transformed value is a bucket's middle (centre + width * (-1.5, -0.5, 0.5, 1.5)) moved by less than
    0.4 * width; the transform is its own inverse, so transforming these values back gives the vectors.
    """
    heads = (1, -1) + (1,) * (len(shape) - 2)
    middle = torch.randint(0, 4, shape, generator=gen) - 1.5
    jitter = (torch.rand(shape, generator=gen, dtype=torch.float64) - 0.5) * 0.8
    y = centre.view(heads).double() + width.view(heads).double() * (middle + jitter)
    return reference.hadamard(y).to(dtype)


def queries(gen, b: int, hq: int, hkv: int, d: int, per_head: bool, dtype) -> torch.Tensor:
    """q [B, Hq, d] off the edges of each query head's KV head (h // (Hq // Hkv))."""
    width, centre = head_edges(hkv, per_head)
    group = hq // hkv
    return off_the_edges(gen, (b, hq, d), width.repeat_interleave(group), centre.repeat_interleave(group), dtype)


def make_inputs(case, dtype, per_head, *parts):
    """(q [B, Hq, d], k and v [B, Hkv, L, d] in dtype, k's codes [B, Hkv, L, d // 4], thresholds), seeded by parts."""
    b, hq, hkv, length, d = case
    gen = seeded("cpu-decode", case, dtype, per_head, *parts)
    width, centre = head_edges(hkv, per_head)
    q = queries(gen, b, hq, hkv, d, per_head, dtype)
    k = off_the_edges(gen, (b, hkv, length, d), width, centre, dtype)
    v = torch.randn(b, hkv, length, d, generator=gen, dtype=torch.float64).to(dtype)
    thresholds = edges_of(width, centre) if per_head else EDGES
    return q, k, v, reference.encode(k, thresholds), thresholds


@functools.cache
def case_inputs(case: tuple[int, ...]):
    """make_inputs in fp32 with per-head thresholds, drawn once per case: budgets, forced tokens and masks vary."""
    return make_inputs(case, torch.float32, True)


def valid_tokens(kind: str, batch: int, length: int, gen: torch.Generator) -> torch.Tensor | None:
    """[B, L] bool, or None for "all": a fixed cache's written slots ("prefix"), left padding, random holes,
    or "few-valid": three scattered tokens in each row, and row 1 only its last five."""
    if kind == "all":
        return None
    valid = torch.ones(batch, length, dtype=torch.bool)
    if kind == "prefix":
        valid[:, max(1, length * 2 // 3) :] = False
    elif kind == "left-padded":
        for row in range(batch):
            valid[row, : length * (row + 1) // 4] = False
    elif kind == "holes":
        valid = torch.rand(batch, length, generator=gen) > 0.3
        valid[:, -1] = True  # the newest token is always there
    else:
        valid.zero_()
        valid[:, [min(2, length - 1), length // 2, length - 1]] = True
        if batch > 1:
            valid[1] = False
            valid[1, -5:] = True
    return valid


def reference_selection(q, k_codes, thresholds, budget, sink, recent, valid=None):
    """(the reference's choice as decode_step lists it: [B, Hq, K], the marked distances [B, Hq, L])."""
    hq, hkv = q.shape[1], k_codes.shape[1]
    edges = thresholds.repeat_interleave(hq // hkv, 0) if isinstance(thresholds, torch.Tensor) else thresholds
    dist = reference.mark_forced(reference.manhattan(reference.encode(q, edges), k_codes), sink, recent, valid)
    length = dist.shape[-1]
    idx = torch.sort(dist, dim=-1, stable=True).indices[..., : min(budget, length)]  # by (distance, token)
    if valid is not None:
        idx = reference.drop_excluded(idx, dist)
    listed = torch.where(idx < 0, length, idx).sort(dim=-1).values  # tokens ascending, empty slots last
    return listed.masked_fill(listed == length, -1), dist


def assert_same_codes(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Equal packed codes, else how many bytes differ."""
    wrong = int((got != want).sum())
    assert wrong == 0, f"{what}: {wrong} of {want.numel()} code bytes differ"


def describe_difference(got: torch.Tensor, want: torch.Tensor) -> str:
    """How many heads' selections differ, and the first difference: idx [B, Hq, K] each."""
    differ = (got != want).any(dim=-1)  # [B, Hq]
    b, h = differ.nonzero()[0].tolist()
    at = int((got[b, h] != want[b, h]).nonzero()[0])
    return (
        f"{int(differ.sum())} of {differ.numel()} heads differ; batch {b} head {h} from slot {at}: "
        f"got {got[b, h, at : at + 8].tolist()}, want {want[b, h, at : at + 8].tolist()}"
    )


def assert_step_matches(got, q, k, v, k_codes, thresholds, budget, sink, recent, scale, valid=None) -> torch.Tensor:
    """decode_step's (out, idx) are the reference's selection and its attention; returns the distances."""
    out, idx = got
    want, dist = reference_selection(q, k_codes, thresholds, budget, sink, recent, valid)
    assert idx.dtype == torch.int64 and idx.shape == want.shape, (idx.dtype, tuple(idx.shape), tuple(want.shape))
    assert torch.equal(idx, want), describe_difference(idx, want)
    assert out.dtype == q.dtype, out.dtype
    assert_close("out", out, reference.sparse_attention(q, k, v, want, scale), q.dtype)
    return dist


@cases
@pytest.mark.parametrize("budget", BUDGETS, ids=lambda n: f"budget{n}")
@pytest.mark.parametrize(("sink", "recent"), FORCED, ids=[f"sink{s}-recent{r}" for s, r in FORCED])
@pytest.mark.parametrize("mask", MASKS)
def test_decode_step_selects_and_attends_as_the_reference(case, budget, sink, recent, mask):
    q, k, v, k_codes, thresholds = case_inputs(case)
    valid = valid_tokens(mask, case[0], case[3], seeded("mask", case, mask))
    got = cpu_decode.decode_step(q, k, v, k_codes, thresholds, budget, sink, recent, case[4] ** -0.5, valid)
    assert_step_matches(got, q, k, v, k_codes, thresholds, budget, sink, recent, case[4] ** -0.5, valid)


@cases
@dtypes
@per_head
def test_decode_step_reads_each_dtype_under_either_kind_of_thresholds(case, dtype, per_head):
    q, k, v, k_codes, thresholds = make_inputs(case, dtype, per_head)
    valid = valid_tokens("holes", case[0], case[3], seeded("mask", case, dtype))
    inputs = [x.clone() for x in (q, k, v, k_codes)]
    got = cpu_decode.decode_step(q, k, v, k_codes, thresholds, 50, 4, 32, case[4] ** -0.5, valid)
    assert_step_matches(got, q, k, v, k_codes, thresholds, 50, 4, 32, case[4] ** -0.5, valid)
    assert all(map(torch.equal, (q, k, v, k_codes), inputs)), "the step wrote into its inputs"


@pytest.mark.parametrize("d", [16, 128], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("budget", [1, 40, 333], ids=lambda n: f"budget{n}")
@pytest.mark.parametrize("mask", ["all", "holes"])
def test_decode_step_breaks_ties_toward_the_earliest_token(d, budget, mask):
    gen = seeded("ties", d, budget, mask)
    palette = off_the_edges(gen, (3, 1, d), *head_edges(1, False), torch.float32)[:, 0]  # [3, d]
    k = palette[torch.randint(0, 3, (2, 2, 600), generator=gen)]  # [2, 2, 600, d]: three distinct keys
    v = torch.randn(2, 2, 600, d, generator=gen)
    q = queries(gen, 2, 4, 2, d, False, torch.float32)
    k_codes, valid = reference.encode(k, EDGES), valid_tokens(mask, 2, 600, gen)
    got = cpu_decode.decode_step(q, k, v, k_codes, EDGES, budget, 2, 3, d**-0.5, valid)
    dist = assert_step_matches(got, q, k, v, k_codes, EDGES, budget, 2, 3, d**-0.5, valid)
    ranked = dist.sort(dim=-1).values
    assert (ranked[..., budget - 1] == ranked[..., budget]).all(), "every head should tie across the budget's edge"


@pytest.mark.parametrize("case", [(3, 6, 2, 130, 16), (1, 4, 1, 67, 128)], ids=shape_id)
@dtypes
@per_head
def test_decode_step_writes_the_codes_of_encode_at_before_scoring(case, dtype, per_head):
    q, k, v, k_codes, thresholds = make_inputs(case, dtype, per_head, "encode-at")
    length = case[3]
    at = torch.tensor([0, length // 2, length - 1])
    codes = k_codes.clone()
    codes[:, :, at] = ~codes[:, :, at]  # stale: every byte wrong
    got = cpu_decode.decode_step(q, k, v, codes, thresholds, 50, 4, 32, case[4] ** -0.5, None, at)
    assert_same_codes(codes, k_codes, "after encode_at")
    assert_step_matches(got, q, k, v, k_codes, thresholds, 50, 4, 32, case[4] ** -0.5)


@dtypes
def test_decode_step_writes_codes_and_selects_under_a_mask_with_holes(dtype):
    case = (3, 6, 2, 130, 32)
    q, k, v, k_codes, thresholds = make_inputs(case, dtype, True, "kernels")
    at, valid = torch.tensor([3, 129]), valid_tokens("holes", 3, 130, seeded("kernels", dtype))
    codes = k_codes.clone()
    codes[:, :, at] = ~codes[:, :, at]
    got = cpu_decode.decode_step(q, k, v, codes, thresholds, 50, 4, 32, 32**-0.5, valid, at)
    assert_same_codes(codes, k_codes, "after encode_at")
    assert_step_matches(got, q, k, v, k_codes, thresholds, 50, 4, 32, 32**-0.5, valid)


@pytest.mark.parametrize("d", [16, 32, 64, 128], ids=lambda d: f"d{d}")
@dtypes
@per_head
def test_encode_rows_writes_the_reference_codes_in_place(d, dtype, per_head):
    _, k, _, k_codes, thresholds = make_inputs((3, 4, 2, 67, d), dtype, per_head, "encode-rows")
    at = torch.tensor([66, 0, 5, 40])
    codes = k_codes.clone()
    codes[:, :, at] = ~codes[:, :, at]
    cpu_decode.encode_rows(k, codes, thresholds, at)
    assert_same_codes(codes[:, :, at], reference.encode(k[:, :, at], thresholds), "at the positions")
    assert_same_codes(codes, k_codes, "anywhere")


@per_head
@pytest.mark.parametrize("path", ["encode_rows", "encode_at"])
def test_fp64_keys_are_encoded_in_fp64(per_head, path):
    """Keys whose transform lies 1e-9 above an edge: in fp64 above it, in fp32 rounded onto it or below."""
    gen = seeded("fp64-edges", per_head, path)
    width, centre = head_edges(2, per_head)
    thresholds = edges_of(width, centre) if per_head else EDGES
    edges = edges_of(width, centre).double()  # [Hkv, 3]: equal to thresholds either way
    y = edges[torch.arange(2)[:, None, None], torch.randint(0, 3, (2, 40, 16), generator=gen)] + 1e-9
    k = reference.hadamard(y[None])  # [1, 2, 40, 16] fp64
    codes, at = torch.zeros(1, 2, 40, 4, dtype=torch.uint8), torch.arange(40)
    if path == "encode_rows":
        cpu_decode.encode_rows(k, codes, thresholds, at)
    else:
        cpu_decode.decode_step(k[:, :, 0], k, k, codes, thresholds, 4, 0, 0, 0.25, None, at)
    assert_same_codes(codes, reference.encode(k, thresholds), path)


def test_decode_step_on_gaussian_fp64_inputs_with_calibrated_thresholds():
    """Unshaped inputs: in fp64 the two transforms' rounding (1e-16) moves no value across an edge."""
    b, hq, hkv, length, d = 3, 8, 2, 1000, 128
    gen = seeded("gaussian")
    q = torch.randn(b, hq, d, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(b, hkv, length, d, generator=gen, dtype=torch.float64) for _ in range(2))
    thresholds = reference.calibrate(k, (0.25, 0.5, 0.75))
    k_codes, at = reference.encode(k, thresholds), torch.tensor([length - 1])
    codes = k_codes.clone()
    codes[:, :, at] = ~codes[:, :, at]
    valid = valid_tokens("holes", b, length, gen)
    got = cpu_decode.decode_step(q, k, v, codes, thresholds, 100, 4, 32, d**-0.5, valid, at)
    assert_same_codes(codes, k_codes, "the new key's")
    assert_step_matches(got, q, k, v, k_codes, thresholds, 100, 4, 32, d**-0.5, valid)


@dtypes
@pytest.mark.parametrize("mask", ["all", "left-padded", "holes"])
def test_layer_buffers_step_over_the_written_part_of_a_larger_buffer(dtype, mask):
    """A cache's life: buffers of capacity C made once, tokens written in chunks, each step over the first L < C."""
    b, hq, hkv, capacity, d = 3, 8, 2, 160, 32
    _, keys, values, all_codes, thresholds = make_inputs((b, hq, hkv, capacity, d), dtype, True, "buffers", mask)
    k, v = torch.full_like(keys, float("nan")), torch.full_like(values, float("nan"))  # a read past L shows
    codes = ~all_codes  # stale everywhere
    buffers = cpu_decode.LayerBuffers(k, v, codes, thresholds)
    start = 0
    for length in (1, 67, 130, 159):
        k[:, :, start:length], v[:, :, start:length] = keys[:, :, start:length], values[:, :, start:length]
        gen = seeded("buffers", dtype, mask, length)
        q = queries(gen, b, hq, hkv, d, True, dtype)
        valid = valid_tokens(mask, b, length, gen)
        got = buffers.step(q, 50, 4, 32, d**-0.5, valid, torch.arange(start, length), length)
        assert_same_codes(codes[:, :, :length], all_codes[:, :, :length], f"L={length}, the first L")
        assert_same_codes(codes[:, :, length:], ~all_codes[:, :, length:], f"L={length}, past L (stale)")
        step = q, k[:, :, :length], v[:, :, :length], all_codes[:, :, :length], thresholds
        assert_step_matches(got, *step, 50, 4, 32, d**-0.5, valid)
        start = length


def test_decode_step_reads_slices_of_larger_buffers():
    """decode_step on views [:, :, :L] of buffers [B, Hkv, C, ...], as a cache hands them out."""
    b, hq, hkv, capacity, d, length = 3, 4, 2, 100, 64, 67
    q, k, v, k_codes, thresholds = make_inputs((b, hq, hkv, capacity, d), torch.bfloat16, True, "slices")
    k, v, k_codes = (x[:, :, :length] for x in (k, v, k_codes))
    got = cpu_decode.decode_step(q, k, v, k_codes, thresholds, 20, 1, 4, d**-0.5)
    assert_step_matches(got, q, k, v, k_codes, thresholds, 20, 1, 4, d**-0.5)


def test_layer_buffers_read_the_thresholds_in_place():
    """A cache refits its edges with copy_: the next step encodes its query and keys under the new ones."""
    b, hq, hkv, length, d = 2, 6, 3, 130, 64
    q, k, v, k_codes, thresholds = make_inputs((b, hq, hkv, length, d), torch.float32, True, "refit")
    codes = k_codes.clone()
    buffers = cpu_decode.LayerBuffers(k, v, codes, thresholds)
    assert_step_matches(buffers.step(q, 40, 2, 8, d**-0.5), q, k, v, k_codes, thresholds, 40, 2, 8, d**-0.5)
    width, centre = head_edges(hkv)
    thresholds.copy_(edges_of(2 * width, centre))  # wider buckets: the values stay off the new edges too
    new_codes = reference.encode(k, thresholds)
    assert not torch.equal(new_codes, k_codes), "the new edges should change the codes"
    buffers.encode(torch.arange(length // 2))
    got = buffers.step(q, 40, 2, 8, d**-0.5, None, torch.arange(length // 2, length))
    assert_same_codes(codes, new_codes, "under the new edges")
    assert_step_matches(got, q, k, v, new_codes, thresholds, 40, 2, 8, d**-0.5)


def test_supports_names_the_dtypes_read_in_place():
    x = torch.zeros(1, 1, 2, 16)
    assert all(cpu_decode.supports(x.to(dtype), x.to(dtype)) for dtype in DTYPES.values())
    assert not cpu_decode.supports(x.half(), x.half()), "fp16 has no compiled path"
    assert not cpu_decode.supports(x, x.double()), "K and V must share a dtype"


def test_codes_that_cannot_be_written_in_place_are_refused_for_encode_at():
    """Token-major codes [B, L, Hkv, d // 4] seen as [B, Hkv, L, d // 4] are read through a copy: writing into
    the copy would lose the codes, so encode_at refuses them by name, and scoring alone still runs."""
    gen = seeded("token-major")
    k = torch.randn(1, 2, 10, 64, generator=gen)
    codes = reference.encode(k, EDGES).transpose(1, 2).contiguous().transpose(1, 2)  # [1, 2, 10, 16], token-major
    q = torch.randn(1, 4, 64, generator=gen)
    with pytest.raises(ValueError, match="k_codes' rows lie on no common stride"):
        cpu_decode.decode_step(q, k, k, codes, EDGES, 4, 0, 0, 0.125, encode_at=torch.tensor([9]))
    with pytest.raises(ValueError, match="k_codes' rows lie on no common stride"):
        cpu_decode.encode_rows(k, codes, EDGES, torch.tensor([9]))
    out, idx = cpu_decode.decode_step(q, k, k, codes, EDGES, 4, 0, 0, 0.125)
    assert idx.shape == (1, 4, 4) and out.shape == (1, 4, 64)
