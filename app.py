"""Adamas Studio: ask a long document a question and watch Adamas answer beside full attention.

Run `python app.py --help` for the flags. The session logic (checking a job, the model's lane,
streaming, stopping, the files kept) is adamas.studio and the figures are visualize.panels; this
file lays out the page and wires its events. docs/app.md says what the app keeps, and where.
"""

from __future__ import annotations

import argparse
import functools
import html
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr
from gradio.utils import NamedString

from adamas.config import WINDOW_BUDGET, AdamasConfig
from adamas.documents import MAX_DOCUMENT_BYTES
from adamas.eval.report import CLAIM_BUDGET
from adamas.loading import DEFAULT_MODEL_NAME, load_model
from adamas.settings import BUDGETS, MAX_NEW_TOKENS, THRESHOLD_MODES, settings_values
from adamas.studio import DEFAULT_NEW_TOKENS, RUN_INPUTS, STOPPED, USER_ERRORS, Studio, evaluation_report, load_examples
from adamas.uploads import private_folder
from visualize import evaluation_figures
from visualize.panels import PANELS, run_report, session_panels, session_scatter

logger = logging.getLogger(__name__)
os.environ["GRADIO_TEMP_DIR"] = str(private_folder())  # every file Gradio writes or serves: this process's folder

EXAMPLES_DIR = Path(__file__).resolve().parent / "assets" / "examples"
RESULTS_DIR = Path(__file__).resolve().parent / "benchmarks" / "results"  # the Evaluate tab reads the newest there
QUEUE_SIZE = 16  # requests queued at most; more are refused with Gradio's "queue is full"
RUNS_AT_ONCE = QUEUE_SIZE  # every queued run goes straight into the model's lane, where Stop reaches it
READS_AT_ONCE = 2  # uploads read at once, each in a child process of its own
FILES_MAX_AGE_S, FILES_SWEEP_S = 3600, 600  # exports and session state last long enough to use, not for ever
INTRO = (
    "# Adamas Studio\n[Adamas](https://arxiv.org/abs/2510.18413) stores every cached key as a 2-bit code of its "
    "Hadamard transform; at each decode step each query head attends only to the **budget** tokens whose codes lie "
    "closest to the query's. Upload or paste a document, ask a question and compare the answer with full "
    "attention over the whole context; the figures below show which tokens Adamas picked."
)
CSS = "#document-plot { max-height: 720px; overflow-y: auto; }"  # a long document's page scrolls in place
SETTINGS_NOTE = (
    "The measured defaults did best on this project's evaluation grid (docs/evaluation.md); the paper's "
    "settings are the authors': fixed thresholds, no sink or recent tokens."
)
STATE_NOTE = (
    "Score traces are kept for all heads of four sparse layers spread over the depth, at every step: "
    "pick a layer, head and step to redraw figure 3 without running the model again."
)
RUN_OUTPUTS = ("status", "summary", "adamas_answer", "adamas_stats", "full_answer", "full_stats", "recording")
RUN_OUTPUTS += ("run_file", "report_file", "layer", "head", "step", *PANELS)  # what a run updates, by part name
SHOWN = {  # how a studio update's plain value shows in the parts that take more than a value
    "run_file": lambda path: gr.DownloadButton(value=path, visible=path is not None),
    "report_file": lambda path: gr.DownloadButton(value=path, visible=path is not None),
    "layer": lambda layers: gr.Dropdown(choices=layers, value=layers[0] if layers else None),
    "step": lambda steps: gr.Slider(1, max(steps, 2), steps, step=1, interactive=steps > 1),
}


def shown(update: dict[str, object]) -> dict[str, object]:
    """A studio update (plain values by part name) as the page shows it: figures in their panels, files as
    downloads, the trace controls' range, and its warnings as toasts (escaped: they may quote what was typed)."""
    for note in update.get("warnings", ()):
        gr.Warning(html.escape(note))
    for note in update.get("notes", ()):
        gr.Info(html.escape(note))
    figures = update.get("figures")
    panels = {} if figures is None else {name: figures.get(name) for name in PANELS}
    parts = {name: value for name, value in update.items() if name not in ("warnings", "notes", "figures")}
    return {name: SHOWN[name](value) if name in SHOWN else value for name, value in parts.items()} | panels


def run_page(studio: Studio, values: dict[str, object], key: str | None) -> Iterator[dict[str, object]]:
    """The Run button (Studio.run_page) as the page shows it, by part name, its figures from visualize.panels."""
    for update in studio.run_page(values, key, session_panels, run_report):
        yield shown(update)


def readable(fn: Callable) -> Callable:
    """`fn` for API clients: a user error reaches them as its message (gr.Error), and the log gets one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            logger.info("/%s refused: %s", fn.__name__, err)
            raise gr.Error(str(err), print_exception=False) from None

    return wrapper


def evaluation(eval_dir: Path) -> tuple:
    """The Evaluate tab: eval_dir's newest results (evaluation_report) as (report, picker, figure, figures)."""
    note, records = evaluation_report(eval_dir)
    built = evaluation_figures(records, CLAIM_BUDGET) if records else {}
    first = next(iter(built), None)
    return note, gr.Dropdown(choices=list(built), value=first), built.get(first), built


def compare_tab(studio: Studio, c: dict) -> None:
    """The Compare tab's inputs, answers and controls into `c`, by name."""
    defaults, budgets = studio.defaults, ", ".join(map(str, BUDGETS[:8]))
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            c["file"] = gr.File(label="Upload a document (.txt, .md, .pdf, .html, source code)", type="filepath",
                                elem_id="document-file")  # fmt: skip
            # the event gets the upload's path on the server: gr.File's own preprocess leaves an empty temporary file
            c["file"].preprocess = lambda upload: None if upload is None else NamedString(upload.path)
            c["file_note"] = gr.Markdown(elem_id="file-note")
            c["text"] = gr.Textbox(label="…or paste text", lines=5, max_lines=10, elem_id="document-text")
            c["question"] = gr.Textbox(label="Question", placeholder="What does the document say about …?",
                                       elem_id="question")  # fmt: skip
            c["budget"] = gr.Number(defaults.budget, label="Budget: tokens each query head attends", elem_id="budget",
                                    info=f"{BUDGETS[0]} to {BUDGETS[-1]}, snapped to {budgets}, …")  # fmt: skip
            with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                calibrated = "calibrated: fitted to each prompt's keys; paper: the authors' (-10, 0, 10)"
                c["thresholds"] = gr.Dropdown(list(THRESHOLD_MODES), label="Thresholds", info=calibrated)
                c["custom"] = gr.Textbox(label="Custom thresholds (three increasing numbers)", visible=False)
                c["dense"] = gr.Dropdown(list(range(studio.layers)), multiselect=True,
                                         label="Dense layers (always full attention)")  # fmt: skip
                with gr.Row():
                    for name, value in (("sink", defaults.sink), ("recent", defaults.recent)):
                        blank = f"{value} (blank: fewer below budget {WINDOW_BUDGET})"
                        c[name] = gr.Textbox(label=f"{name.title()} tokens", elem_id=name, placeholder=blank)
                c["max_new_tokens"] = gr.Number(DEFAULT_NEW_TOKENS, label="Max new tokens", elem_id="max-new",
                                                info=f"1 to {MAX_NEW_TOKENS}")  # fmt: skip
                with gr.Row():
                    c["measured"] = gr.Button("Measured defaults", size="sm", elem_id="measured-defaults")
                    c["paper"] = gr.Button("Paper's settings", size="sm", elem_id="paper-settings")
                gr.Markdown(SETTINGS_NOTE)
            with gr.Row():
                c["run"] = gr.Button("Run", variant="primary", elem_id="run")
                c["stop"] = gr.Button("Stop", variant="stop", elem_id="stop")
        with gr.Column(scale=3):
            c["status"] = gr.Markdown("Upload or paste a document, ask a question, press **Run**.", elem_id="status")
            with gr.Row():
                for mode, label in (("adamas", "Adamas"), ("full", "Full attention")):
                    with gr.Column():
                        c[f"{mode}_answer"] = gr.Textbox(label=label, lines=6, interactive=False,
                                                         elem_id=f"{mode}-answer")  # fmt: skip
                        c[f"{mode}_stats"] = gr.Markdown(elem_id=f"{mode}-stats")
            c["summary"] = gr.Markdown(elem_id="summary")
            c["examples"] = gr.Dataset(
                components=["html", "html"], headers=["Example", "Question"], type="index", elem_id="examples",
                samples=[[html.escape(e["name"]), html.escape(e["question"])] for e in studio.examples],
                label="Examples: one click runs",
                visible=bool(studio.examples),
            )  # fmt: skip
            c["example_note"] = gr.Markdown(elem_id="example-note")
    for name, value in zip(("thresholds", "custom", "dense", "sink", "recent"), settings_values(None), strict=True):
        c[name].value = value  # the measured defaults, from AdamasConfig()


def figure_panels(studio: Studio, c: dict) -> None:
    """The figures into `c` in page order, each captioned before a run, with figure 3's trace controls."""
    panel(c, "document_plot")  # a long document's page scrolls (CSS)
    with gr.Row():
        panel(c, "density_plot")
        with gr.Column():
            panel(c, "scatter_plot")
            gr.Markdown(STATE_NOTE)
            with gr.Row():
                c["layer"] = gr.Dropdown([], label="Layer", min_width=80)
                c["head"] = gr.Slider(0, studio.heads - 1, 0, step=1, label="Head")
                c["step"] = gr.Slider(1, 2, 1, step=1, label="Decode step", interactive=False)
    with gr.Row():
        panel(c, "latency_plot")
        panel(c, "recall_plot")
    gpu = next(studio.model.parameters()).device.type == "cuda"  # the stages are GPU kernels' device times
    panel(c, "stage_plot", visible=gpu)
    with gr.Row():
        c["run_file"] = gr.DownloadButton("Download this run (JSON)", visible=False, elem_id="run-file")
        c["report_file"] = gr.DownloadButton("Download the report (HTML)", visible=False, elem_id="report-file")


def panel(c: dict, name: str, visible: bool = True) -> None:
    """Figure `name` into `c` under its caption, which says what it shows before there is a run."""
    with gr.Column(visible=visible):
        gr.Markdown(PANELS[name], elem_id=f"{name.replace('_', '-')}-caption")
        c[name] = gr.Plot(show_label=False, elem_id=name.replace("_", "-"))


def wire(demo: gr.Blocks, studio: Studio, c: dict, eval_dir: Path) -> None:
    """Connect the page's events to the studio."""
    lane = {"concurrency_id": "runs", "concurrency_limit": RUNS_AT_ONCE}
    quick = {"concurrency_limit": None, "show_progress": "hidden", "api_visibility": "private"}  # UI only

    def run(data: dict, request: gr.Request) -> Iterator[dict]:  # data: {component: value} of the inputs' set
        values = {name: data[c[name]] for name in RUN_INPUTS}
        for update in run_page(studio, values, request.session_hash):
            yield {c[name]: value for name, value in update.items()}

    def stop(request: gr.Request) -> str:
        return STOPPED if studio.stop(request.session_hash) else gr.skip()

    def leave(request: gr.Request) -> None:
        studio.stop(request.session_hash)

    def page(update: dict[str, object]) -> dict:  # a studio update as the page's components show it
        return {c[name]: value for name, value in shown(update).items()}

    def read(path: str | None) -> dict:  # an upload, as it arrives
        return page(studio.take(path))

    def example(index: int) -> dict:  # an example fills the inputs, then runs
        return page(studio.example(index))

    run_on = {"inputs": {c[name] for name in RUN_INPUTS}, "outputs": [c[name] for name in RUN_OUTPUTS]}
    # a Run pressed while a stopped run is still ending is kept, and starts as that run ends
    run_on |= {"api_visibility": "private", "show_progress_on": c["status"], "trigger_mode": "always_last", **lane}
    picked = [c[name] for name in ("text", "file", "upload", "question", "evidence", "example_note")]
    c["run"].click(run, **run_on)
    c["examples"].click(example, c["examples"], picked, **quick).success(run, **run_on)
    c["stop"].click(stop, None, c["status"], **quick)  # the run ends itself at once: no Gradio cancel to race
    demo.unload(leave)  # a closed page's run stops too
    taken = [c["upload"], c["file_note"]]  # an upload is read as it arrives, outside the model's lane
    c["file"].upload(read, c["file"], taken, concurrency_id="reads",
                     concurrency_limit=READS_AT_ONCE, api_visibility="private")  # fmt: skip
    c["file"].clear(lambda: (None, ""), None, taken, **quick)
    gr.on([c["file"].upload, c["text"].input], lambda: (None, ""), None, [c["evidence"], c["example_note"]], **quick)
    budget = [c["budget"].blur, c["budget"].submit]
    gr.on(budget, lambda value: page(studio.budget_box(value)), c["budget"], c["budget"], **quick)
    c["thresholds"].change(lambda mode: gr.Textbox(visible=mode == "custom"), c["thresholds"], c["custom"], **quick)
    settings = [c[name] for name in ("thresholds", "custom", "dense", "sink", "recent")]
    c["measured"].click(lambda: settings_values(None), None, settings, **quick)
    c["paper"].click(lambda: settings_values(AdamasConfig.paper()), None, settings, **quick)
    redraw = [c["layer"].input, c["head"].release, c["step"].release]
    traced = [c[name] for name in ("recording", "layer", "head", "step")]
    gr.on(redraw, session_scatter, traced, c["scatter_plot"], trigger_mode="always_last", **quick)
    api = [c[name] for name in ("text", "file", "question", "budget", "max_new_tokens", "include_run")]
    c["api_call"].click(readable(studio.compare), api, c["api_result"], api_name="compare", **lane)
    tab = [c[name] for name in ("eval_note", "eval_pick", "eval_plot", "eval_figures")]
    gr.on([demo.load, c["eval_reload"].click], functools.partial(evaluation, eval_dir), None, tab, **quick)
    c["eval_pick"].input(
        lambda name, built: built.get(name), [c["eval_pick"], c["eval_figures"]], c["eval_plot"], **quick
    )


def build_app(studio: Studio, eval_dir: Path = RESULTS_DIR) -> gr.Blocks:
    """The Blocks layout with its events wired and its queue set, not launched."""
    with gr.Blocks(
        title="Adamas Studio", analytics_enabled=False, delete_cache=(FILES_SWEEP_S, FILES_MAX_AGE_S)
    ) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(f"**Model:** {studio.model_name} · **{studio.device}** · context up to {studio.context} tokens")
        c = {name: gr.State(None, time_to_live=FILES_MAX_AGE_S) for name in ("recording", "upload", "evidence")}
        with gr.Tab("Compare", id="compare"):
            compare_tab(studio, c)
            figure_panels(studio, c)
        with gr.Tab("Evaluate", id="evaluate"):
            with gr.Row():
                c["eval_pick"] = gr.Dropdown([], label="Figure", elem_id="eval-figure")
                c["eval_reload"] = gr.Button("Reload the latest results", elem_id="eval-reload")
            c["eval_plot"], c["eval_note"] = gr.Plot(label="Evaluation"), gr.Markdown(elem_id="eval-report")
            c["eval_figures"] = gr.State({})
        c["api_call"], c["api_result"] = gr.Button(visible=False), gr.JSON(visible=False)
        c["include_run"] = gr.Checkbox(False, visible=False)  # /compare's include_run
        wire(demo, studio, c, Path(eval_dir))
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True,
           auth: tuple[str, str] | None = None, monitoring: bool = False):  # fmt: skip
    """Serve `demo` (in the background when not `block`): uploads capped at the document size limit, Gradio's
    /monitoring pages closed unless `monitoring`, a login page when `auth` is (user, password)."""
    if host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        logger.warning("serving on %s without --auth: anyone who reaches this address can use the app", host)
    return demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_DOCUMENT_BYTES,
                       prevent_thread_lock=not block, css=CSS, auth=auth, enable_monitoring=monitoring)  # fmt: skip


def login(text: str) -> tuple[str, str]:
    """--auth's USER:PASSWORD as Gradio's (user, password)."""
    user, colon, password = text.partition(":")
    if not (colon and user and password):
        raise argparse.ArgumentTypeError(f"--auth takes USER:PASSWORD, got {text!r}")
    return user, password


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, load the model once, then serve the app."""
    parser = argparse.ArgumentParser(description="Adamas Studio: Adamas sparse attention beside full attention")
    parser.add_argument("--model", help=f"HF model id or directory (default: {DEFAULT_MODEL_NAME}, offline)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--share", action="store_true", help="also create a public Gradio share link")
    parser.add_argument("--max-context", type=int, help="cap on prompt + answer tokens (default: the model's)")
    parser.add_argument("--eval-dir", type=Path, default=RESULTS_DIR, help="where the Evaluate tab finds results")
    parser.add_argument("--auth", type=login, metavar="USER:PASSWORD", help="ask for this login (with --host 0.0.0.0)")
    parser.add_argument("--monitoring", action="store_true", help="open Gradio's /monitoring pages (request timings)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logger.setLevel(logging.INFO)  # this app's lines, not every library's
    model, tokenizer = load_model(args.model)
    name = args.model or DEFAULT_MODEL_NAME
    examples = load_examples(EXAMPLES_DIR)
    studio = Studio(model, tokenizer, args.max_context, name, examples=examples, examples_dir=EXAMPLES_DIR)
    logger.info("Adamas Studio: %s, %s, context %d tokens", studio.model_name, studio.device, studio.context)
    logger.info("Files kept in %s (removed at exit; docs/app.md)", private_folder())
    launch(
        build_app(studio, args.eval_dir), args.host, args.port, args.share, auth=args.auth, monitoring=args.monitoring
    )


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit as on Ctrl-C, so that the private folder goes
    main()
