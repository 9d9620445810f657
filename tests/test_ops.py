"""The whole decode step on every backend, and every error path of the public API."""

import dataclasses
import importlib

import pytest
import torch
from helpers import CUDA, DEVICE, assert_close, assert_valid_selection, dtypes, randn, random_codes, seeded, shapes

import adamas
from adamas import reference
from adamas.ops import FusedSelection

BACKENDS = pytest.mark.parametrize("backend", ["torch", "triton"] if CUDA else ["torch", "cpu", "triton"])


def decode_inputs(shape, dtype, gen):
    b, hq, hkv, length, d = shape
    q = randn(b, hq, d, gen=gen, dtype=dtype, std=8.0)
    k = randn(b, hkv, length, d, gen=gen, dtype=dtype, std=8.0)
    v = randn(b, hkv, length, d, gen=gen, dtype=dtype)
    return q, k, v, adamas.encode(k, backend="torch")


@shapes
@dtypes
@BACKENDS
def test_budget_at_least_context_equals_dense(shape, dtype, backend):
    q, k, v, codes = decode_inputs(shape, dtype, seeded("full", shape, dtype, backend))
    config = adamas.AdamasConfig.paper(budget=shape[3], dense_layers=(), backend=backend)
    out = adamas.decode_attention(q, k, v, codes, config)
    assert_close("decode_attention", out, reference.dense_attention(q, k, v, shape[4] ** -0.5), dtype)


@shapes
@dtypes
@BACKENDS
@pytest.mark.parametrize("budget", [1, 16, 64])
def test_decode_selects_by_code_distance(shape, dtype, backend, budget):
    q, k, v, codes = decode_inputs(shape, dtype, seeded("sparse", shape, dtype, backend, budget))
    config = adamas.AdamasConfig.paper(budget=budget, dense_layers=(), backend=backend)
    out, idx = adamas.decode_attention(q, k, v, codes, config, return_indices=True)
    dist = reference.manhattan(reference.encode(q, config.thresholds), codes)
    assert_valid_selection(idx, dist, budget)
    assert_close("decode_attention", out, reference.sparse_attention(q, k, v, idx, shape[4] ** -0.5), dtype)


@BACKENDS
def test_decode_keeps_sink_and_recent_and_finds_a_planted_key(backend):
    gen = seeded("planted", backend)
    q, k, v, _ = decode_inputs((1, 4, 2, 300, 64), torch.float32, gen)
    k[:, :, 150] = q.view(1, 2, 2, 64)[:, :, 0] * 3  # a key aligned with the first query head of each group
    codes = adamas.encode(k, backend="torch")
    config = adamas.AdamasConfig.paper(budget=16, sink=4, recent=8, dense_layers=(), backend=backend)
    _, idx = adamas.decode_attention(q, k, v, codes, config, return_indices=True)
    for h in range(4):
        kept = set(idx[0, h].tolist())
        assert set(range(4)) | set(range(292, 300)) <= kept, f"head {h} lost a sink or recent token"
    assert 150 in set(idx[0, 0].tolist()) and 150 in set(idx[0, 2].tolist()), "the planted key was not selected"


@BACKENDS
@pytest.mark.parametrize("budget", [4, 64])
def test_decode_never_selects_padding(backend, budget):
    q, k, v, codes = decode_inputs((2, 4, 2, 40, 64), torch.float32, seeded("pad", backend, budget))
    valid = torch.ones(2, 40, dtype=torch.bool, device=DEVICE)
    valid[1, :25] = False  # a left-padded row with 15 real tokens
    config = adamas.AdamasConfig.paper(budget=budget, sink=1, dense_layers=(), backend=backend)
    out, idx = adamas.decode_attention(q, k, v, codes, config, return_indices=True, valid=valid)
    assert not ((idx[1] >= 0) & (idx[1] < 25)).any(), "a padded token was selected"
    assert (idx[1] == 25).any(dim=-1).all(), "the first real token is the sink"
    expected = reference.sparse_attention(q, k, v, idx, 64**-0.5)
    assert_close("padded decode", out, expected, torch.float32)
    if budget >= 40:
        assert_close("padded full budget", out, reference.dense_attention(q, k, v, 64**-0.5, valid), torch.float32)


@BACKENDS
@pytest.mark.parametrize("selector", ["adamas", "quest"])
def test_decode_over_a_written_prefix_given_by_lengths_is_the_masked_step(backend, selector):
    """lengths (a fixed cache's written slots, on the device) select and attend as the same prefix as a mask."""
    q, k, v, codes = decode_inputs((3, 4, 2, 120, 64), torch.float32, seeded("lengths", backend, selector))
    config = adamas.AdamasConfig.paper(budget=16, sink=2, recent=4, dense_layers=(), backend=backend)
    config = dataclasses.replace(config, selector=selector)
    lengths = torch.tensor([120, 37, 90], device=DEVICE)
    valid = torch.arange(120, device=DEVICE) < lengths[:, None]
    out, idx = adamas.decode_attention(q, k, v, codes, config, return_indices=True, lengths=lengths)
    masked, masked_idx = adamas.decode_attention(q, k, v, codes, config, return_indices=True, valid=valid)
    assert torch.equal(idx.sort(-1).values, masked_idx.sort(-1).values)
    assert_close("decode over lengths", out, masked, torch.float32)
    assert (idx < lengths.view(-1, 1, 1)).all()
    dense = dataclasses.replace(config, dense_layers=(0,))
    out = adamas.decode_attention(q, k, v, codes, dense, layer_idx=0, lengths=lengths[:1])
    expected = reference.dense_attention(q, k, v, 64**-0.5, valid[:1].expand(3, -1))
    assert_close("a dense layer over lengths", out, expected, torch.float32)
    with pytest.raises(ValueError, match="not both"):
        adamas.decode_attention(q, k, v, codes, config, valid=valid, lengths=lengths)
    with pytest.raises(ValueError, match="1 or B = 3"):
        adamas.decode_attention(q, k, v, codes, config, lengths=lengths[:2])
    with pytest.raises(TypeError, match="int32 or int64"):
        adamas.decode_attention(q, k, v, codes, config, lengths=lengths.float())


@BACKENDS
def test_decode_with_per_head_thresholds(backend):
    q, k, v, _ = decode_inputs((2, 6, 2, 90, 64), torch.float32, seeded("calibrated", backend))
    edges = adamas.calibrate(k)  # [Hkv, 3]
    codes = adamas.encode(k, edges, backend="torch")
    config = adamas.AdamasConfig.paper(budget=16, thresholds="calibrated", dense_layers=(), backend=backend)
    out, idx = adamas.decode_attention(q, k, v, codes, config, return_indices=True, thresholds=edges)
    dist = reference.manhattan(reference.encode(q, edges.repeat_interleave(3, dim=0)), codes)
    assert_valid_selection(idx, dist, 16)
    assert_close("calibrated decode", out, reference.sparse_attention(q, k, v, idx, 64**-0.5), torch.float32)
    with pytest.raises(ValueError, match="pass the keys' thresholds"):
        adamas.decode_attention(q, k, v, codes, config)


@BACKENDS
def test_dense_layers_and_the_full_selector_run_full_attention(backend):
    q, k, v, codes = decode_inputs((2, 4, 2, 100, 64), torch.float32, seeded("dense-layer", backend))
    config = adamas.AdamasConfig.paper(budget=4, dense_layers=(0, 1), backend=backend)
    out, idx = adamas.decode_attention(q, k, v, codes, config, layer_idx=1, return_indices=True)
    assert idx is None
    assert_close("dense layer", out, reference.dense_attention(q, k, v, 64**-0.5), torch.float32)
    sparse = adamas.decode_attention(q, k, v, codes, config, layer_idx=2)
    assert (sparse - out).abs().max() > 1e-3, "layer 2 should be sparse at budget 4"
    valid = torch.ones(2, 100, dtype=torch.bool, device=DEVICE)
    valid[1, :60] = False  # left padding
    full = adamas.AdamasConfig.paper(selector="full", backend=backend)
    out = adamas.decode_attention(q, k, v, codes, full, valid=valid)
    assert_close("full selector", out, reference.dense_attention(q, k, v, 64**-0.5, valid), torch.float32)


def test_auto_backend_follows_the_device(monkeypatch):
    from adamas.checks import resolve_backend

    assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    assert resolve_backend("auto", torch.device("cuda", 0)) == "triton"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="backend='cpu' needs CPU tensors"):
        resolve_backend("cpu", torch.device("cuda", 0))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        resolve_backend("triton", torch.device("cpu"))


# ---- errors: each names the bad value -------------------------------------------------------------

x64 = torch.zeros(2, 64)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: adamas.hadamard(torch.zeros(2, 48)), ValueError, "power of two.*48"),
        (lambda: adamas.hadamard(torch.zeros(2, 512)), ValueError, "256, got 512"),
        (lambda: adamas.hadamard(torch.zeros(2, 8)), ValueError, "got 8"),
        (lambda: adamas.hadamard(torch.zeros(2, 64, dtype=torch.int32)), TypeError, "int32"),
        (lambda: adamas.hadamard([1.0] * 64), TypeError, "list"),
        (lambda: adamas.hadamard(torch.tensor(1.0)), ValueError, "scalar"),
        (lambda: adamas.hadamard(x64, backend="cuda"), ValueError, "'cuda'"),
        (lambda: adamas.encode(x64, (0.0, -1.0, 2.0)), ValueError, "strictly increasing"),
        (lambda: adamas.encode(x64, (0.0, 1.0)), ValueError, "exactly 3"),
        (lambda: adamas.encode(x64, (0.0, 1.0, float("inf"))), ValueError, "finite"),
        (lambda: adamas.encode(x64, "tuned"), ValueError, "'tuned'"),
        (lambda: adamas.encode(x64, "calibrated"), ValueError, "'calibrated'"),
        (lambda: adamas.encode(torch.zeros(1, 2, 64), torch.zeros(3, 3)), ValueError, r"H = 3"),
        (lambda: adamas.encode(torch.zeros(1, 2, 64), torch.zeros(2, 4)), ValueError, r"\[H, 3\]"),
        (
            lambda: adamas.encode(torch.zeros(1, 2, 64), torch.tensor([[0.0, 1.0, 0.5]] * 2)),
            ValueError,
            "non-decreasing",
        ),
        (lambda: adamas.calibrate(torch.zeros(1, 2, 5, 64), (0.5, 0.4, 0.9)), ValueError, "strictly increasing"),
        (lambda: adamas.calibrate(torch.zeros(1, 2, 5, 64), (0.0, 0.5, 0.9)), ValueError, "between 0 and 1"),
        (lambda: adamas.calibrate(torch.zeros(2, 5, 64)), ValueError, "4 dims"),
        (lambda: adamas.unpack(torch.zeros(2, 16, dtype=torch.int32), 64), TypeError, "uint8"),
        (lambda: adamas.unpack(torch.zeros(2, 16, dtype=torch.uint8), 128), ValueError, "d // 4 = 32"),
        (lambda: adamas.unpack(torch.zeros(2, 16, dtype=torch.uint8), 60), ValueError, "got 60"),
    ],
)
def test_transform_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def codes(*shape):
    return torch.zeros(*shape, dtype=torch.uint8)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: adamas.manhattan(codes(1, 4, 16), codes(1, 3, 9, 16)), ValueError, r"query heads \(4\).*\(3\)"),
        (lambda: adamas.manhattan(codes(1, 4, 16), codes(1, 2, 9, 8)), ValueError, "k_codes.shape"),
        (lambda: adamas.manhattan(codes(2, 4, 16), codes(1, 2, 9, 16)), ValueError, "batch"),
        (lambda: adamas.manhattan(codes(1, 4, 16), codes(1, 2, 16)), ValueError, "4 dims"),
        (lambda: adamas.manhattan(codes(1, 4, 16).float(), codes(1, 2, 9, 16)), TypeError, "float32"),
        (lambda: adamas.manhattan(codes(1, 4, 15), codes(1, 2, 9, 15)), ValueError, "got 60"),
        (
            lambda: adamas.manhattan(codes(1, 4, 16), codes(1, 2, 9, 16).to("meta")),
            ValueError,
            "one device.*meta",
        ),
        (lambda: adamas.select(torch.zeros(1, 2, 9), 0), ValueError, "budget must be >= 1, got 0"),
        (lambda: adamas.select(torch.zeros(1, 2, 9), 2.5), TypeError, "budget.*2.5"),
        (lambda: adamas.select(torch.zeros(2, 9), 4), ValueError, "3 dims"),
        (lambda: adamas.select(torch.zeros(1, 2, 0), 4), ValueError, "at least one token"),
    ],
)
def test_scoring_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


q0, k0, i0 = torch.zeros(1, 4, 64), torch.zeros(1, 2, 9, 64), torch.zeros(1, 4, 3, dtype=torch.long)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: adamas.sparse_attention(q0, k0, k0.half(), i0), ValueError, "one dtype"),
        (lambda: adamas.sparse_attention(q0, k0, k0[:, :, :5], i0), ValueError, "one shape"),
        (
            lambda: adamas.sparse_attention(q0, k0[:, :1].expand(1, 3, 9, 64), k0[:, :1].expand(1, 3, 9, 64), i0),
            ValueError,
            "multiple of KV heads",
        ),
        (lambda: adamas.sparse_attention(q0, k0, k0, i0.float()), TypeError, "int32 or int64"),
        (lambda: adamas.sparse_attention(q0, k0, k0, i0 + 9), ValueError, r"\[0, L = 9\)"),
        (lambda: adamas.sparse_attention(q0, k0, k0, i0 - 1), ValueError, "a real one in every row"),
        (lambda: adamas.sparse_attention(q0, k0, k0, i0[:, :2]), ValueError, "idx heads"),
        (lambda: adamas.sparse_attention(q0, k0, k0, i0, scale=-1.0), ValueError, "scale"),
        (lambda: adamas.decode_attention(q0, k0, k0, codes(1, 2, 9, 16), {"budget": 4}), TypeError, "AdamasConfig"),
        (
            lambda: adamas.decode_attention(q0, k0, k0, codes(1, 2, 8, 16), adamas.AdamasConfig.paper()),
            ValueError,
            r"k_codes must have shape \(1, 2, 9, 16\)",
        ),
        (
            lambda: adamas.decode_attention(
                q0, k0, k0, codes(1, 2, 9, 16), adamas.AdamasConfig.paper(), fused_selection={"max_budget": 4}
            ),
            TypeError,
            "fused_selection must be a FusedSelection, got dict",
        ),
        (lambda: FusedSelection(max_budget=-1), ValueError, "max_budget must be >= 0, got -1"),
    ],
)
def test_attention_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_interpreter_runs_on_this_machine():
    """Guards the CI set-up: without a GPU the Triton path must really run (through the interpreter)."""
    gen = seeded("guard")
    q_codes, k_codes = random_codes(1, 2, 16, gen=gen), random_codes(1, 1, 5, 16, gen=gen)
    assert adamas.manhattan(q_codes, k_codes, backend="triton").device.type == DEVICE


@pytest.mark.parametrize("budget", [24, 300])
def test_fused_and_two_kernel_selection_agree_in_the_decode_step(budget):
    """decode_attention takes kernels.nearest or manhattan + select by size; both give one set, one output."""
    gen = seeded("paths", budget)
    q, k, v, codes = decode_inputs((2, 8, 2, 700, 64), torch.float32, gen)
    valid = torch.ones(2, 700, dtype=torch.bool, device=DEVICE)
    valid[1, 500:] = False  # a static cache's unwritten tail
    config = adamas.AdamasConfig.paper(budget=budget, sink=4, recent=16, dense_layers=(), backend="triton")
    runs = []
    for rule in (FusedSelection(max_budget=1024, min_tokens=0), FusedSelection(max_budget=0, min_tokens=1 << 30)):
        runs.append(
            adamas.decode_attention(q, k, v, codes, config, return_indices=True, valid=valid, fused_selection=rule)
        )
    (out_fused, idx_fused), (out_two, idx_two) = runs
    assert torch.equal(idx_fused.sort(-1).values, idx_two.sort(-1).values)
    assert_close("decode_attention", out_fused, out_two, torch.float32)


def test_the_dispatch_rule_takes_the_fused_selection_for_small_budgets_or_many_keys():
    """Budgets up to max_budget at any size; larger ones from min_tokens keys (batch x context)."""
    uses = adamas.ops.uses_fused_selection
    rule = FusedSelection()
    assert uses(1, 1) and uses(rule.max_budget, 1)
    assert not uses(rule.max_budget + 1, rule.min_tokens - 1)
    assert uses(rule.max_budget + 1, rule.min_tokens)
    assert uses(4096, rule.min_tokens)
    assert not uses(32, 1 << 30, FusedSelection(max_budget=16, min_tokens=1 << 31))


@pytest.mark.parametrize("masked", [False, True], ids=["bare", "masked"])
@pytest.mark.parametrize(
    ("budget", "min_tokens", "fused"), [(32, 1 << 30, True), (300, 1 << 30, False), (300, 400, True)]
)
def test_decode_steps_take_the_fused_kernel_by_the_rule(budget, min_tokens, fused, masked, monkeypatch):
    """A step, bare or with a padding mask, goes through the fused selection exactly when the rule says so."""
    kernels = importlib.import_module("adamas.kernels")
    calls = []
    real = kernels.nearest_query
    monkeypatch.setattr(kernels, "nearest_query", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    gen = seeded("dispatch", budget)
    q, k, v, codes = decode_inputs((1, 4, 2, 400, 64), torch.float32, gen)
    config = adamas.AdamasConfig.paper(budget=budget, dense_layers=(), backend="triton")
    valid = torch.ones(1, 400, dtype=torch.bool, device=DEVICE) if masked else None
    adamas.decode_attention(q, k, v, codes, config, valid=valid, fused_selection=FusedSelection(min_tokens=min_tokens))
    assert calls == ([1] if fused else [])
