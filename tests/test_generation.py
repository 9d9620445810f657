"""Streaming generation: records, timing fields, traces, and the model's state afterwards."""

import contextvars
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import DEVICE

import adamas
from adamas import documents, generation, integration
from adamas.comparison import Comparison

QUESTION = "What colour is the sky on a clear day?"


def run(model, tokenizer, config, **kwargs):
    messages = documents.document_messages("The sky is blue. Grass is green. " * 20, QUESTION)
    return list(adamas.generate(model, tokenizer, messages, config=config, **kwargs))


def test_full_budget_matches_full_attention_token_for_token(default_model):
    model, tokenizer = default_model
    full = run(model, tokenizer, None, max_new_tokens=12)
    same = run(model, tokenizer, adamas.AdamasConfig(budget=4096), max_new_tokens=12)
    assert [r.token_id for r in same] == [r.token_id for r in full]
    assert [r.step for r in full] == list(range(len(full)))
    assert all(r.latency_s > 0 for r in full)
    prompt = full[0].context_length
    assert [r.context_length for r in full] == list(range(prompt, prompt + len(full)))
    text = "".join(r.text for r in full)
    ids = [r.token_id for r in full]
    assert text == tokenizer.decode(ids, skip_special_tokens=True)


def test_trace_records_selection_recall_and_scores(default_model):
    model, tokenizer = default_model
    config = adamas.AdamasConfig(budget=32, sink=0, recent=0)  # every selected token chosen by its code
    records = run(model, tokenizer, config, max_new_tokens=6, trace=True, trace_heads=((5, 0), (20, 8)))
    assert all(r.recorder is records[0].recorder is not None for r in records)
    traces = records[-1].recorder.finish()
    steps = len(records) - 1  # the prefill runs dense
    assert len(traces.steps) == steps
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    for record, trace in zip(records[1:], traces.steps, strict=True):
        assert trace.recall.shape == (layers, heads)
        assert trace.recall[:2].isnan().all() and not trace.recall[2:].isnan().any()
        assert ((trace.recall[2:] > 0) & (trace.recall[2:] <= 1 + 1e-5)).all()
        assert set(trace.heads) == {(5, 0), (20, 8)}
        head = trace.heads[(20, 8)]
        assert head.selected.shape == (32,) and head.estimated.shape == head.true.shape == (record.context_length,)
        kth = head.estimated.sort(descending=True).values[31]
        assert (head.estimated[head.selected] >= kth).all(), "the selection must hold the best estimated scores"
    assert traces.density.shape == (layers, heads, records[-1].context_length)
    assert int(traces.density[2:].sum()) == (layers - 2) * heads * 32 * steps
    assert int(traces.density[:2].sum()) == 0


def test_generate_restores_the_models_state(default_model):
    model, tokenizer = default_model
    run(model, tokenizer, adamas.AdamasConfig(budget=16), max_new_tokens=2)
    assert integration.enabled_config(model) is None
    adamas.enable(model, adamas.AdamasConfig(budget=64))
    try:
        for fixed in (False, True):
            stream = adamas.generate(model, tokenizer, "Hello", config=None, max_new_tokens=5, fixed_cache=fixed)
            next(stream)
            # the run holds its own attention on the model while it runs: full attention on the dynamic
            # cache, the "adamas" function with every layer dense on the fixed one (its steps switch nothing)
            running = integration.enabled_config(model)
            assert running is None if not fixed else running.selector == "full"
            stream.close()
            assert integration.enabled_config(model).budget == 64
    finally:
        adamas.disable(model)


def test_bad_arguments_are_named(default_model):
    model, tokenizer = default_model
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        next(adamas.generate(model, tokenizer, "Hi", max_new_tokens=0))
    with pytest.raises(TypeError, match="config must be an AdamasConfig or None"):
        next(adamas.generate(model, tokenizer, "Hi", config={"budget": 8}))
    with pytest.raises(TypeError, match="list of chat messages"):
        next(adamas.generate(model, tokenizer, 42))
    with pytest.raises(ValueError, match="context is 8192 tokens"):
        next(adamas.generate(model, tokenizer, "Hi", max_new_tokens=9000))


def test_cli_prints_both_answers(tmp_path, capsys, default_model, monkeypatch):
    from adamas import __main__ as cli

    monkeypatch.setattr("adamas.loading.load_model", lambda name=None: default_model)
    doc = tmp_path / "doc.txt"
    doc.write_text("The launch code is 4417. " * 30)
    args = ["generate", "--doc", str(doc), "--question", "What is the launch code?", "--max-new-tokens", "8"]
    assert cli.main([*args, "--budget", "64", "--compare-full"]) == 0
    out = capsys.readouterr().out
    assert "== Adamas, budget 64" in out and "== full attention" in out and "ms/token" in out
    assert cli.main([*args, "--budget", "0"]) == 2
    assert "budget must be >= 1" in capsys.readouterr().err


def test_cli_defaults_are_the_configs():
    from adamas import __main__ as cli

    args = cli._parser().parse_args(["generate", "--doc", "d.txt", "--question", "q"])
    defaults = adamas.AdamasConfig()
    assert (args.budget, args.thresholds) == (defaults.budget, defaults.thresholds)
    given = cli._parser().parse_args(["generate", "--doc", "d", "--question", "q", "--thresholds=-1,0,1"])
    assert adamas.AdamasConfig(thresholds=given.thresholds).thresholds == (-1.0, 0.0, 1.0)


def test_side_by_side_matches_two_separate_runs(default_model):
    model, tokenizer = default_model
    messages = documents.document_messages("The sky is blue. Grass is green. " * 20, QUESTION)
    config = adamas.AdamasConfig(budget=16)
    alone = {
        "adamas": [r.token_id for r in adamas.generate(model, tokenizer, messages, config, max_new_tokens=6)],
        "full": [r.token_id for r in adamas.generate(model, tokenizer, messages, None, max_new_tokens=6)],
    }
    stream = generation.generate_side_by_side(model, tokenizer, messages, config, max_new_tokens=6, trace=True)
    pairs = []
    with ThreadPoolExecutor(2) as pool:  # each step on some worker thread, in a fresh context, as a web server does
        while (pair := pool.submit(contextvars.copy_context().run, next, stream, None).result()) is not None:
            pairs.append(pair)
    assert [mode for mode, _ in pairs[:4]] == ["adamas", "full", "adamas", "full"]
    for mode in alone:
        records = [r for m, r in pairs if m == mode]
        assert [r.token_id for r in records] == alone[mode]
        assert all((r.recorder is not None) == (mode == "adamas") for r in records)
    sparse = [r for m, r in pairs if m == "adamas"]
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    assert integration.enabled_config(model) is None

    result = Comparison()
    for mode, record in pairs:
        result.add(mode, record)
    summary = result.finish().summary()
    assert summary["new_tokens"] == {mode: len(ids) for mode, ids in alone.items()}
    assert summary["full_answer"] == tokenizer.decode(alone["full"], skip_special_tokens=True).strip()
    assert result.density.shape == (layers, heads, sparse[-1].context_length) and result.density.dtype == "int32"
    assert len(result.recall) == len(result.heads) == len(sparse) - 1 and result._recorder is None
    assert int(result.density.sum()) == (layers - 2) * heads * 16 * (len(sparse) - 1)
    assert summary["decode"] == ("cuda graph" if DEVICE == "cuda" else "eager")
    assert 0 < summary["mean_recall"] <= 1 and summary["speedup"] > 0 and summary["adamas_ms_per_token"] > 0


def test_side_by_side_closed_early_restores_the_model(default_model):
    model, tokenizer = default_model
    adamas.enable(model, adamas.AdamasConfig(budget=64))
    try:
        stream = generation.generate_side_by_side(model, tokenizer, "Hello", adamas.AdamasConfig(budget=8), 4)
        next(stream), next(stream), next(stream)
        stream.close()
        assert integration.enabled_config(model).budget == 64
    finally:
        adamas.disable(model)


@pytest.mark.parametrize("window", [None, 16], ids=["fixed-cache", "dynamic-cache"])
def test_side_by_side_prefills_once_and_decodes_as_two_prefills(window):
    from tiny_models import CharTokenizer, tiny_model

    model = tiny_model("mistral", sliding_window=window)  # a sliding window decodes on the dynamic cache
    model.generation_config.eos_token_id = None  # run every step
    assert (generation.graph_obstacle(model) or "").startswith("mistral uses") == (window is not None)
    prompt, config = "a prompt longer than the sliding window of sixteen", adamas.AdamasConfig(budget=8)
    alone = {
        mode: adamas.generate(model, CharTokenizer(), prompt, c, 8) for mode, c in (("adamas", config), ("full", None))
    }
    alone = {mode: [r.token_id for r in run] for mode, run in alone.items()}
    prompts = []  # the lengths of the forwards over more than one token: the prefills

    def count(module, args, kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            prompts.append(kwargs["input_ids"].shape[1])

    counting = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        pairs = list(generation.generate_side_by_side(model, CharTokenizer(), prompt, config, 8))
    finally:
        counting.remove()
    assert prompts == [len(prompt)], "one prefill serves both runs"
    for mode, ids in alone.items():
        records = [r for m, r in pairs if m == mode]
        assert [r.token_id for r in records] == ids
        assert [r.copied for r in records] == [mode == "full"] + [False] * (len(ids) - 1)
        assert [r.context_length for r in records] == list(range(len(prompt), len(prompt) + len(ids)))
    result = Comparison()
    for mode, record in pairs:
        result.add(mode, record)
    assert set(result.prefill_ms) == {"adamas", "full"} and result.summary()["copied_prefill"] == ["full"]


def test_side_by_side_switches_the_models_attention_as_often_for_any_number_of_steps(monkeypatch):
    from tiny_models import CharTokenizer, tiny_model

    model = tiny_model("llama")
    model.generation_config.eos_token_id = None
    switches = []
    real = type(model).set_attn_implementation
    monkeypatch.setattr(
        type(model), "set_attn_implementation", lambda m, *a, **kw: switches.append(a) or real(m, *a, **kw)
    )
    counts, config = [], adamas.AdamasConfig(budget=8)
    for steps in (3, 9):
        switches.clear()
        list(generation.generate_side_by_side(model, CharTokenizer(), "a short prompt", config, steps))
        counts.append(len(switches))
    assert counts[0] == counts[1], "a step switched the attention by walking the model's modules"
    assert integration.enabled_config(model) is None and model.config._attn_implementation == "sdpa"


def test_graph_obstacle_says_why_a_model_decodes_eagerly():
    from tiny_models import tiny_model

    assert generation.graph_obstacle(tiny_model("mistral", sliding_window=16)).startswith("mistral uses sliding-window")
    plain = generation.graph_obstacle(tiny_model("llama"))
    assert plain is None if DEVICE == "cuda" else plain == "the model is not on a CUDA device"
