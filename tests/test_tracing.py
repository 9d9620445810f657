"""Traces: the buffer recorder (in the graph) against the per-step Tracer on the same run."""

import contextlib

import pytest
import torch
from helpers import CUDA
from tiny_models import TINY, CharTokenizer, prompt_batch, tiny_model

import adamas
from adamas import tracing
from adamas.static import GraphDecoder
from adamas.tracing import ACTIVE_TRACER, Tracer, TraceRecorder

STEPS = 7
PAIRS = ((2, 0), (3, 5))
LAYERS, HEADS = TINY["num_hidden_layers"], TINY["num_attention_heads"]
PROMPT = "abcdefghijklmnopqrstuvwxyz0123456789!"  # 37 characters, 37 tokens: as long as prompt_batch(length=37)
CONFIGS = {
    "paper": adamas.AdamasConfig(budget=12, thresholds="paper", dense_layers=(0, 1)),
    "calibrated-sink-recent": adamas.AdamasConfig(
        budget=16, thresholds="calibrated", dense_layers=(0,), sink=2, recent=3
    ),
}


@contextlib.contextmanager
def tracing_with(tracer: Tracer):
    token = ACTIVE_TRACER.set(tracer)
    try:
        yield
    finally:
        ACTIVE_TRACER.reset(token)


def static_run(config, ids, capacity: int):
    """A GraphDecoder run (eager on the CPU, graphs on CUDA) with a recorder; the Tracer watches eager runs."""
    recorder = TraceRecorder(STEPS, PAIRS)
    decoder = GraphDecoder(tiny_model("llama"), config, capacity, recorder=recorder, cuda_graph=False)
    recorder.bind(decoder.cache, ids.shape[1])
    tracer = Tracer(LAYERS, HEADS, capacity, PAIRS)
    decoder.prefill(ids)
    steps = []
    with tracing_with(tracer):
        for _ in range(STEPS):
            decoder.step()
            steps.append(tracer.finish_step())
    return recorder.finish(), steps, tracer.density


def dynamic_run(config, ids):
    """adamas.generate on the dynamic cache with trace=True, the Tracer watching the same steps."""
    model = tiny_model("llama")
    model.generation_config.eos_token_id = None
    tracer = Tracer(LAYERS, HEADS, ids.shape[1] + STEPS + 1, PAIRS)
    steps, records = [], []
    with tracing_with(tracer):
        for record in adamas.generate(
            model, CharTokenizer(), PROMPT, config, STEPS + 1, True, PAIRS, fixed_cache=False
        ):
            records.append(record)
            if record.step > 0:
                steps.append(tracer.finish_step())
    return records[-1].recorder.finish(), steps, tracer.density


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("path", ["static", "dynamic"])
def test_recorder_matches_the_per_step_tracer(path, name):
    config, ids = CONFIGS[name], prompt_batch(batch=1, length=37)[0]
    if path == "static":
        run, steps, density = static_run(config, ids, capacity=ids.shape[1] + STEPS + 4)
    else:
        run, steps, density = dynamic_run(config, ids)
    start = ids.shape[1]
    assert len(run.steps) == len(steps) == STEPS
    length = start + STEPS
    assert run.density.shape == (LAYERS, HEADS, length) and run.density.dtype == torch.int32
    assert torch.equal(run.density, density[:, :, :length])
    assert int(density[:, :, length:].sum()) == 0
    dense = list(config.dense_layers)
    assert int(run.density[dense].sum()) == 0 and int(run.density.sum()) > 0
    for s, (mine, theirs) in enumerate(zip(run.steps, steps, strict=True)):
        torch.testing.assert_close(mine.recall, theirs.recall, equal_nan=True, atol=1e-5, rtol=1e-5)
        assert mine.recall[dense].isnan().all() and not mine.recall[len(dense) :].isnan().any()
        assert set(mine.heads) == set(theirs.heads) == set(PAIRS)
        seen = start + s + 1  # tokens the step attended over
        for pair in PAIRS:
            a, b = mine.heads[pair], theirs.heads[pair]
            assert torch.equal(a.selected, b.selected)
            assert a.estimated.shape == a.true.shape == (seen,)
            assert torch.equal(a.estimated, b.estimated[:seen])
            torch.testing.assert_close(a.true, b.true[:seen], atol=2e-3, rtol=2e-3)


def test_recorder_keeps_the_last_slot_past_its_steps_and_needs_its_cache():
    recorder = TraceRecorder(2)
    with pytest.raises(RuntimeError, match="bind"):
        recorder.finish()
    q, idx = torch.randn(1, 2, 16), torch.tensor([[[3, 1], [0, 2]]])
    recorder.record(4, q, idx, 0.25, budget=3)
    assert recorder.selected[4].shape == (2, 2, 3) and recorder.selected[4][0, 0].tolist() == [3, 1, -1]
    for _ in range(3):
        recorder.advance()
    assert int(recorder.slots[q.device]) == 1


def test_generate_with_trace_and_without_decode_the_same_tokens():
    model = tiny_model("llama")
    model.generation_config.eos_token_id = None
    config = CONFIGS["calibrated-sink-recent"]

    def tokens(trace: bool) -> list[int]:
        return [r.token_id for r in adamas.generate(model, CharTokenizer(), PROMPT, config, 9, trace=trace)]

    assert tokens(True) == tokens(False)


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")
def test_graph_recorder_matches_the_eager_static_recorder():
    config, ids = CONFIGS["calibrated-sink-recent"], prompt_batch(batch=1, length=37)[0]
    capacity = ids.shape[1] + STEPS + 4
    runs, tokens = {}, {}
    for graph in (False, True):
        recorder = TraceRecorder(STEPS, PAIRS)
        decoder = GraphDecoder(tiny_model("llama"), config, capacity, recorder=recorder, cuda_graph=graph)
        recorder.bind(decoder.cache, ids.shape[1])
        tokens[graph] = [decoder.prefill(ids).clone()] + [decoder.step().clone() for _ in range(STEPS)]
        runs[graph] = recorder.finish()
    assert torch.equal(torch.cat(tokens[True]), torch.cat(tokens[False]))
    assert torch.equal(runs[True].density, runs[False].density)
    for a, b in zip(runs[True].steps, runs[False].steps, strict=True):
        torch.testing.assert_close(a.recall, b.recall, equal_nan=True, atol=1e-5, rtol=1e-5)


def test_default_trace_pairs_spread_over_sparse_layers():
    assert tracing.default_pairs(30, (0, 1)) == ((2, 0), (11, 0), (20, 0), (29, 0))
    assert tracing.default_pairs(3, (0, 1)) == ((2, 0),)
    assert tracing.default_pairs(2, (0, 1)) == ()
