"""Adamas Studio: ask a long document a question and watch Adamas answer beside full attention.

Run `python app.py [--model ID] [--host 127.0.0.1] [--port 7860] [--share] [--max-context N]`.
The model runs through `adamas.generation`, the figures come from `visualize/`; this file
only wires them to Gradio components and keeps each session's recorded traces.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import html
import json
import logging
import math
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from adamas.comparison import Comparison
from adamas.config import PAPER_THRESHOLDS, WINDOW_BUDGET, AdamasConfig
from adamas.documents import MAX_DOCUMENT_BYTES, DocumentPrompt, clean_text, document_prompt, read_document
from adamas.eval.report import CLAIM_BUDGET, latest_results, load_report
from adamas.generation import generate_side_by_side, graph_obstacle
from adamas.loading import DEFAULT_MODEL_NAME, load_model, max_context
from adamas.tracing import default_pairs
from visualize import (
    densest_span,
    estimated_vs_true_scatter,
    evaluation_figures,
    latency_comparison,
    recall_by_layer,
    selected_token_heatmap,
    selection_density_map,
    stage_breakdown,
)
from visualize.report import standalone_report

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parent / "assets" / "examples"
RESULTS_DIR = Path(__file__).resolve().parent / "benchmarks" / "results"  # the Evaluate tab reads the newest there
BUDGETS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
"""The budgets the slider snaps to: powers of two and the midpoints 1.5 times them."""
DEFAULT_NEW_TOKENS, MAX_NEW_TOKENS = 32, 128  # traces grow with every step (see STATE_NOTE)
HIGHLIGHT_TOKENS = 48  # the passage outlined in figure 1 when no example says where the answer is
THRESHOLD_MODES = ("calibrated", "paper", "custom")
QUEUE_SIZE = 16  # runs waiting at most; more are refused with Gradio's "queue is full"
LOCK_TIMEOUT_S = 900.0
OUTPUTS = (
    "status", "adamas_answer", "adamas_stats", "full_answer", "full_stats", "summary",
    "document_plot", "density_plot", "scatter_plot", "latency_plot", "recall_plot", "stage_plot",
    "run_file", "report_file", "layer", "head", "step", "recording",
)  # fmt: skip
"""The run handler's outputs, in order; `updates` fills the ones a yield leaves alone with gr.skip()."""

INTRO = (
    "# Adamas Studio\n"
    "[Adamas](https://arxiv.org/abs/2510.18413) stores every cached key as a 2-bit code of its Hadamard "
    "transform; at each decode step each query head attends only to the **budget** tokens whose codes lie "
    "closest to the query's. Upload or paste a document, ask a question and compare the answer with full "
    "attention over the whole context; the figures below show which tokens Adamas picked."
)
STOPPED = "**Stopped.** The answers so far stay; the figures come with a run that finishes."
FILE_KINDS = ".txt, .md, .pdf, .html, source code"
CSS = "#document-plot { max-height: 720px; overflow-y: auto; }"  # a long document's page scrolls in place
SETTINGS_NOTE = (
    "The measured defaults did best on this project's evaluation grid (docs/evaluation.md); the paper's "
    "settings are the authors': fixed thresholds, no sink or recent tokens."
)
STATE_NOTE = (
    "Score traces are kept for all heads of four sparse layers spread over the depth, at every step: "
    "pick a layer, head and step to redraw figure 3 without running the model again."
)


def settings_values(config: AdamasConfig | None) -> tuple:
    """The Advanced settings' values (thresholds, custom, dense layers, sink, recent) of a config.

    None: the measured defaults, with sink and recent left blank so that they follow the budget.
    """
    window = (None, None) if config is None else (config.sink, config.recent)
    config = config or AdamasConfig()
    return threshold_mode(config), custom_text(config), list(config.dense_layers), *window


def updates(**values: object) -> tuple:
    """The run handler's outputs in OUTPUTS order; those not named are left as they are."""
    unknown = set(values) - set(OUTPUTS)
    if unknown:
        raise KeyError(f"not outputs of the run: {sorted(unknown)}")
    return tuple(values.get(name, gr.skip()) for name in OUTPUTS)


def snap_budget(value: float) -> int:
    """The entry of BUDGETS nearest to `value` on a log scale."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"the budget must be a positive number of tokens, got {value!r}")
    return min(BUDGETS, key=lambda b: abs(math.log(b / value)))


def parse_thresholds(mode: str, custom: str) -> str | tuple[float, ...]:
    """'calibrated' or 'paper' as they are; 'custom' reads three numbers from `custom` (commas or spaces)."""
    if mode in ("calibrated", "paper"):
        return mode
    if mode != "custom":
        raise ValueError(f"thresholds must be one of {', '.join(THRESHOLD_MODES)}, got {mode!r}")
    parts = [p for p in re.split(r"[,\s;]+", (custom or "").strip().strip("()[]")) if p]
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"custom thresholds must be three increasing numbers like '-1, 0, 1', got {custom!r}"
        ) from None


def threshold_mode(config: AdamasConfig) -> str:
    """The Thresholds menu entry of a config: 'calibrated', 'paper' or 'custom'."""
    if config.thresholds == "calibrated":
        return "calibrated"
    return "paper" if config.thresholds == PAPER_THRESHOLDS else "custom"


def custom_text(config: AdamasConfig) -> str:
    """The Custom thresholds box's text for a config: its own three numbers, or an example."""
    return "-1, 0, 1" if isinstance(config.thresholds, str) else ", ".join(f"{t:g}" for t in config.thresholds)


def whole(name: str, value: object, low: int, high: int | None = None) -> int:
    """A UI number as an int in [low, high], else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value != int(value) or value < low or (high is not None and value > high):
        allowed = f"a whole number from {low} to {high}" if high is not None else f"a whole number ≥ {low}"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return int(value)


def device_note(model: torch.nn.Module) -> str:
    """How both runs decode, in words, so that the latencies shown can be read for what they are."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        return "CPU (no GPU): both runs decode on a fixed-capacity cache, each step eagerly, timed as it runs"
    name = torch.cuda.get_device_name(device)
    obstacle = graph_obstacle(model)
    if obstacle is None:
        return f"Triton kernels on {name}, every decode step one CUDA-graph replay, as the library runs"
    return f"Triton kernels on {name}; latencies are **eager** (steps driven from Python): {obstacle}"


def load_examples(directory: Path = EXAMPLES_DIR) -> list[dict[str, str]]:
    """The bundled examples (assets/examples/examples.json), or none when the file is missing."""
    index = directory / "examples.json"
    if not index.is_file():
        logger.warning("no bundled examples: %s is missing", index)
        return []
    return json.loads(index.read_text(encoding="utf-8"))


@dataclass
class Job:
    """One comparison to run: the prompt, the Adamas config, the traced heads and what to tell the user."""

    prompt: DocumentPrompt
    config: AdamasConfig
    max_new_tokens: int
    pairs: tuple[tuple[int, int], ...]
    highlight: tuple[int, int] | None  # the evidence's document tokens, when an example names it
    question: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Session:
    """One session's state: the last comparison it ran, as plain numbers (all the figures are drawn from it)."""

    job: Job
    result: Comparison = field(default_factory=Comparison)

    def stats(self, mode: str) -> str:
        """One line under an answer: prefill time, tokens so far, mean decode latency."""
        if mode not in self.result.prefill_ms:
            return ""
        steps = self.result.step_ms[mode]
        line = f"prefill {self.result.prefill_ms[mode] / 1e3:.2f} s · {len(steps) + 1} tokens"
        return line + (f" · **{np.mean(steps):.0f} ms/token** (mean of {len(steps)} steps)" if steps else "")

    def summary(self) -> dict:
        """What /compare returns: the answers, the summary numbers and the warnings shown."""
        config, prompt = self.job.config, self.job.prompt
        return self.result.summary() | {
            "budget": config.budget,
            "thresholds": config.thresholds if isinstance(config.thresholds, str) else list(config.thresholds),
            "context_tokens": prompt.length,
            "document_tokens": len(prompt.tokens),
            "dropped_tokens": prompt.dropped,
            "warnings": self.job.notes,
        }

    def export(self, model_name: str, device: str) -> dict:
        """The run as one JSON-ready dict: model, settings, the answers and summary numbers, and the traces.

        The document's text is left out: only its question and token counts travel with a shared run.
        """
        return {
            "adamas_studio_run": 1,
            "model": model_name,
            "device": device,
            "question": self.job.question,
            "settings": dataclasses.asdict(self.job.config) | {"max_new_tokens": self.job.max_new_tokens},
            "summary": self.summary(),
            "run": self.result.to_dict(),
        }

    def summary_line(self) -> str:
        """The summary numbers in one line of Markdown."""
        s = self.summary()
        speedup = f"{s['speedup']:.2f}x" if s["speedup"] else "–"
        recall = f"{s['mean_recall']:.3f}" if s["mean_recall"] is not None else "–"
        return (
            f"Budget **{s['budget']}** of **{s['context_tokens']}** context tokens · mean recall@budget **{recall}** · "
            f"decode speedup (full / Adamas) **{speedup}** · same answer: **{'yes' if s['same_answer'] else 'no'}**"
        )


def document_figure(session: Session) -> go.Figure:
    """Figure 1: each document token shaded by its selections over layers, heads and steps."""
    prompt, density = session.job.prompt, session.result.density
    if density is not None:
        counts = density[:, :, prompt.start : prompt.end].sum(axis=(0, 1))  # [document tokens]
    else:
        counts = np.zeros(len(prompt.tokens))
    if session.job.highlight is not None:
        highlight, outlined = session.job.highlight, "the passage that holds the example's answer"
    else:
        highlight, outlined = densest_span(counts, HIGHLIGHT_TOKENS), "the most selected passage"
    title = f"1 · How often Adamas selected each document token (outlined: {outlined})"
    return selected_token_heatmap(prompt.tokens, counts, highlight, title=title)


def scatter_figure(session: Session | None, layer: object, head: object, step: object) -> go.Figure | None:
    """Figure 3: estimated vs true scores of one traced (layer, head) at one decode step; None if not traced."""
    heads = session.result.heads if session is not None else []
    if not heads or layer is None or head is None or step is None:
        return None
    step = min(max(int(step), 1), len(heads))
    scores = heads[step - 1].get((int(layer), int(head)))
    if scores is None:
        return None
    selected, estimated, true = scores
    title = f"3 · Layer {int(layer)}, head {int(head)}, step {step}"
    return estimated_vs_true_scatter(estimated, true, selected[selected >= 0], session.job.config.budget, title)


def trace_figures(session: Session) -> dict[str, go.Figure | None]:
    """Figures 1, 2, 4 and 5 of a finished run; those with no decode steps to show are None."""
    result, dense, budget = session.result, session.job.config.dense_layers, session.job.config.budget
    figures = dict.fromkeys(("density_plot", "recall_plot", "latency_plot", "stage_plot"))
    figures["document_plot"] = document_figure(session)
    if result.recall:
        title = "2 · Selection density: layer × head × position"
        figures["density_plot"] = selection_density_map(result.density, dense, title=title)
        figures["recall_plot"] = numbered(5, recall_by_layer(np.stack(result.recall), dense, budget))
    if result.step_ms["adamas"] and result.step_ms["full"]:
        prefill = (result.prefill_ms["adamas"], result.prefill_ms["full"])
        figures["latency_plot"] = numbered(
            4, latency_comparison(result.step_ms["adamas"], result.step_ms["full"], prefill)
        )
    if result.stages:
        means = {mode: float(np.mean(ms)) for mode, ms in result.step_ms.items() if ms}
        figures["stage_plot"] = numbered(6, stage_breakdown(result.stages, means))
    return figures


def numbered(n: int, figure: go.Figure) -> go.Figure:
    """`figure` with its title numbered as the issue numbers the figures."""
    return figure.update_layout(title_text=f"{n} · {figure.layout.title.text}")


def refusal(err: Exception) -> tuple:
    """The run's outputs for input it cannot use: a warning and a readable message, the rest unchanged.

    The message may quote what the user typed: it is escaped, so it shows as text, never as markup.
    """
    message = html.escape(str(err))
    gr.Warning(message)
    return updates(status=f"**Could not run:** {message}")


class Studio:
    """The loaded model with what every session shares: its limits, the examples, one generation at a time."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        context: int | None = None,
        model_name: str = DEFAULT_MODEL_NAME,
        examples: list[dict[str, str]] | None = None,
        eval_dir: Path = RESULTS_DIR,
    ) -> None:
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self.eval_dir = Path(eval_dir)
        limit = max_context(model)
        self.context = limit if context is None else min(whole("the context limit", context, 2), limit)
        self.layers, self.heads = model.config.num_hidden_layers, model.config.num_attention_heads
        self.device = device_note(model)
        self.examples = load_examples() if examples is None else examples
        self.defaults = AdamasConfig()
        self._lock = threading.Lock()  # the model serves one generation at a time
        self._exports = tempfile.TemporaryDirectory(prefix="adamas-studio-")  # run files; removed with the app

    def prepare(
        self,
        file: str | None,
        text: str | None,
        question: str | None,
        budget: float,
        thresholds: str | None = None,
        custom: str = "",
        dense: list[int] | None = None,
        sink: float | None = None,
        recent: float | None = None,
        max_new_tokens: float = DEFAULT_NEW_TOKENS,
        evidence: str | None = None,
    ) -> Job:
        """Check every input and build the Job; DocumentError/ValueError/TypeError with a readable message.

        Settings left None take AdamasConfig()'s defaults.
        """
        notes = []
        if file:
            document = read_document(file)
            if text and text.strip():
                notes.append("Both a file and pasted text were given: the uploaded file is used.")
        else:
            document = clean_text(text if isinstance(text, str) else "", "the document")
        if not isinstance(question, str) or not question.strip():
            raise ValueError("The question is empty: type a question about the document.")
        new = whole("max new tokens", max_new_tokens, 1, MAX_NEW_TOKENS)
        if new >= self.context:
            raise ValueError(f"max new tokens ({new}) leave no room for a document in the {self.context}-token context")
        prompt = document_prompt(self.tokenizer, document, question.strip(), max_tokens=self.context - new)
        if prompt.dropped:
            notes.append(
                f"The document is longer than the {self.context}-token context allows: its first "
                f"{len(prompt.tokens)} tokens were kept and the last {prompt.dropped} cut, leaving room for "
                f"the question and {new} new tokens."
            )
        chosen = snap_budget(budget)
        if chosen >= prompt.length:
            notes.append(
                f"A budget of {chosen} tokens is not below the context ({prompt.length} tokens), so Adamas "
                f"would keep every token: ran with budget {prompt.length} (nearly full attention). "
                "Pick a smaller budget to see it choose."
            )
            chosen = prompt.length
        layers = list(self.defaults.dense_layers) if dense is None else list(dense)
        if not all(isinstance(i, int) and 0 <= i < self.layers for i in layers):
            raise ValueError(f"dense layers must be layer indices from 0 to {self.layers - 1}, got {layers}")
        config = AdamasConfig(
            budget=chosen,
            thresholds=parse_thresholds(threshold_mode(self.defaults) if thresholds is None else thresholds, custom),
            dense_layers=tuple(sorted(set(layers))),
            sink=None if sink is None else whole("sink tokens", sink, 0),  # None: the default, fitted to the budget
            recent=None if recent is None else whole("recent tokens", recent, 0),
        )
        pairs = tuple(
            (layer, h) for layer, _ in default_pairs(self.layers, config.dense_layers) for h in range(self.heads)
        )
        highlight = None
        if evidence and evidence in prompt.document:
            at = prompt.document.index(evidence)
            span = prompt.token_span(at, at + len(evidence))
            highlight = span if span[1] > span[0] else None
        return Job(prompt, config, new, pairs, highlight, question.strip(), notes)

    def record(self, session: Session) -> Iterator[str]:
        """Run the job's two modes side by side into `session`, yielding the mode of each step recorded."""
        if not self._lock.acquire(timeout=1.0):
            # A stopped run frees the model when Gradio drops its generator; if a reference cycle
            # keeps that generator alive, only the garbage collector closes it.
            gc.collect()
            if not self._lock.acquire(timeout=LOCK_TIMEOUT_S):
                raise RuntimeError("the model is busy with another run; try again in a minute")
        try:
            job = session.job
            stream = generate_side_by_side(
                self.model, self.tokenizer, job.prompt.messages, job.config, job.max_new_tokens, True, job.pairs,
                profile=True,
            )  # fmt: skip
            try:
                for mode, record in stream:
                    session.result.add(mode, record)
                    yield mode
            finally:
                stream.close()  # restores the model's attention state when the run is stopped
            session.result.finish()
        finally:
            self._lock.release()

    def run(self, *inputs: object, progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:  # noqa: B008
        """The Run handler: both answers streamed side by side, then the figures (OUTPUTS order).

        `inputs` are prepare()'s, in order. Bad input gives a warning and a message, never an exception.
        """
        try:
            job = self.prepare(*inputs)
        except (ValueError, TypeError) as err:
            yield refusal(err)
            return
        for note in job.notes:
            gr.Warning(note)
        notes = "".join(f"\n\n⚠️ {note}" for note in job.notes)
        session, where = Session(job), f"context {job.prompt.length} tokens · budget {job.config.budget}"
        progress(0, desc=f"Prefill of {job.prompt.length} tokens, Adamas run")
        plots = dict.fromkeys(("document_plot", "density_plot", "scatter_plot", "latency_plot", "recall_plot"))
        hidden = {name: gr.DownloadButton(visible=False) for name in ("run_file", "report_file")}
        yield updates(status=f"**Prefill** · {where}{notes}", summary="", recording=None, **plots, **hidden)
        try:
            with contextlib.closing(self.record(session)) as steps:  # Stop closes this generator: close the run now
                for mode in steps:
                    decoded = session.result.step_ms
                    if mode == "adamas" and not decoded["adamas"]:
                        progress(0.5, desc="Prefill, full-attention run")
                    else:
                        progress((len(decoded["full"]) + 1, job.max_new_tokens), desc="Decoding", unit="tokens")
                    yield updates(status=f"**Decoding** · {where}{notes}", **self.answers(session))
        except (ValueError, TypeError, RuntimeError) as err:
            yield refusal(err)
            return
        yield self.finished(session, f"**Done** · {where}{notes}")

    @staticmethod
    def answers(session: Session) -> dict[str, str]:
        """Both answers so far, with their stats lines."""
        text = session.result.answers
        return {
            "adamas_answer": text["adamas"],
            "adamas_stats": session.stats("adamas"),
            "full_answer": text["full"],
            "full_stats": session.stats("full"),
        }

    def finished(self, session: Session, status: str) -> tuple:
        """The outputs of a finished run: summary, figures, the trace controls and the session state."""
        try:
            figures = trace_figures(session)
        except ValueError as err:  # a figure refusing its data must not lose the answers
            gr.Warning(f"Could not draw the figures: {err}")
            figures = {}
        layers = sorted({layer for layer, _ in session.job.pairs})
        steps = max(len(session.result.heads), 1)
        layer = layers[0] if layers else None
        scatter = scatter_figure(session, layer, 0, steps)
        run_file, report_file = self.write_exports(session, [*figures.values(), scatter])
        return updates(
            status=status,
            summary=session.summary_line(),
            scatter_plot=scatter,
            run_file=gr.DownloadButton(value=run_file, visible=True),
            report_file=gr.DownloadButton(value=report_file, visible=True),
            layer=gr.Dropdown(choices=layers, value=layer),
            head=gr.Slider(0, self.heads - 1, 0, step=1),
            step=gr.Slider(1, max(steps, 2), steps, step=1, interactive=steps > 1),
            recording=session,
            **self.answers(session),
            **figures,
        )

    def write_exports(self, session: Session, figures: list[go.Figure | None]) -> tuple[str, str]:
        """Write the run's JSON and its standalone HTML report into this app's private folder; their paths."""
        run = session.export(self.model_name, self.device)
        folder = Path(tempfile.mkdtemp(prefix="run-", dir=self._exports.name))
        run_file, report_file = folder / "adamas-run.json", folder / "adamas-report.html"
        run_file.write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")
        summary = run["summary"]
        rows = [
            ("Model", f"{self.model_name} · {self.device}"),
            ("Question", run["question"]),
            ("Adamas answer", summary["adamas_answer"]),
            ("Full-attention answer", summary["full_answer"]),
            ("Settings", ", ".join(f"{k}={v}" for k, v in run["settings"].items() if k != "backend")),
            ("Context tokens", summary["context_tokens"]),
            ("Mean ms per token (Adamas, full)", f"{summary['adamas_ms_per_token']}, {summary['full_ms_per_token']}"),
            ("Decode", summary["decode"]),
            ("Mean recall@budget", summary["mean_recall"]),
        ]
        shown = [f for f in figures if f is not None]
        report_file.write_text(standalone_report("Adamas Studio run", rows, shown), encoding="utf-8")
        return str(run_file), str(report_file)

    def compare(
        self,
        document_text: str | None,
        document_file: str | None,
        question: str | None,
        budget: float,
        max_new_tokens: float = DEFAULT_NEW_TOKENS,
        include_run: bool = False,
    ) -> dict:
        """The /compare endpoint: both modes on a document (text or file); the answers and summary numbers.

        With `include_run`, also "run": what the page's "Download this run" file holds (Session.export).
        """
        try:
            session = Session(
                self.prepare(document_file, document_text, question, budget, max_new_tokens=max_new_tokens)
            )
            for _ in self.record(session):
                pass
        except (ValueError, TypeError, RuntimeError) as err:
            raise gr.Error(str(err)) from err
        summary = session.summary()
        return summary | {"run": session.export(self.model_name, self.device)} if include_run else summary

    def example(self, index: int) -> tuple[str, None, str, str | None, str]:
        """An example's (document text, no file, question, evidence, note on its answer and source)."""
        example = self.examples[int(index)]
        try:
            text = read_document(EXAMPLES_DIR / example["file"])
        except ValueError as err:
            raise gr.Error(str(err)) from err
        note = (
            f"**{example['name']}** · expected answer: *{example['answer']}* (its passage is outlined in "
            f"figure 1)  \nSource: {example['source']}. Licence: {example['licence']}."
        )
        return text, None, example["question"], example.get("evidence"), note

    def evaluation(self) -> tuple:
        """The Evaluate tab: eval_dir's newest full run (report.latest_results) as (report, picker, figure, figures)."""
        path = latest_results(self.eval_dir)
        if path is None:
            note = f"No evaluation results under `{self.eval_dir}` yet: run `python -m adamas.eval --out DIR` there."
            return note, gr.Dropdown(choices=[], value=None), None, {}
        try:
            report, records = load_report(path)
        except ValueError as err:
            return f"**Could not read the results:** {err}", gr.Dropdown(choices=[], value=None), None, {}
        built = evaluation_figures(records, CLAIM_BUDGET)
        first = next(iter(built), None)
        shown = f"the newest full run under `{self.eval_dir.name}/`, else the newest --quick one"
        heading = f"Results from `{path.parent.name}/{path.name}` ({shown})\n\n"
        return heading + report, gr.Dropdown(choices=list(built), value=first), built.get(first), built


def build_app(studio: Studio) -> gr.Blocks:
    """The Blocks layout with its events wired and its queue set, not launched."""
    defaults, budgets = studio.defaults, ", ".join(map(str, BUDGETS[:8]))
    with gr.Blocks(title="Adamas Studio", analytics_enabled=False) as demo:  # private documents: no telemetry
        gr.Markdown(INTRO)
        gr.Markdown(f"**Model:** {studio.model_name} · **{studio.device}** · context up to {studio.context} tokens")
        recording, evidence = gr.State(None), gr.State(None)
        with gr.Tab("Compare", id="compare"):
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    file = gr.File(label=f"Upload a document ({FILE_KINDS})", type="filepath", elem_id="document-file")
                    text = gr.Textbox(label="…or paste text", lines=5, max_lines=10, elem_id="document-text")
                    question = gr.Textbox(
                        label="Question", placeholder="What does the document say about …?", elem_id="question"
                    )
                    budget = gr.Slider(
                        BUDGETS[0], BUDGETS[-1], defaults.budget, step=1, elem_id="budget",
                        label="Budget: tokens each query head attends", info=f"snaps to {budgets}, … 4096",
                    )  # fmt: skip
                    with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                        thresholds = gr.Dropdown(
                            list(THRESHOLD_MODES), value=threshold_mode(defaults), label="Thresholds",
                            info="calibrated: fitted to each prompt's keys; paper: the authors' (-10, 0, 10)",
                        )  # fmt: skip
                        custom = gr.Textbox(
                            custom_text(defaults), label="Custom thresholds (three increasing numbers)",
                            visible=threshold_mode(defaults) == "custom",
                        )  # fmt: skip
                        dense = gr.Dropdown(
                            list(range(studio.layers)), value=list(defaults.dense_layers), multiselect=True,
                            label="Dense layers (always full attention)",
                        )  # fmt: skip
                        with gr.Row():
                            sink = gr.Number(
                                None, label="Sink tokens", precision=0, minimum=0, elem_id="sink",
                                placeholder=f"{defaults.sink} (blank: fewer below budget {WINDOW_BUDGET})",
                            )  # fmt: skip
                            recent = gr.Number(
                                None, label="Recent tokens", precision=0, minimum=0, elem_id="recent",
                                placeholder=f"{defaults.recent} (blank: fewer below budget {WINDOW_BUDGET})",
                            )  # fmt: skip
                        max_new = gr.Slider(
                            1, MAX_NEW_TOKENS, DEFAULT_NEW_TOKENS, step=1, label="Max new tokens", elem_id="max-new"
                        )
                        with gr.Row():
                            measured = gr.Button("Measured defaults", size="sm", elem_id="measured-defaults")
                            paper = gr.Button("Paper's settings", size="sm", elem_id="paper-settings")
                        gr.Markdown(SETTINGS_NOTE)
                    with gr.Row():
                        run = gr.Button("Run", variant="primary", elem_id="run")
                        stop = gr.Button("Stop", variant="stop", elem_id="stop")
                with gr.Column(scale=3):
                    status = gr.Markdown("Upload or paste a document, ask a question, press **Run**.", elem_id="status")
                    with gr.Row():
                        with gr.Column():
                            adamas_answer = gr.Textbox(
                                label="Adamas", lines=6, interactive=False, elem_id="adamas-answer"
                            )
                            adamas_stats = gr.Markdown()
                        with gr.Column():
                            full_answer = gr.Textbox(
                                label="Full attention", lines=6, interactive=False, elem_id="full-answer"
                            )
                            full_stats = gr.Markdown()
                    summary = gr.Markdown(elem_id="summary")
                    examples = gr.Dataset(
                        components=["textbox", "textbox"], headers=["Example", "Question"], type="index",
                        samples=[[e["name"], e["question"]] for e in studio.examples], label="Examples: one click runs",
                        visible=bool(studio.examples),
                    )  # fmt: skip
                    example_note = gr.Markdown(elem_id="example-note")
            document_plot = gr.Plot(label="Selected tokens", elem_id="document-plot")  # scrolls (CSS)
            with gr.Row():
                density_plot = gr.Plot(label="Selection density")
                with gr.Column():
                    recall_plot = gr.Plot(label="Recall by layer")
                    gr.Markdown(STATE_NOTE)
                    with gr.Row():
                        layer = gr.Dropdown([], label="Layer", min_width=80)
                        head = gr.Slider(0, studio.heads - 1, 0, step=1, label="Head")
                        step = gr.Slider(1, 2, 1, step=1, label="Decode step", interactive=False)
                    scatter_plot = gr.Plot(label="Estimated vs true")
            latency_plot = gr.Plot(label="Latency")
            gpu = next(studio.model.parameters()).device.type == "cuda"  # the stages are GPU kernels' device times
            stage_plot = gr.Plot(label="Stages of one decode step", elem_id="stage-plot", visible=gpu)
            with gr.Row():
                run_file = gr.DownloadButton("Download this run (JSON)", visible=False, elem_id="run-file")
                report_file = gr.DownloadButton("Download the report (HTML)", visible=False, elem_id="report-file")
        with gr.Tab("Evaluate", id="evaluate"):
            with gr.Row():
                eval_pick = gr.Dropdown([], label="Figure", elem_id="eval-figure")
                eval_reload = gr.Button("Reload the latest results", elem_id="eval-reload")
            eval_plot = gr.Plot(label="Evaluation")
            eval_note = gr.Markdown(elem_id="eval-report")
            eval_figures = gr.State({})
        api_call, api_result = gr.Button(visible=False), gr.JSON(visible=False)
        include_run = gr.Checkbox(False, visible=False)  # /compare's include_run

        outputs = [
            status, adamas_answer, adamas_stats, full_answer, full_stats, summary,
            document_plot, density_plot, scatter_plot, latency_plot, recall_plot, stage_plot, run_file, report_file,
            layer, head, step, recording,
        ]  # fmt: skip  # in OUTPUTS order
        inputs = [file, text, question, budget, thresholds, custom, dense, sink, recent, max_new, evidence]
        on_model = {"concurrency_id": "model", "concurrency_limit": 1}  # one generation at a time
        quick = {"concurrency_limit": None, "show_progress": "hidden", "api_visibility": "private"}  # UI only
        runs = [run.click(studio.run, inputs, outputs, api_visibility="private", show_progress_on=status, **on_model)]
        picked = examples.click(studio.example, examples, [text, file, question, evidence, example_note], **quick)
        runs.append(
            picked.success(studio.run, inputs, outputs, api_visibility="private", show_progress_on=status, **on_model)
        )
        stop.click(lambda: STOPPED, None, status, cancels=runs, **quick)
        gr.on([file.upload, text.input], lambda: (None, ""), None, [evidence, example_note], **quick)  # not an example
        budget.release(snap_budget, budget, budget, **quick)
        thresholds.change(lambda mode: gr.Textbox(visible=mode == "custom"), thresholds, custom, **quick)
        settings = [thresholds, custom, dense, sink, recent]
        measured.click(lambda: settings_values(None), None, settings, **quick)
        paper.click(lambda: settings_values(AdamasConfig.paper()), None, settings, **quick)
        redraw = [layer.input, head.release, step.release]
        gr.on(redraw, scatter_figure, [recording, layer, head, step], scatter_plot, trigger_mode="always_last", **quick)
        api_call.click(
            studio.compare,
            [text, file, question, budget, max_new, include_run],
            api_result,
            api_name="compare",
            **on_model,
        )
        evaluation = [eval_note, eval_pick, eval_plot, eval_figures]
        gr.on([demo.load, eval_reload.click], studio.evaluation, None, evaluation, **quick)
        eval_pick.input(lambda name, built: built.get(name), [eval_pick, eval_figures], eval_plot, **quick)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True):
    """Serve `demo` (in the background when not `block`); uploads are capped at the document size limit."""
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=MAX_DOCUMENT_BYTES,
        prevent_thread_lock=not block,
        css=CSS,
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, load the model once, then serve the app."""
    parser = argparse.ArgumentParser(description="Adamas Studio: Adamas sparse attention beside full attention")
    parser.add_argument(
        "--model", default=None, help=f"HF model id or directory (default: {DEFAULT_MODEL_NAME}, offline)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--share", action="store_true", help="also create a public Gradio share link (off by default)")
    parser.add_argument(
        "--max-context", type=int, default=None, help="cap on prompt + answer tokens (default: model's)"
    )
    parser.add_argument(
        "--eval-dir", type=Path, default=RESULTS_DIR, help="where the Evaluate tab finds results (default: the newest"
        " results.json under benchmarks/results)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logger.setLevel(logging.INFO)  # this app's lines, not every library's
    model, tokenizer = load_model(args.model)
    studio = Studio(
        model, tokenizer, args.max_context, model_name=args.model or DEFAULT_MODEL_NAME, eval_dir=args.eval_dir
    )
    logger.info("Adamas Studio: %s, %s, context %d tokens", studio.model_name, studio.device, studio.context)
    launch(build_app(studio), args.host, args.port, args.share)


if __name__ == "__main__":
    main()
