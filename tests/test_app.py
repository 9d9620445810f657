"""The Gradio app with the default model (on the GPU image, its random-weight stand-in): a run streams both
answers and draws the figures from real traces, offers the run as JSON and HTML, the trace controls redraw
from the session state alone, bad input becomes a readable message, and /compare answers a gradio_client."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the app's packages are not installed (e.g. on the GPU image)")
go = pytest.importorskip("plotly.graph_objects")
gradio_client = pytest.importorskip("gradio_client")
app = pytest.importorskip("app")

import adamas  # noqa: E402
from adamas import documents, integration  # noqa: E402

FACT = "The launch code is 4417."
DOCUMENT = "Alpha beta gamma delta. " * 12 + FACT + " Epsilon zeta eta theta. " * 12
QUESTION = "What is the launch code?"
NEW_TOKENS = 6
EXAMPLE = {"name": "Launch", "file": "launch.txt", "question": QUESTION, "answer": "4417", "evidence": FACT,
           "source": "written for the tests", "licence": "CC0"}  # fmt: skip


def inputs(**changes: object) -> list[object]:
    """The run handler's inputs (prepare()'s order), with `changes` applied."""
    values = {
        "file": None, "text": DOCUMENT, "question": QUESTION, "budget": 32, "thresholds": "calibrated",
        "custom": "", "dense": [0, 1], "sink": 0, "recent": 0, "max_new_tokens": NEW_TOKENS, "evidence": None,
    }  # fmt: skip
    assert set(changes) <= set(values)
    return list((values | changes).values())


def output(values: tuple, name: str) -> object:
    return values[app.OUTPUTS.index(name)]


@pytest.fixture(scope="module")
def studio(default_model):
    model, tokenizer = default_model
    return app.Studio(model, tokenizer, context=1024, examples=[EXAMPLE])


@pytest.fixture(scope="module")
def finished_run(studio):
    """Every yield of one real run (budget 32, the fact's sentence named as evidence)."""
    return list(studio.run(*inputs(evidence=FACT)))


def test_a_finished_run_offers_its_json_and_an_offline_html_report(finished_run):
    last = finished_run[-1]
    run_file, report_file = output(last, "run_file"), output(last, "report_file")
    assert run_file.visible and report_file.visible
    run_path, report_path = (Path(button.value["path"]) for button in (run_file, report_file))
    run = json.loads(run_path.read_text())
    session = output(last, "recording")
    assert run["question"] == QUESTION and run["settings"]["budget"] == 32 and run["settings"]["max_new_tokens"] == 6
    assert run["summary"]["adamas_answer"] == session.summary()["adamas_answer"]
    steps = NEW_TOKENS - 1
    assert [len(run["run"]["step_ms"][mode]) for mode in ("adamas", "full")] == [steps, steps]
    assert len(run["run"]["recall"]) == steps and run["run"]["recall"][0][0][0] is None  # layer 0 runs dense
    heads = run["run"]["heads"]
    assert len(heads) == len(session.job.pairs) and all(len(h["selected"]) == steps for h in heads)
    assert len(heads[0]["last_step_true"]) == session.job.prompt.length + steps
    density = run["run"]["density"]
    assert np.array(density["counts"]).sum() == session.result.density.sum()
    assert DOCUMENT[:40] not in run_path.read_text(), "a shared run leaves the document out"
    report = report_path.read_text()
    assert report.startswith("<!DOCTYPE html>") and report.count("plotly.js v") >= 1  # plotly inlined: offline
    drawn = 6 if session.result.stages else 5  # a GPU run adds its stage breakdown
    assert report.count("class='figure'") == drawn and "How often Adamas selected" in report
    assert html_escaped(QUESTION) in report


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


def test_blank_sink_and_recent_follow_the_budget_and_the_settings_buttons_fill_the_form(studio):
    small = studio.prepare(*inputs(budget=16, sink=None, recent=None, thresholds=None, dense=None))
    assert (small.config.sink, small.config.recent) == adamas.config.default_window(16)
    assert small.config.thresholds == adamas.AdamasConfig().thresholds
    big = studio.prepare(*inputs(budget=128, sink=None, recent=None))
    assert (big.config.sink, big.config.recent) == (adamas.AdamasConfig().sink, adamas.AdamasConfig().recent)
    with pytest.raises(ValueError, match=r"sink \+ recent \(4 \+ 32\) must not exceed budget \(16\)"):
        studio.prepare(*inputs(budget=16, sink=4, recent=32))
    assert app.settings_values(None)[3:] == (None, None)
    assert app.settings_values(adamas.AdamasConfig.paper()) == ("paper", "-10, 0, 10", [0, 1], 0, 0)


def test_echoed_input_is_escaped_and_analytics_are_off(studio):
    refused = list(studio.run(*inputs(thresholds="custom", custom="<img src=x>")))
    status = output(refused[-1], "status")
    assert "&lt;img src=x&gt;" in status and "<img" not in status
    assert app.build_app(studio).analytics_enabled is False


def test_build_app_wires_the_events(studio):
    demo = app.build_app(studio)
    assert isinstance(demo, gr.Blocks) and demo.title == "Adamas Studio"
    fns = {dep.name: dep for dep in demo.fns.values()}
    assert {"run", "compare", "scatter_figure", "snap_budget", "example"} <= set(fns)
    assert fns["compare"].api_name == "compare"
    runs = [dep for dep in demo.fns.values() if dep.name == "run"]
    assert len(runs) == 2  # the Run button and an example's click
    assert all(dep.concurrency_limit == 1 and dep.concurrency_id == fns["compare"].concurrency_id for dep in runs)
    assert demo._queue.max_size == app.QUEUE_SIZE
    public = {dep.api_name for dep in demo.fns.values() if dep.api_visibility == "public"}
    assert public == {"compare"}
    assert any(dep.cancels for dep in demo.fns.values()), "the Stop button cancels the runs"


def test_run_streams_both_answers_then_draws_every_figure(finished_run):
    first, *streamed, last = finished_run
    assert "Prefill" in output(first, "status")
    both = [v for v in streamed if output(v, "adamas_answer") and output(v, "full_answer")]
    assert both, "the two answers must grow side by side"
    assert "ms/token" in output(streamed[-1], "adamas_stats") and "ms/token" in output(streamed[-1], "full_stats")
    assert "Done" in output(last, "status")
    assert output(last, "adamas_answer").strip() and output(last, "full_answer").strip()
    assert "Budget **32**" in output(last, "summary") and "recall@budget" in output(last, "summary")
    session = output(last, "recording")
    steps = len(session.result.heads)
    assert steps == NEW_TOKENS - 1 and len(session.result.recall) == steps
    assert session.result.density.shape[:2] == (30, 9) and session.result.density.sum() > 0

    document = output(last, "document_plot")
    z = np.array(document.data[0].z, dtype=float)  # [rows, 40], NaN past the last token
    assert np.nansum(z) > 0 and np.isfinite(z).sum() == len(session.job.prompt.tokens)
    assert session.job.highlight is not None and document.layout.shapes, "the evidence passage is outlined"
    assert "".join(session.job.prompt.tokens[slice(*session.job.highlight)]).strip() == FACT
    assert np.nansum(np.array(output(last, "density_plot").data[0].z, dtype=float)) > 0
    scatter = output(last, "scatter_plot")
    assert f"step {steps}" in scatter.layout.title.text and "recall@32" in scatter.layout.title.text
    assert (
        sum(len(t.x) for t in scatter.data) == session.job.prompt.length + steps
    )  # step k attends over the prompt and k tokens
    latency = output(last, "latency_plot")
    assert [len(t.y) for t in latency.data if t.mode and "lines" in t.mode][:2] == [steps, steps]
    assert output(last, "recall_plot").data
    layer, head, step = output(last, "layer"), output(last, "head"), output(last, "step")
    assert layer.choices and head.maximum == 8 and step.value == steps


def test_trace_controls_redraw_from_the_session_alone(finished_run, monkeypatch):
    session = output(finished_run[-1], "recording")
    monkeypatch.setattr(app, "generate_side_by_side", None)  # any model run would fail now
    layers = sorted({layer for layer, _ in session.job.pairs})
    assert len(layers) == 4 and len(session.job.pairs) == 4 * 9
    first = app.scatter_figure(session, layers[0], 0, 1)
    other = app.scatter_figure(session, layers[-1], 8, 3)
    assert first.layout.title.text.startswith(f"3 · Layer {layers[0]}, head 0, step 1")
    assert other.layout.title.text.startswith(f"3 · Layer {layers[-1]}, head 8, step 3")
    assert sum(len(t.x) for t in other.data) == sum(len(t.x) for t in first.data) + 2  # two tokens later
    assert app.scatter_figure(session, 0, 0, 1) is None  # layer 0 runs dense: nothing traced
    assert app.scatter_figure(None, 2, 0, 1) is None


def test_stopping_a_run_restores_the_model_and_frees_it(studio):
    stream = studio.run(*inputs(max_new_tokens=20))
    for _ in range(4):  # prefill of both runs, then a decode step
        next(stream)
    stream.close()
    assert integration.enabled_config(studio.model) is None
    assert studio._lock.acquire(blocking=False)
    studio._lock.release()


def test_a_document_longer_than_the_context_is_cut_with_a_warning(default_model):
    model, tokenizer = default_model
    small = app.Studio(model, tokenizer, context=120, examples=[])
    with pytest.warns(UserWarning, match="longer than the 120-token context"):
        values = list(small.run(*inputs(max_new_tokens=2, budget=16)))
    session = output(values[-1], "recording")
    assert session.job.prompt.length <= 118 and session.job.prompt.dropped > 0
    assert f"the last {session.job.prompt.dropped} cut" in output(values[-1], "status")
    assert output(values[-1], "adamas_answer") and output(values[-1], "full_answer")


def test_a_budget_above_the_context_runs_at_the_context_with_a_note(studio):
    job = studio.prepare(*inputs(budget=4096))
    assert job.config.budget == job.prompt.length
    assert any("not below the context" in note for note in job.notes)


def _pdf_without_text(path):
    pypdf = pytest.importorskip("pypdf")
    writer = pypdf.PdfWriter()
    writer.add_blank_page(612, 792)
    with open(path, "wb") as f:
        writer.write(f)


BAD_FILES = {
    "blank.txt": (lambda p: p.write_text(" \n\t \n"), "empty"),
    "blob.txt": (lambda p: p.write_bytes(bytes(range(256)) * 3), "binary"),
    "scan.pdf": (_pdf_without_text, "no text"),
    "big.txt": (lambda p: p.write_text("word " * 400), "over the limit"),
    "photo.png": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), "not supported"),
}


@pytest.mark.parametrize("name", list(BAD_FILES), ids=[n.replace(".", "-") for n in BAD_FILES])
def test_a_bad_file_gives_a_readable_message(studio, tmp_path, monkeypatch, name):
    make, match = BAD_FILES[name]
    path = tmp_path / name
    make(path)
    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", 1000)
    with pytest.warns(UserWarning, match=match):
        values = list(studio.run(*inputs(file=str(path))))
    assert len(values) == 1 and output(values[0], "status").startswith("**Could not run:**")
    assert name in output(values[0], "status") and match in output(values[0], "status")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"text": "  \n\t "}, "the document is empty"),
        ({"text": None}, "the document is empty"),
        ({"question": "   "}, "question is empty"),
        ({"question": None}, "question is empty"),
        ({"thresholds": "custom", "custom": "1, 2"}, "exactly 3 values"),
        ({"thresholds": "custom", "custom": "a, b, c"}, "three increasing numbers"),
        ({"thresholds": "custom", "custom": "3, 2, 1"}, "strictly increasing"),
        ({"dense": [0, 30]}, "dense layers must be layer indices from 0 to 29"),
        ({"sink": 24, "recent": 24}, "must not exceed budget"),
        ({"sink": 1.5}, "sink tokens must be a whole number"),
        ({"max_new_tokens": 1000}, "max new tokens must be a whole number from 1 to 128"),
        ({"budget": float("nan")}, "budget must be a positive number"),
    ],
    ids=[
        "blank-text", "no-text", "blank-question", "no-question", "two-thresholds", "not-numbers",
        "decreasing", "dense-out-of-range", "sink+recent>budget", "fractional-sink", "too-many-tokens", "nan-budget",
    ],
)  # fmt: skip
def test_bad_input_gives_a_readable_message(studio, changes, match):
    with pytest.warns(UserWarning, match=match):
        values = list(studio.run(*inputs(**changes)))
    assert len(values) == 1 and output(values[0], "status").startswith("**Could not run:**")
    assert match in output(values[0], "status")


def test_an_example_fills_the_inputs(studio, tmp_path, monkeypatch):
    monkeypatch.setattr(app, "EXAMPLES_DIR", tmp_path)
    (tmp_path / "launch.txt").write_text(DOCUMENT)
    text, file, question, evidence, note = studio.example(0)
    assert FACT in text and file is None and question == QUESTION and evidence == FACT
    assert "Launch" in note and "4417" in note and "CC0" in note
    (tmp_path / "launch.txt").unlink()
    with pytest.raises(gr.Error, match=r"launch\.txt: file not found"):
        studio.example(0)


def test_bundled_examples_load():
    examples = app.load_examples()
    if not examples:
        pytest.skip("assets/examples/examples.json is not there yet")
    for example in examples:
        text = documents.read_document(app.EXAMPLES_DIR / example["file"])
        assert example["question"].strip() and example["evidence"] in text


def test_snap_budget_and_parse_thresholds():
    assert [app.snap_budget(v) for v in (1, 16, 20, 50, 100, 130, 5000)] == [16, 16, 24, 48, 96, 128, 4096]
    assert app.parse_thresholds("paper", "ignored") == "paper"
    assert app.parse_thresholds("custom", "(-1, 0, 2.5)") == (-1.0, 0.0, 2.5)
    with pytest.raises(ValueError, match="thresholds must be one of"):
        app.parse_thresholds("median", "")


def test_main_parses_the_flags(monkeypatch, default_model):
    seen = {}

    def load(name):
        seen["model"] = name
        return default_model

    monkeypatch.setattr(app, "load_model", load)
    monkeypatch.setattr(app, "build_app", lambda studio: studio)
    monkeypatch.setattr(app, "launch", lambda studio, host, port, share: seen.update(
        context=studio.context, host=host, port=port, share=share, eval_dir=studio.eval_dir))  # fmt: skip
    argv = ["--model", "some/model", "--host", "0.0.0.0", "--port", "7999", "--share", "--max-context", "2048"]
    app.main([*argv, "--eval-dir", "runs"])
    assert seen == {
        "model": "some/model", "context": 2048, "host": "0.0.0.0", "port": 7999, "share": True,
        "eval_dir": Path("runs"),
    }  # fmt: skip
    app.main([])
    assert seen == {
        "model": None, "context": 8192, "host": "127.0.0.1", "port": 7860, "share": False, "eval_dir": app.RESULTS_DIR,
    }  # fmt: skip


def test_evaluate_tab_shows_the_newest_results(default_model, tmp_path):
    model, tokenizer = default_model
    studio = app.Studio(model, tokenizer, context=1024, examples=[], eval_dir=tmp_path)
    note, picker, figure, built = studio.evaluation()
    assert "No evaluation results" in note and figure is None and built == {}
    committed = Path(app.RESULTS_DIR) / "eval_quick_cpu" / "results.json"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text("not json")
    os.utime(tmp_path / "old" / "results.json", (1e9, 1e9))  # 2001: older than the run below
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "results.json").write_text(committed.read_text().replace('"2026-', '"2025-'))
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "results.json").write_text(committed.read_text())
    note, picker, figure, built = studio.evaluation()
    assert note.startswith("Results from `new/results.json`") and "| passkey |" in note
    assert "accuracy_passkey" in built and "recall_by_layer" in built
    assert picker.choices[0][0] == next(iter(built)) and figure is built[next(iter(built))]
    assert len(figure.data) > 0
    (tmp_path / "new" / "results.json").write_text("{}")
    note, _, figure, built = studio.evaluation()
    assert "Could not read the results" in note and figure is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(studio):
    """The app served in this process on a free port; its URL."""
    demo = app.build_app(studio)
    _, url, _ = app.launch(demo, port=free_port(), block=False)
    yield url
    demo.close()


def test_compare_endpoint_through_gradio_client(served, tmp_path):
    client = gradio_client.Client(served, verbose=False)
    path = tmp_path / "launch.md"
    path.write_text(DOCUMENT)
    result = client.predict(
        document_text="", document_file=gradio_client.handle_file(str(path)), question=QUESTION, budget=40,
        max_new_tokens=4, api_name="/compare",
    )  # fmt: skip
    json.dumps(result)  # plain JSON
    assert result["adamas_answer"] and result["full_answer"]
    assert result["budget"] == 48 and result["new_tokens"] == {"adamas": 4, "full": 4}
    assert result["adamas_ms_per_token"] > 0 and result["full_ms_per_token"] > 0 and result["speedup"] > 0
    assert 0 < result["mean_recall"] <= 1 and result["context_tokens"] > result["document_tokens"] > 100
    assert "run" not in result
    with_run = client.predict(DOCUMENT, None, QUESTION, 40, 3, True, api_name="/compare")
    assert with_run["run"]["summary"]["new_tokens"] == {"adamas": 3, "full": 3}
    assert len(with_run["run"]["run"]["step_ms"]["adamas"]) == 2 and with_run["run"]["settings"]["budget"] == 48
    with pytest.raises(gradio_client.exceptions.AppError, match="question is empty"):
        client.predict(DOCUMENT, None, " ", 64, api_name="/compare")
