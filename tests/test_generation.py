"""Streaming generation: records, timing fields, traces, and the model's state afterwards."""

import pytest

import adamas
from adamas import generation, integration, tracing

QUESTION = "What colour is the sky on a clear day?"


def run(model, tokenizer, config, **kwargs):
    messages = generation.document_messages("The sky is blue. Grass is green. " * 20, QUESTION)
    return list(adamas.generate(model, tokenizer, messages, config=config, **kwargs))


def test_full_budget_matches_full_attention_token_for_token(smollm2):
    model, tokenizer = smollm2
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


def test_trace_records_selection_recall_and_scores(smollm2):
    model, tokenizer = smollm2
    config = adamas.AdamasConfig(budget=32)
    records = run(model, tokenizer, config, max_new_tokens=6, trace=True, trace_heads=((5, 0), (20, 8)))
    assert records[0].trace is None  # the prefill runs dense
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    for record in records[1:]:
        trace = record.trace
        assert trace.recall.shape == (layers, heads)
        assert trace.recall[:2].isnan().all() and not trace.recall[2:].isnan().any()
        assert ((trace.recall[2:] > 0) & (trace.recall[2:] <= 1 + 1e-5)).all()
        assert set(trace.heads) == {(5, 0), (20, 8)}
        head = trace.heads[(20, 8)]
        assert head.selected.shape == (32,) and head.estimated.shape == head.true.shape == (record.context_length,)
        kth = head.estimated.sort(descending=True).values[31]
        assert (head.estimated[head.selected] >= kth).all(), "the selection must hold the best estimated scores"
    density = records[-1].tracer.density
    steps = len(records) - 1
    assert int(density[2:].sum()) == (layers - 2) * heads * 32 * steps
    assert int(density[:2].sum()) == 0


def test_generate_restores_the_models_state(smollm2):
    model, tokenizer = smollm2
    run(model, tokenizer, adamas.AdamasConfig(budget=16), max_new_tokens=2)
    assert integration.enabled_config(model) is None
    adamas.enable(model, adamas.AdamasConfig(budget=64))
    try:
        stream = adamas.generate(model, tokenizer, "Hello", config=None, max_new_tokens=5)
        next(stream)
        assert integration.enabled_config(model) is None  # full attention while it runs
        stream.close()
        assert integration.enabled_config(model).budget == 64
    finally:
        adamas.disable(model)


def test_bad_arguments_are_named(smollm2):
    model, tokenizer = smollm2
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        next(adamas.generate(model, tokenizer, "Hi", max_new_tokens=0))
    with pytest.raises(TypeError, match="config must be an AdamasConfig or None"):
        next(adamas.generate(model, tokenizer, "Hi", config={"budget": 8}))
    with pytest.raises(TypeError, match="list of chat messages"):
        next(adamas.generate(model, tokenizer, 42))
    with pytest.raises(ValueError, match="context is 8192 tokens"):
        next(adamas.generate(model, tokenizer, "Hi", max_new_tokens=9000))


def test_default_trace_pairs_spread_over_sparse_layers():
    assert tracing.default_pairs(30, (0, 1)) == ((2, 0), (11, 0), (20, 0), (29, 0))
    assert tracing.default_pairs(3, (0, 1)) == ((2, 0),)
    assert tracing.default_pairs(2, (0, 1)) == ()


def test_cli_prints_both_answers(tmp_path, capsys, smollm2, monkeypatch):
    from adamas import __main__ as cli

    monkeypatch.setattr("adamas.loading.load_model", lambda name=None: smollm2)
    doc = tmp_path / "doc.txt"
    doc.write_text("The launch code is 4417. " * 30)
    args = ["generate", "--doc", str(doc), "--question", "What is the launch code?", "--max-new-tokens", "8"]
    assert cli.main([*args, "--budget", "64", "--compare-full"]) == 0
    out = capsys.readouterr().out
    assert "== Adamas, budget 64" in out and "== full attention" in out and "ms/token" in out
    assert cli.main([*args, "--budget", "0"]) == 2
    assert "budget must be >= 1" in capsys.readouterr().err
