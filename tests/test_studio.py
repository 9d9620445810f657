"""adamas.studio, adamas.lane and adamas.settings without the page: a job from typed input, the model's lane,
a run stopped inside its prefill, a long document cut before tokenizing, an empty answer explained."""

from __future__ import annotations

import threading

import pytest

import adamas
from adamas import integration
from adamas import studio as studio_module
from adamas.lane import Busy, Lane
from adamas.session import Document, Session
from adamas.settings import parse_thresholds, read_budget, snap_budget, whole
from adamas.stopping import Stopped
from adamas.studio import Studio, Waiting

FACT = "The launch code is 4417."
DOCUMENT = "Alpha beta gamma delta. " * 12 + FACT + " Epsilon zeta eta theta. " * 12
QUESTION = "What is the launch code?"


@pytest.fixture(scope="module")
def studio(default_model):
    model, tokenizer = default_model
    return Studio(model, tokenizer, context=1024)


def job(studio: Studio, text: str = DOCUMENT, **settings):
    settings = {"budget": 32, "max_new_tokens": 4} | settings
    return studio.prepare(studio.paste(text), QUESTION, **settings)


def test_stop_inside_the_prefill_ends_the_run_at_the_next_layer_and_frees_the_model(studio):
    layers = list(studio.model.model.layers)
    ran, stop = [], threading.Event()

    def count(module, args):  # the third layer of the first prefill asks for the stop, as Stop would
        ran.append(module)
        if len(ran) == 3:
            studio.stop("client")

    session = Session(job(studio, max_new_tokens=8))
    stop = studio.start("client")
    hooks = [layer.register_forward_pre_hook(count) for layer in layers]
    try:
        with pytest.raises(Stopped):
            list(studio.stream(session, stop))
    finally:
        for hook in hooks:
            hook.remove()
    assert len(ran) == 3, f"{len(ran) - 3} decoder layers ran after the stop"
    assert session.result.prefill_ms == {} and len(studio.lane) == 0
    assert integration.enabled_config(studio.model) is None
    assert not any(len(m._forward_pre_hooks) for m in studio.model.modules()), "no stop hook stays on the model"
    after = studio.run_to_end(Session(job(studio)))  # the next run starts at once and finishes
    assert set(after.result.prefill_ms) == {"adamas", "full"} and after.result.step_ms["adamas"]


def test_a_waiting_run_says_its_place_and_stops_without_running(studio):
    holder = studio.lane.join()  # another run has the model
    try:
        session, stop = Session(job(studio)), threading.Event()
        stream = studio.stream(session, stop)
        assert next(stream) == Waiting(1)
        stop.set()
        with pytest.raises(Stopped, match="waiting"):
            next(stream)
        assert len(studio.lane) == 1 and session.result.prefill_ms == {}
    finally:
        studio.lane.leave(holder)


def test_the_lane_serves_in_order_and_refuses_readably_when_full():
    lane = Lane(max_waiting=1)
    first, second = lane.join(), lane.join()
    with pytest.raises(Busy, match="The model is busy: 2 runs are ahead of yours"):
        lane.join()
    assert (lane.wait(first, 0), lane.wait(second, 0)) == (0, 1)
    lane.leave(first)
    assert lane.wait(second, 0) == 0 and len(lane) == 1
    with pytest.raises(ValueError, match="max_waiting must be an int >= 0, got -1"):
        Lane(-1)


def test_a_long_paste_is_cut_to_what_the_context_holds_before_tokenizing(studio, monkeypatch):
    tokenized = []
    real = studio_module.document_prompt
    monkeypatch.setattr(
        studio_module,
        "document_prompt",
        lambda tok, text, *a, **k: tokenized.append(len(text)) or real(tok, text, *a, **k),
    )
    huge = "The access code is 4417. " + "Filler words fill the page. " * 200_000  # 5.6 MB
    document = studio.paste(huge)
    assert (
        len(document.text) == studio.max_chars < len(huge)
        and document.cut_chars == len(huge.rstrip()) - studio.max_chars
    )
    prepared = studio.prepare(document, QUESTION, 32, max_new_tokens=4)
    assert max(tokenized) <= studio.max_chars, "only what the context can hold is tokenized"
    assert prepared.prompt.length <= studio.context - 4
    assert any(f"{document.cut_chars:,} more characters) cut" in note for note in prepared.notes)


def test_the_character_bound_holds_as_many_tokens_as_the_context(studio):
    longest = max(map(len, studio.tokenizer.get_vocab()))
    assert studio.max_chars == studio.context * longest
    worst = "=" * (studio.max_chars * 2)  # long runs of one character make the longest tokens
    prepared = studio.prepare(studio.paste(worst), QUESTION, 32, max_new_tokens=4)
    assert prepared.prompt.dropped > 0, "the cut text still fills the context"


def test_a_document_with_almost_no_text_gets_a_note(studio):
    prepared = job(studio, "x")
    assert any("only 1 token (1 character)" in note for note in prepared.notes)
    with pytest.raises(ValueError, match="No document: upload a file"):
        studio.paste(None)
    with pytest.raises(ValueError, match="the pasted text is empty"):
        studio.paste(" \n\t")


def test_an_empty_answer_says_why(studio):
    session = Session(job(studio))
    eos = next(iter(studio._stop_ids))
    space = studio.tokenizer.encode(" \n", add_special_tokens=False)
    session.token_ids = {"adamas": [eos], "full": space}
    assert "ended this answer at once" in studio.why_empty(session, "adamas")
    assert f"its {len(space)} tokens decode to ' \\n'" in studio.why_empty(session, "full")
    session.result.answers["full"] = "4417"
    assert studio.why_empty(session, "full") is None


def test_a_finished_run_keeps_its_answers_notes_and_files(studio):
    session = studio.run_to_end(Session(job(studio, evidence=FACT)))
    assert (
        session.job.highlight is not None
        and len(session.token_ids["adamas"]) == len(session.result.step_ms["adamas"]) + 1
    )
    run_file, report_file = studio.save(session, lambda run: f"<p>{run['question']}</p>")
    assert report_file.read_text() == f"<p>{QUESTION}</p>" and DOCUMENT[:40] not in run_file.read_text()
    assert run_file.parent in studio.exports.folders()


def test_compare_defaults_and_readable_refusals(studio):
    result = studio.compare(document_text=DOCUMENT, question=QUESTION, max_new_tokens=3)
    assert result["budget"] == adamas.AdamasConfig().budget and result["new_tokens"] == {"adamas": 3, "full": 3}
    for kwargs, match in [
        ({"budget": "abc"}, "the budget must be a positive number of tokens, got 'abc'"),
        ({"max_new_tokens": 500}, "max new tokens must be a whole number from 1 to 128, got 500"),
        ({"question": None}, "The question is empty"),
        ({"document_text": None}, "No document"),
    ]:
        with pytest.raises(ValueError, match=match):
            studio.compare(**({"document_text": DOCUMENT, "question": QUESTION} | kwargs))


@pytest.mark.parametrize(
    ("typed", "expected"),
    [(128, (128, None)), ("40", (48, "A budget of 40 is not on offer")), (99999, (4096, "ran with 4096")),
     (1, (16, "ran with 16"))],
    ids=["on-offer", "snapped", "above-the-largest", "below-the-smallest"],
)  # fmt: skip
def test_a_typed_budget_runs_as_offered_and_says_what_changed(typed, expected):
    chosen, note = read_budget(typed)
    assert chosen == expected[0] and (note is None if expected[1] is None else expected[1] in note)


@pytest.mark.parametrize(
    ("typed", "match"),
    [(None, "The budget is empty"), ("", "The budget is empty"), ("abc", "got 'abc'"), (float("nan"), "got nan"),
     (-5, "got -5"), (True, "got True")],
    ids=["none", "blank", "letters", "nan", "negative", "bool"],
)  # fmt: skip
def test_an_unusable_budget_is_refused_readably(typed, match):
    with pytest.raises(ValueError, match=match):
        read_budget(typed)


def test_numbers_and_thresholds_as_typed():
    assert [snap_budget(v) for v in (1, 16, 20, 50, 100, 130, 5000)] == [16, 16, 24, 48, 96, 128, 4096]
    assert whole("max new tokens", "12", 1, 128) == 12 and whole("sink tokens", 4.0, 0) == 4
    for value, match in [(0, "got 0"), (1.5, "got 1.5"), ("", "is empty"), ("abc", "got 'abc'")]:
        with pytest.raises(ValueError, match=match):
            whole("max new tokens", value, 1, 128)
    assert parse_thresholds("paper", "ignored") == "paper"
    assert parse_thresholds("custom", "(-1, 0, 2.5)") == (-1.0, 0.0, 2.5)
    with pytest.raises(ValueError, match="thresholds must be one of"):
        parse_thresholds("median", "")


def test_documents_describe_themselves_and_missing_examples_are_none(tmp_path):
    assert studio_module.load_examples(tmp_path) == []
    assert Document("abc", "notes.txt", cut_chars=1200).describe() == (
        "notes.txt: 3 characters read, the last 1,200 cut (past what the context holds)."
    )
