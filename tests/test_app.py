"""The Gradio app with the default model (on the GPU image, its random-weight stand-in): a run streams both
answers and draws the figures from real traces, offers the run as JSON and HTML, Stop ends a run at once, bad
input becomes a readable message on the page and through the real /compare endpoint, uploads leave nothing on
disk, the monitoring pages are closed, and a bounded load is answered without cross-talk."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the app's packages are not installed (e.g. on the GPU image)")
go = pytest.importorskip("plotly.graph_objects")
gradio_client = pytest.importorskip("gradio_client")
app = pytest.importorskip("app")

from test_uploads import pdf_of_inflating_text  # noqa: E402

import adamas  # noqa: E402
from adamas import documents, integration, uploads  # noqa: E402
from adamas.settings import settings_values  # noqa: E402
from benchmarks import load_app  # noqa: E402
from visualize.panels import session_scatter  # noqa: E402

FACT = "The launch code is 4417."
DOCUMENT = "Alpha beta gamma delta. " * 12 + FACT + " Epsilon zeta eta theta. " * 12
QUESTION = "What is the launch code?"
NEW_TOKENS = 6
EXAMPLE = {"name": "Launch", "file": "launch.txt", "question": QUESTION, "answer": "4417", "evidence": FACT,
           "source": "written for the tests", "licence": "CC0"}  # fmt: skip


def inputs(**changes: object) -> dict[str, object]:
    """The Run button's inputs by name (app.RUN_INPUTS), with `changes` applied."""
    values = {
        "file": None, "upload": None, "text": DOCUMENT, "question": QUESTION, "budget": 32,
        "thresholds": "calibrated", "custom": "", "dense": [0, 1], "sink": 0, "recent": 0,
        "max_new_tokens": NEW_TOKENS, "evidence": None,
    }  # fmt: skip
    assert set(values) == set(app.RUN_INPUTS) and set(changes) <= set(values)
    return values | changes


@pytest.fixture(scope="module")
def studio(default_model):
    model, tokenizer = default_model
    return app.Studio(model, tokenizer, context=1024, examples=[EXAMPLE])


@pytest.fixture(scope="module")
def finished_run(studio):
    """Every update of one real run (budget 32, the fact's sentence named as evidence)."""
    return list(app.run_page(studio, inputs(evidence=FACT), "finished-run"))


def test_a_finished_run_offers_its_json_and_an_offline_html_report(finished_run):
    last = finished_run[-1]
    run_file, report_file = last["run_file"], last["report_file"]
    assert run_file.visible and report_file.visible
    run_path, report_path = (Path(button.value["path"]) for button in (run_file, report_file))
    kept = uploads.private_folder() / "runs"
    assert kept in run_path.parents and kept in report_path.parents, "served from the app's folder, not copied out"
    run = json.loads(run_path.read_text())
    session = last["recording"]
    assert run["question"] == QUESTION and run["settings"]["budget"] == 32 and run["settings"]["max_new_tokens"] == 6
    assert run["summary"]["adamas_answer"] == session.summary()["adamas_answer"]
    steps = NEW_TOKENS - 1
    assert [len(run["run"]["step_ms"][mode]) for mode in ("adamas", "full")] == [steps, steps]
    assert len(run["run"]["recall"]) == steps and run["run"]["recall"][0][0][0] is None  # layer 0 runs dense
    heads = run["run"]["heads"]
    assert len(heads) == len(session.job.pairs) and all(len(h["selected"]) == steps for h in heads)
    assert len(heads[0]["last_step_true"]) == session.job.prompt.length + steps
    assert np.array(run["run"]["density"]["counts"]).sum() == session.result.density.sum()
    assert DOCUMENT[:40] not in run_path.read_text(), "a shared run leaves the document out"
    report = report_path.read_text()
    assert report.startswith("<!DOCTYPE html>") and report.count("plotly.js v") >= 1  # plotly inlined: offline
    drawn = 6 if session.result.stages else 5  # a GPU run adds its stage breakdown
    assert report.count("class='figure'") == drawn and "How often Adamas selected" in report
    assert QUESTION in report


def test_run_streams_both_answers_then_draws_every_figure_in_page_order(finished_run):
    first, *streamed, last = finished_run
    assert all(set(update) <= set(app.RUN_OUTPUTS) for update in finished_run), "each update names a part of the page"
    assert first["status"].startswith("**Queued**") and all(first[name] is None for name in app.PANELS)
    assert any(u["status"].startswith("**Prefill**") for u in streamed)
    both = [u for u in streamed if u.get("adamas_answer") and u.get("full_answer")]
    assert both, "the two answers must grow side by side"
    assert "ms/token" in streamed[-1]["adamas_stats"] and "ms/token" in streamed[-1]["full_stats"]
    assert last["status"].startswith("**Done**") and last["adamas_answer"].strip() and last["full_answer"].strip()
    assert "Budget **32**" in last["summary"] and "recall@budget" in last["summary"]
    session = last["recording"]
    steps = len(session.result.heads)
    assert steps == NEW_TOKENS - 1 and len(session.result.recall) == steps
    assert session.result.density.shape[:2] == (30, 9) and session.result.density.sum() > 0
    numbers = [last[name].layout.title.text.split(" · ")[0] for name in app.PANELS if last[name] is not None]
    assert numbers == sorted(numbers) and numbers[:5] == ["1", "2", "3", "4", "5"], "figures numbered in page order"
    document = last["document_plot"]
    z = np.array(document.data[0].z, dtype=float)  # [rows, 40], NaN past the last token
    assert np.nansum(z) > 0 and np.isfinite(z).sum() == len(session.job.prompt.tokens)
    assert session.job.highlight is not None and document.layout.shapes, "the evidence passage is outlined"
    assert "".join(session.job.prompt.tokens[slice(*session.job.highlight)]).strip() == FACT
    assert np.nansum(np.array(last["density_plot"].data[0].z, dtype=float)) > 0
    scatter = last["scatter_plot"]
    assert f"step {steps}" in scatter.layout.title.text and "recall@32" in scatter.layout.title.text
    assert sum(len(t.x) for t in scatter.data) == session.job.prompt.length + steps  # the prompt and k tokens
    latency = last["latency_plot"]
    assert [len(t.y) for t in latency.data if t.mode and "lines" in t.mode][:2] == [steps, steps]
    assert last["recall_plot"].data
    assert last["layer"].choices and last["head"] == 0 and last["step"].value == steps


def test_trace_controls_redraw_from_the_session_alone(finished_run, monkeypatch):
    session = finished_run[-1]["recording"]
    monkeypatch.setattr(app.Studio, "stream", None)  # any model run would fail now
    layers = sorted({layer for layer, _ in session.job.pairs})
    assert len(layers) == 4 and len(session.job.pairs) == 4 * 9
    first, other = session_scatter(session, layers[0], 0, 1), session_scatter(session, layers[-1], 8, 3)
    assert first.layout.title.text.startswith(f"3 · Layer {layers[0]}, head 0, step 1")
    assert other.layout.title.text.startswith(f"3 · Layer {layers[-1]}, head 8, step 3")
    assert sum(len(t.x) for t in other.data) == sum(len(t.x) for t in first.data) + 2  # two tokens later
    assert session_scatter(session, 0, 0, 1) is None  # layer 0 runs dense: nothing traced
    assert session_scatter(None, 2, 0, 1) is None


def test_stop_during_the_prefill_ends_the_run_and_the_next_run_starts(studio):
    asked = []

    def press_stop(module, args):  # the third decoder layer of the first prefill: Stop, as the button does
        asked.append(module)
        if len(asked) == 3:
            assert studio.stop("stopper")

    hooks = [layer.register_forward_pre_hook(press_stop) for layer in studio.model.model.layers]
    try:
        stopped = list(app.run_page(studio, inputs(max_new_tokens=20), "stopper"))
    finally:
        for hook in hooks:
            hook.remove()
    assert stopped[-1]["status"] == app.STOPPED and len(asked) == 3, "no layer runs after Stop"
    assert integration.enabled_config(studio.model) is None and len(studio.lane) == 0
    assert not studio.stop("stopper"), "a finished run leaves no stop flag"
    again = list(app.run_page(studio, inputs(max_new_tokens=2), "stopper"))
    assert again[-1]["status"].startswith("**Done**")


def test_a_waiting_run_says_why_it_waits(studio):
    holder = studio.lane.join()  # a stopped run still ending, or another client's run
    try:
        updates = app.run_page(studio, inputs(), "waiter")
        next(updates)
        assert "**Waiting** for the model (it runs one at a time): 1 run ahead of yours" in next(updates)["status"]
        assert studio.stop("waiter")
        assert next(updates)["status"] == app.STOPPED
    finally:
        studio.lane.leave(holder)


def test_blank_sink_and_recent_follow_the_budget_and_the_settings_buttons_fill_the_form(studio):
    small = studio.prepare(studio.paste(DOCUMENT), QUESTION, 16, sink=None, recent=None, thresholds=None, dense=None)
    assert (small.config.sink, small.config.recent) == adamas.config.default_window(16)
    assert small.config.thresholds == adamas.AdamasConfig().thresholds
    big = studio.prepare(studio.paste(DOCUMENT), QUESTION, 128)
    assert (big.config.sink, big.config.recent) == (adamas.AdamasConfig().sink, adamas.AdamasConfig().recent)
    with pytest.raises(ValueError, match=r"sink \+ recent \(4 \+ 32\) must not exceed budget \(16\)"):
        studio.prepare(studio.paste(DOCUMENT), QUESTION, 16, sink=4, recent=32)
    assert settings_values(None)[3:] == (None, None)
    assert settings_values(adamas.AdamasConfig.paper()) == ("paper", "-10, 0, 10", [0, 1], 0, 0)


def test_echoed_input_is_escaped_and_analytics_are_off(studio):
    with pytest.warns(UserWarning, match="&lt;img src=x&gt;"):
        refused = list(app.run_page(studio, inputs(thresholds="custom", custom="<img src=x>"), None))
    assert "&lt;img src=x&gt;" in refused[-1]["status"] and "<img" not in refused[-1]["status"]
    assert app.build_app(studio).analytics_enabled is False


def test_build_app_wires_the_events(studio):
    demo = app.build_app(studio)
    assert isinstance(demo, gr.Blocks) and demo.title == "Adamas Studio"
    fns = {dep.name: dep for dep in demo.fns.values()}
    assert {"run", "compare", "session_scatter", "example", "stop"} <= set(fns) and fns["compare"].api_name == "compare"
    runs = [dep for dep in demo.fns.values() if dep.name == "run"]
    assert len(runs) == 2  # the Run button and an example's click
    lane = {(dep.concurrency_id, dep.concurrency_limit) for dep in [*runs, fns["compare"]]}
    assert lane == {(fns["compare"].concurrency_id, app.QUEUE_SIZE)}, "runs and /compare wait in the model's lane"
    reads = [dep for dep in demo.fns.values() if dep.name == "read" and dep.concurrency_limit == app.READS_AT_ONCE]
    assert reads and reads[0].concurrency_id != fns["compare"].concurrency_id, "uploads are read outside the lane"
    assert demo._queue.max_size == app.QUEUE_SIZE
    assert {dep.api_name for dep in demo.fns.values() if dep.api_visibility == "public"} == {"compare"}
    assert all(dep.trigger_mode == "always_last" for dep in runs), "a Run pressed as a stopped run ends is kept"
    assert demo.delete_cache == (app.FILES_SWEEP_S, app.FILES_MAX_AGE_S)
    assert os.environ["GRADIO_TEMP_DIR"] == str(uploads.private_folder())


def test_a_document_longer_than_the_context_is_cut_with_a_warning(default_model):
    model, tokenizer = default_model
    small = app.Studio(model, tokenizer, context=120, examples=[])
    with pytest.warns(UserWarning, match="longer than the 120-token context"):
        values = list(app.run_page(small, inputs(max_new_tokens=2, budget=16), None))
    session = values[-1]["recording"]
    assert session.job.prompt.length <= 118 and session.job.prompt.dropped > 0
    assert f"the last {session.job.prompt.dropped} cut" in values[-1]["status"]
    assert values[-1]["adamas_answer"] and values[-1]["full_answer"]


def test_a_budget_above_the_context_runs_at_the_context_with_a_note(studio):
    job = studio.prepare(studio.paste(DOCUMENT), QUESTION, 4096)
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
    "big.txt": (lambda p: p.touch() or os.truncate(p, documents.MAX_DOCUMENT_BYTES + 1), "over the limit"),
    "photo.png": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), "not supported"),
}


@pytest.mark.parametrize("name", list(BAD_FILES), ids=[n.replace(".", "-") for n in BAD_FILES])
def test_a_bad_file_gives_a_readable_message(studio, tmp_path, name):
    make, match = BAD_FILES[name]
    path = tmp_path / name
    make(path)
    with pytest.warns(UserWarning, match=match):
        values = list(app.run_page(studio, inputs(file=str(path)), None))
    assert len(values) == 1 and values[0]["status"].startswith("**Could not run:**")
    assert name in values[0]["status"] and match in values[0]["status"]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"text": "  \n\t "}, "the pasted text is empty"),
        ({"text": None}, "No document: upload a file (up to 20 MB; a larger one is refused as it uploads)"),
        ({"question": "   "}, "question is empty"),
        ({"question": None}, "question is empty"),
        ({"thresholds": "custom", "custom": "1, 2"}, "exactly 3 values"),
        ({"thresholds": "custom", "custom": "a, b, c"}, "three increasing numbers"),
        ({"thresholds": "custom", "custom": "3, 2, 1"}, "strictly increasing"),
        ({"dense": [0, 30]}, "dense layers must be layer indices from 0 to 29"),
        ({"sink": 24, "recent": 24}, "must not exceed budget"),
        ({"sink": 1.5}, "sink tokens must be a whole number"),
        ({"max_new_tokens": 500}, "max new tokens must be a whole number from 1 to 128, got 500"),
        ({"max_new_tokens": 0}, "max new tokens must be a whole number from 1 to 128, got 0"),
        ({"max_new_tokens": -3}, "max new tokens must be a whole number from 1 to 128, got -3"),
        ({"budget": float("nan")}, "budget must be a positive number of tokens, got nan"),
        ({"budget": None}, "The budget is empty"),
    ],
    ids=[
        "blank-text", "no-text", "blank-question", "no-question", "two-thresholds", "not-numbers", "decreasing",
        "dense-out-of-range", "sink+recent>budget", "fractional-sink", "500-new-tokens", "0-new-tokens",
        "negative-new-tokens", "nan-budget", "empty-budget",
    ],
)  # fmt: skip
def test_bad_input_gives_a_readable_message(studio, changes, match):
    with pytest.warns(UserWarning, match=match.split("(")[0]):
        values = list(app.run_page(studio, inputs(**changes), None))
    assert len(values) == 1 and values[0]["status"].startswith("**Could not run:**")
    assert match in values[0]["status"]


def test_changed_input_is_said_on_the_page(studio):
    with pytest.warns(UserWarning) as said:
        values = list(app.run_page(studio, inputs(budget=40, text="x", max_new_tokens=2), None))
    shown = " ".join(str(w.message) for w in said)
    assert "A budget of 40 is not on offer" in shown and "ran with 48" in shown
    assert "The document holds only 1 token" in shown and "only 1 token" in values[-1]["status"]
    snapped = studio.budget_box("40")
    assert snapped["budget"] == 48 and "A budget of 40 is not on offer" in snapped["notes"][0]
    assert studio.budget_box(64) == {"budget": 64, "notes": []}
    with pytest.warns(UserWarning, match="The budget is empty: .* It was set back to 128"):
        assert app.shown(studio.budget_box(None)) == {"budget": 128}


def test_an_upload_is_read_at_once_and_removed(studio):
    folder = uploads.private_folder() / "upload-test"
    folder.mkdir(exist_ok=True)
    path = folder / "launch.txt"
    path.write_text(DOCUMENT)
    taken = app.shown(studio.take(str(path)))
    document, note = taken["upload"], taken["file_note"]
    assert not path.exists() and document.text == DOCUMENT.strip() and document.source == str(path)
    assert f"launch.txt: {len(DOCUMENT.strip())} characters read" in note and "removed from the server" in note
    done = list(app.run_page(studio, inputs(file=str(path), upload=document, text="", max_new_tokens=2), None))
    assert done[-1]["status"].startswith("**Done**"), "the run uses the text read at upload"
    gone = list(app.run_page(studio, inputs(file=str(path), upload=None, max_new_tokens=2), None))
    assert "no longer on the server (an upload is deleted once read): upload it again" in gone[-1]["status"]


def test_an_example_fills_the_inputs(studio, tmp_path, monkeypatch):
    monkeypatch.setattr(studio, "examples_dir", tmp_path)
    (tmp_path / "launch.txt").write_text(DOCUMENT)
    filled = studio.example(0)
    text, question, evidence, note = (filled[name] for name in ("text", "question", "evidence", "example_note"))
    assert filled["file"] is None and filled["upload"] is None
    assert FACT in text and question == QUESTION and evidence == FACT
    assert "Launch" in note and "4417" in note and "CC0" in note
    (tmp_path / "launch.txt").unlink()
    with pytest.raises(documents.DocumentError, match=r"launch\.txt: file not found"):
        studio.example(0)


def test_bundled_examples_load():
    examples = app.load_examples(app.EXAMPLES_DIR)
    if not examples:
        pytest.skip("assets/examples/examples.json is not there yet")
    for example in examples:
        text = documents.read_document(app.EXAMPLES_DIR / example["file"])
        assert example["question"].strip() and example["evidence"] in text


def test_main_parses_the_flags(monkeypatch, default_model):
    seen = {}
    monkeypatch.setattr(app, "load_model", lambda name: seen.update(model=name) or default_model)
    monkeypatch.setattr(app, "build_app", lambda studio, eval_dir: (studio, eval_dir))
    monkeypatch.setattr(app, "launch", lambda built, host, port, share, auth, monitoring: seen.update(
        context=built[0].context, eval_dir=built[1], host=host, port=port, share=share, auth=auth,
        monitoring=monitoring, budget=built[0].defaults.budget))  # fmt: skip
    argv = ["--model", "some/model", "--host", "0.0.0.0", "--port", "7999", "--share", "--max-context", "2048"]
    app.main([*argv, "--eval-dir", "runs", "--auth", "ada:s3cret:x", "--monitoring"])
    assert seen == {
        "model": "some/model", "context": 2048, "host": "0.0.0.0", "port": 7999, "share": True,
        "eval_dir": Path("runs"), "auth": ("ada", "s3cret:x"), "monitoring": True, "budget": 128,
    }  # fmt: skip
    app.main([])
    assert seen["model"] is None and (seen["host"], seen["port"], seen["share"]) == ("127.0.0.1", 7860, False)
    assert (seen["auth"], seen["monitoring"], seen["context"]) == (None, False, 8192)
    assert seen["budget"] == adamas.AdamasConfig().budget
    with pytest.raises(SystemExit):
        app.main(["--auth", "no-password"])


def test_evaluate_tab_shows_the_newest_results(tmp_path):
    note, picker, figure, built = app.evaluation(tmp_path)
    assert "No evaluation results" in note and figure is None and built == {}
    committed = Path(app.RESULTS_DIR) / "eval_quick_cpu" / "results.json"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text("not json")
    os.utime(tmp_path / "old" / "results.json", (1e9, 1e9))  # 2001: older than the run below
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "results.json").write_text(committed.read_text().replace('"2026-', '"2025-'))
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "results.json").write_text(committed.read_text())
    note, picker, figure, built = app.evaluation(tmp_path)
    assert note.startswith("Results from `new/results.json`") and "| passkey |" in note
    assert "accuracy_passkey" in built and "recall_by_layer" in built
    assert picker.choices[0][0] == next(iter(built)) and figure is built[next(iter(built))]
    assert len(figure.data) > 0
    (tmp_path / "new" / "results.json").write_text("{}")
    note, _, figure, built = app.evaluation(tmp_path)
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


def uploads_left() -> list[Path]:
    """Files in the app's folder that are not run exports: uploads not deleted."""
    folder = uploads.private_folder()
    return [p for p in folder.rglob("*") if p.is_file() and folder / "runs" not in p.parents]


def test_compare_endpoint_through_gradio_client(served, tmp_path):
    client = gradio_client.Client(served, verbose=False)
    path = tmp_path / "launch.md"
    path.write_text(DOCUMENT)
    result = client.predict(document_file=gradio_client.handle_file(str(path)), question=QUESTION, budget=40,
                            max_new_tokens=4, api_name="/compare")  # fmt: skip
    json.dumps(result)  # plain JSON
    assert result["adamas_answer"] and result["full_answer"] and not uploads_left(), "the upload is gone once read"
    assert result["budget"] == 48 and result["new_tokens"] == {"adamas": 4, "full": 4}
    assert any("A budget of 40 is not on offer" in w for w in result["warnings"])
    assert result["adamas_ms_per_token"] > 0 and result["full_ms_per_token"] > 0 and result["speedup"] > 0
    assert 0 < result["mean_recall"] <= 1 and result["context_tokens"] > result["document_tokens"] > 100
    assert "run" not in result
    with_run = client.predict(DOCUMENT, None, QUESTION, 40, 3, True, api_name="/compare")
    assert with_run["run"]["summary"]["new_tokens"] == {"adamas": 3, "full": 3}
    assert len(with_run["run"]["run"]["step_ms"]["adamas"]) == 2 and with_run["run"]["settings"]["budget"] == 48
    defaults = client.predict(document_text=DOCUMENT, question=QUESTION, max_new_tokens=2, api_name="/compare")
    assert defaults["budget"] == adamas.AdamasConfig().budget, "optional parameters take the app's defaults"


REFUSED = [
    ({"budget": "abc"}, "the budget must be a positive number of tokens, got 'abc'"),
    ({"budget": "NaN"}, "the budget must be a positive number of tokens, got nan"),
    ({"budget": -5}, "got -5"),
    ({"max_new_tokens": 0}, "max new tokens must be a whole number from 1 to 128, got 0"),
    ({"max_new_tokens": 500}, "max new tokens must be a whole number from 1 to 128, got 500"),
    ({"max_new_tokens": 2.5}, "got 2.5"),
    ({"max_new_tokens": "abc"}, "max new tokens must be a whole number from 1 to 128, got 'abc'"),
    ({"question": " "}, "The question is empty"),
    ({"question": None}, "The question is empty"),
    ({"document_text": None}, "No document: upload a file"),
    ({"document_text": " \n"}, "the pasted text is empty"),
    ({"document_file": "blob.txt"}, "looks like a binary file"),
    ({"document_file": "blank.txt"}, "is empty"),
    ({"document_file": "photo.png"}, "files are not supported"),
    ({"document_file": "scan.pdf"}, "has no text layer"),
    ({"document_file": "inflating.pdf"}, "took longer than 2 s to read"),
]
ANSWERED = [
    ({"budget": None}, "budget", adamas.AdamasConfig().budget),
    ({"budget": 99999}, "warnings", "not on offer"),
    ({"document_text": "x"}, "warnings", "only 1 token"),
    ({"question": "<img src=x>?"}, "new_tokens", {"adamas": 2, "full": 2}),
]


def test_bad_input_through_the_compare_endpoint_is_refused_readably(served, studio, tmp_path, monkeypatch, capfd):
    files = {"blob.txt": BAD_FILES["blob.txt"][0], "blank.txt": BAD_FILES["blank.txt"][0],
             "photo.png": BAD_FILES["photo.png"][0], "scan.pdf": _pdf_without_text,
             "inflating.pdf": pdf_of_inflating_text}  # fmt: skip
    for name, make in files.items():
        make(tmp_path / name)
    monkeypatch.setattr(studio, "read_timeout_s", 2.0)
    client = gradio_client.Client(served, verbose=False)
    base = {"document_text": DOCUMENT, "question": QUESTION, "max_new_tokens": 2, "api_name": "/compare"}
    for changes, match in REFUSED:
        if "document_file" in changes:
            changes = {
                "document_text": "",
                "document_file": gradio_client.handle_file(str(tmp_path / changes["document_file"])),
            }
        with pytest.raises(gradio_client.exceptions.AppError, match=match.replace("(", r"\(")):
            client.predict(**(base | changes))
    for changes, key, expected in ANSWERED:
        result = client.predict(**(base | changes))
        got = " ".join(result[key]) if key == "warnings" else result[key]
        assert expected in got if key == "warnings" else got == expected, (changes, got)
    assert not uploads_left(), "every upload is deleted, read or refused"
    logged = capfd.readouterr()
    assert "Traceback" not in logged.err + logged.out, "a user error logs one line, not a traceback"


def test_a_full_lane_refuses_readably_as_busy(served, studio, monkeypatch):
    monkeypatch.setattr(studio.lane, "max_waiting", 0)
    holder = studio.lane.join()
    try:
        with pytest.raises(gradio_client.exceptions.AppError, match="The model is busy"):
            gradio_client.Client(served, verbose=False).predict(DOCUMENT, None, QUESTION, 32, 2, api_name="/compare")
    finally:
        studio.lane.leave(holder)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_monitoring_is_closed_unless_asked_and_auth_asks_for_a_login(studio, served):
    assert status_of(f"{served}monitoring/summary") == 403
    for kwargs, path, expected in [
        ({"monitoring": True}, "monitoring/summary", 200),
        ({"auth": ("ada", "pw")}, "config", 401),
    ]:
        demo = app.build_app(studio)
        _, url, _ = app.launch(demo, port=free_port(), block=False, **kwargs)
        try:
            assert status_of(f"{url}{path}") == expected
        finally:
            demo.close()


def test_a_bounded_load_is_answered_or_refused_readably_without_crosstalk(served, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text(load_app.document(0, 0, 2**20))  # a 1 MB upload, cut to the context before tokenizing
    load = load_app.run_load(served, clients=3, requests=1, doc_chars=1500, big=big, budget=32, new_tokens=4)
    outcomes = [r["outcome"] for r in load["records"]]
    assert len(outcomes) == 3 and set(outcomes) <= {"answered", "refused (busy)"}, load["records"]
    assert load["crosstalk"] == [] and not uploads_left()
    assert all(r["context_tokens"] > 300 for r in load["records"] if r["outcome"] == "answered")
