"""The fused append: a fixed cache's new K and V rows at their slots, and the new keys' codes, in one kernel."""

import pytest
import torch
from helpers import DEVICE, TOL, randn, seeded

from adamas import kernels, reference

# (B, H, C, T, d): one decode token; a prefill chunk over several blocks of tokens, d 128; d 16
CASES = [(2, 3, 50, 1, 64), (1, 2, 90, 37, 128), (3, 1, 20, 5, 16)]


def case_id(case):
    b, h, c, t, d = case
    return f"B{b}-H{h}-C{c}-T{t}-d{d}"


def nan_cache(b, h, c, d, dtype):
    """Buffers full of NaN (and code bytes of 0xAB): any slot the kernel should not write keeps them."""
    keys = torch.full((b, h, c, d), float("nan"), dtype=dtype, device=DEVICE)
    codes = torch.full((b, h, c, d // 4), 0xAB, dtype=torch.uint8, device=DEVICE)
    return keys, keys.clone(), codes


def assert_codes_near(got: torch.Tensor, keys: torch.Tensor, thresholds) -> None:
    """got are reference.encode(keys)'s codes, but where summation order decides a value sitting on an edge."""
    want = reference.unpack(reference.encode(keys, thresholds))
    y = reference.hadamard(keys.float())
    edges = thresholds if isinstance(thresholds, torch.Tensor) else torch.tensor(thresholds, device=keys.device)
    spread = edges.view(1, -1, 1, 1, 3) if edges.ndim == 2 else edges.view(1, 1, 1, 1, 3)
    near = ((y[..., None] - spread).abs() <= 4 * TOL[torch.float32] * (1 + spread.abs())).any(-1)
    differ = (reference.unpack(got) != want) & ~near
    assert not differ.any(), f"{int(differ.sum())} codes differ from the reference's"


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("per_head", [False, True], ids=["paper-edges", "per-head-edges"])
def test_append_writes_rows_and_codes_at_their_slots_only(case, dtype, per_head):
    b, h, c, t, d = case
    gen = seeded("append", case, dtype, per_head)
    keys, values, codes = nan_cache(b, h, c, d, dtype)
    new_k = randn(b, h, t, d, gen=gen, dtype=dtype, std=8.0)
    # values as a projection's output reaches the cache: [B, T, H, d] seen as [B, H, T, d]
    new_v = randn(b, t, h, d, gen=gen, dtype=dtype).transpose(1, 2)
    slots = torch.randperm(c, generator=gen)[:t].to(DEVICE)  # distinct slots in no order
    thresholds = torch.sort(torch.randn(h, 3, generator=gen) * 4, dim=1).values.to(DEVICE) if per_head else (
        -10.0, 0.0, 10.0)  # fmt: skip
    kernels.append(keys, values, new_k, new_v, slots, codes, thresholds)
    assert torch.equal(keys[:, :, slots], new_k) and torch.equal(values[:, :, slots], new_v)
    others = torch.ones(c, dtype=torch.bool, device=DEVICE)
    others[slots] = False
    assert keys[:, :, others].isnan().all() and values[:, :, others].isnan().all(), "a slot off the list was written"
    assert (codes[:, :, others] == 0xAB).all(), "a code off the list was written"
    assert_codes_near(codes[:, :, slots], new_k, thresholds)


def test_append_without_codes_leaves_them_alone():
    gen = seeded("append-dense")
    keys, values, codes = nan_cache(1, 2, 30, 64, torch.float32)
    new_k, new_v = randn(1, 2, 1, 64, gen=gen), randn(1, 2, 1, 64, gen=gen)
    slot = torch.tensor([29], device=DEVICE)
    kernels.append(keys, values, new_k, new_v, slot)
    assert torch.equal(keys[:, :, 29:], new_k) and torch.equal(values[:, :, 29:], new_v)
    assert keys[:, :, :29].isnan().all() and (codes == 0xAB).all()
