"""Adamas Studio without the page: a job checked from the user's input, one generation at a time, a run streamed
into its session, its files. app.py wires this to Gradio; nothing here imports gradio.

A run's life: `read` or `paste` gives a Document cut to what the context can hold; `prepare` checks
every setting into a Job (ValueError/TypeError with a message for the user); `stream` waits for
the model's lane (yielding Waiting), then runs Adamas and full attention side by side into the
Session, yielding each step's mode, and ends early with adamas.stopping.Stopped once `stop` is set.
`run_page` is the page's Run button over all of that: what each part of the page shows, as plain values.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import html
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from adamas.config import AdamasConfig
from adamas.documents import MAX_DOCUMENT_BYTES, DocumentError, clean_text, document_prompt, read_document
from adamas.eval.report import latest_results, load_report
from adamas.generation import generate_side_by_side, stop_ids
from adamas.lane import Busy, Lane
from adamas.loading import DEFAULT_MODEL_NAME, max_context
from adamas.session import Document, Job, Session
from adamas.settings import MAX_NEW_TOKENS, read_budget, read_settings, whole
from adamas.stopping import Stopped, stoppable
from adamas.tracing import default_pairs
from adamas.uploads import READ_TIMEOUT_S, Exports, private_folder, read_upload

logger = logging.getLogger(__name__)

DEFAULT_NEW_TOKENS = 32
WAIT_LIMIT_S = 900.0
"""How long a run waits for the model before it is refused as busy."""
WAIT_SLICE_S = 0.5
"""How often a waiting run reports its place and looks for Stop."""
USER_ERRORS = (ValueError, TypeError, Busy)  # adamas.documents.DocumentError is a ValueError
"""What the page and /compare answer with the error's message; anything else is a fault, with its traceback."""
RUN_INPUTS = ("file", "upload", "text", "question", "budget", "thresholds", "custom", "dense", "sink", "recent")
RUN_INPUTS += ("max_new_tokens", "evidence")
"""What `run_page` reads, by the names of the page's parts: the document's three, then `prepare`'s arguments."""
STOPPED = "**Stopped.** The answers so far stay; the figures come with a run that finishes."


class Waiting(NamedTuple):
    """What `Studio.stream` yields while its run waits: the runs ahead of it."""

    ahead: int


class Studio:
    """The loaded model with what every session shares: its limits, the examples, the lane, the run files."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        context: int | None = None,
        model_name: str = DEFAULT_MODEL_NAME,
        examples: list[dict[str, str]] | None = None,
        examples_dir: Path | None = None,
        lane: Lane | None = None,
    ) -> None:
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        limit = max_context(model)
        self.context = limit if context is None else min(whole("the context limit", context, 2), limit)
        self.layers, self.heads = model.config.num_hidden_layers, model.config.num_attention_heads
        self.device = device_note(model)
        self.examples, self.examples_dir = examples or [], examples_dir
        self.defaults = AdamasConfig()
        # No token is longer than the longest vocabulary entry, so this many characters always hold
        # as many tokens as the context: cutting there first keeps tokenizing bounded.
        self.max_chars = self.context * max(map(len, tokenizer.get_vocab()), default=1)
        self.read_timeout_s = READ_TIMEOUT_S
        self.lane = lane or Lane()
        self.exports = Exports(private_folder() / "runs")
        self._stops: dict[str, threading.Event] = {}
        self._stops_lock = threading.Lock()
        self._stop_ids = stop_ids(model, tokenizer)

    def read(self, path: str, name: str | None = None) -> Document:
        """An uploaded file's text (read in a child process, time-boxed), cut to `max_chars`; the upload is deleted."""
        label = Path(name or path).name
        if not Path(path).exists() and private_folder() in Path(path).resolve().parents:
            raise DocumentError(f"{label} is no longer on the server (an upload is deleted once read): upload it again")
        text, cut = read_upload(path, self.max_chars, name, self.read_timeout_s)
        return Document(text, label, cut, str(path))

    def paste(self, text: object) -> Document:
        """Pasted text, cleaned and cut to `max_chars`; DocumentError when there is none."""
        if text is None or text == "":
            raise ValueError(
                f"No document: upload a file (up to {MAX_DOCUMENT_BYTES // 2**20} MB; a larger one is refused as it "
                "uploads) or paste text."
            )
        if not isinstance(text, str):
            raise TypeError(f"the document's text must be a string, got {type(text).__name__}")
        cleaned = clean_text(text, "the pasted text")
        return Document(cleaned[: self.max_chars], cut_chars=max(0, len(cleaned) - self.max_chars))

    def choose(self, file: str | None, text: str | None, upload: Document | None = None) -> tuple[Document, list[str]]:
        """The document of a request, and notes: the file (`upload` when it was read already) before pasted text."""
        if not file:
            return self.paste(text), []
        notes = ["Both a file and pasted text were given: the uploaded file is used."] if text and text.strip() else []
        if upload is not None and upload.source == str(file):
            return upload, notes
        return self.read(file), notes

    def prepare(
        self,
        document: Document,
        question: str | None,
        budget: object = None,
        thresholds: str | None = None,
        custom: str = "",
        dense: list[int] | None = None,
        sink: object = None,
        recent: object = None,
        max_new_tokens: object = DEFAULT_NEW_TOKENS,
        evidence: str | None = None,
        notes: list[str] | None = None,
    ) -> Job:
        """Check every input and build the Job; ValueError/TypeError with a readable message.

        Advanced settings left None take AdamasConfig()'s defaults; an empty budget is refused.
        """
        notes = list(notes or [])
        if not isinstance(question, str) or not question.strip():
            raise ValueError("The question is empty: type a question about the document.")
        new = whole("max new tokens", max_new_tokens, 1, MAX_NEW_TOKENS)
        if new >= self.context:
            raise ValueError(f"max new tokens ({new}) leave no room for a document in the {self.context}-token context")
        chosen, changed = read_budget(budget)
        notes += [changed] if changed else []
        prompt = document_prompt(self.tokenizer, document.text, question.strip(), max_tokens=self.context - new)
        notes += document.length_notes(prompt, self.context, new)
        if chosen >= prompt.length:
            notes.append(
                f"A budget of {chosen} tokens is not below the context ({prompt.length} tokens), so Adamas "
                f"would keep every token: ran with budget {prompt.length} (nearly full attention). "
                "Pick a smaller budget to see it choose."
            )
            chosen = prompt.length
        config = read_settings(self.defaults, self.layers, chosen, thresholds, custom, dense, sink, recent)
        pairs = tuple(
            (layer, h) for layer, _ in default_pairs(self.layers, config.dense_layers) for h in range(self.heads)
        )
        highlight = None
        if evidence and evidence in prompt.document:
            at = prompt.document.index(evidence)
            span = prompt.token_span(at, at + len(evidence))
            highlight = span if span[1] > span[0] else None
        return Job(prompt, config, new, pairs, highlight, question.strip(), notes)

    def start(self, key: str | None) -> threading.Event:
        """A new run's stop flag, which stop(key) sets; a key names a client (None: no one can stop it)."""
        flag = threading.Event()
        if key is not None:
            with self._stops_lock:
                self._stops[key] = flag
        return flag

    def stop(self, key: str | None) -> bool:
        """Stop the client's current run, waiting or running; whether there was one."""
        with self._stops_lock:
            flag = self._stops.pop(key, None) if key is not None else None
        if flag is not None:
            flag.set()
        return flag is not None

    def end(self, key: str | None, flag: threading.Event) -> None:
        """Forget a finished run's stop flag (unless a newer run of the client has replaced it)."""
        with self._stops_lock:
            if key is not None and self._stops.get(key) is flag:
                del self._stops[key]

    def stream(self, session: Session, stop: threading.Event) -> Iterator[Waiting | str]:
        """Wait for the model (yielding Waiting: runs ahead, 0 when its turn comes), then run the session's job,
        yielding the mode of each step recorded.

        Raises Busy when too many runs wait or the wait is too long, Stopped once `stop` is set.
        """
        turn, since, told = self.lane.join(), time.monotonic(), None
        try:
            while (ahead := self.lane.wait(turn, WAIT_SLICE_S)) > 0:
                if stop.is_set():
                    raise Stopped("stopped while waiting for the model")
                if time.monotonic() - since > WAIT_LIMIT_S:
                    raise Busy(f"The model is busy: waited {WAIT_LIMIT_S / 60:.0f} min for it. Try again later.")
                if ahead != told:  # the page hears of a change, not of every look
                    yield Waiting(told := ahead)
            if stop.is_set():
                raise Stopped("stopped while waiting for the model")
            yield Waiting(0)  # its turn: the prefill starts
            yield from self._generate(session, stop)
        finally:
            self.lane.leave(turn)
            return_memory()

    def _generate(self, session: Session, stop: threading.Event) -> Iterator[str]:
        job = session.job
        with stoppable(self.model, stop.is_set):
            steps = generate_side_by_side(
                self.model, self.tokenizer, job.prompt.messages, job.config, job.max_new_tokens, True, job.pairs,
                profile=True,
            )  # fmt: skip
            try:
                for mode, record in steps:
                    session.add(mode, record)
                    if stop.is_set():  # a CUDA-graph step runs no hook: look between steps too
                        raise Stopped("stopped on request, between decode steps")
                    yield mode
            finally:
                steps.close()  # restores the model's attention state when the run is stopped
        session.result.finish()
        session.answer_notes = {mode: note for mode in session.token_ids if (note := self.why_empty(session, mode))}

    def why_empty(self, session: Session, mode: str) -> str | None:
        """Why an answer shows no text, when it shows none: it ended at once, or its tokens are only whitespace."""
        ids = session.token_ids[mode]
        if not ids or session.result.answers[mode].strip():
            return None
        if ids[0] in self._stop_ids:
            return "The model ended this answer at once: its first token was the end-of-sequence token."
        raw = self.tokenizer.decode(ids, skip_special_tokens=False)
        return f"This answer has no visible text: its {len(ids)} tokens decode to {raw!r}. More new tokens may help."

    def run_page(
        self,
        values: Mapping[str, object],
        key: str | None,
        draw: Callable[[Session], dict[str, object]],
        report: Callable[[dict, list], str],
    ) -> Iterator[dict[str, object]]:
        """The Run button on `values` (by RUN_INPUTS' names) for client `key`: both answers streamed side by side,
        then the figures and the run's files, as updates by the names of the page's parts, holding plain values.

        Besides the parts' names: "figures" (panel name -> figure; empty clears them), "warnings" and "notes" (to
        tell the user at once). `draw` gives a finished session's figures; `report`, the HTML of its export and them.
        """
        try:
            document, notes = self.choose(values["file"], values["text"], values["upload"])
            job = self.prepare(document, **{name: values[name] for name in RUN_INPUTS[3:]}, notes=notes)
        except USER_ERRORS as err:
            yield refusal(err)
            return
        where = f"context {job.prompt.length} tokens · budget {job.config.budget}"
        where += "".join(f"\n\n⚠️ {html.escape(note)}" for note in job.notes)
        session, flag = Session(job), self.start(key)
        cleared = {"summary": "", "recording": None, "figures": {}, "run_file": None, "report_file": None}
        yield {"status": f"**Queued** · {where}", "warnings": job.notes, **cleared}
        try:
            for event in self.stream(session, flag):
                if isinstance(event, Waiting) and event.ahead:
                    ahead = f"{event.ahead} run{'s' * (event.ahead > 1)} ahead of yours"
                    yield {"status": f"**Waiting** for the model (it runs one at a time): {ahead} · {where}"}
                else:
                    phase = "Prefill" if len(session.result.prefill_ms) < 2 else "Decoding"
                    yield {"status": f"**{phase}** · {where}", **session.answers()}
        except Stopped:
            yield {"status": STOPPED, **session.answers()}
            return
        except USER_ERRORS as err:
            yield refusal(err)
            return
        finally:
            self.end(key, flag)
        yield {"status": f"**Done** · {where}", **self._finished(session, draw, report)}

    def _finished(self, session: Session, draw: Callable, report: Callable) -> dict[str, object]:
        """A finished run's updates: summary, figures, files, the trace controls' range and the session."""
        try:
            figures, warnings = draw(session), []
        except ValueError as err:  # a figure refusing its data must not lose the answers
            figures, warnings = {}, [f"Could not draw the figures: {err}"]
        run_file, report_file = self.save(session, lambda run: report(run, list(figures.values())))
        traced = {"layer": session.traced_layers(), "head": 0, "step": max(len(session.result.heads), 1)}
        return {"summary": session.summary_line(), "figures": figures, "warnings": warnings, "recording": session,
                "run_file": str(run_file), "report_file": str(report_file), **traced, **session.answers()}  # fmt: skip

    def take(self, path: str | None) -> dict[str, object]:
        """An upload read as it arrives, then deleted: the session's document ("upload", None if unreadable) and
        the line under the file ("file_note"), as `run_page`'s updates."""
        try:
            document = self.read(path) if path else None
        except USER_ERRORS as err:
            said = refusal(err)
            return {"upload": None, "file_note": said["status"], "warnings": said["warnings"]}
        note = html.escape(document.describe() + " The file was removed from the server.") if document else ""
        return {"upload": document, "file_note": note}

    def budget_box(self, value: object) -> dict[str, object]:
        """The budget box once left: snapped to a budget on offer ("notes" says so), or set back to the default."""
        try:
            chosen, note = read_budget(value)
        except ValueError as err:
            return {"budget": self.defaults.budget, "warnings": [f"{err} It was set back to {self.defaults.budget}."]}
        return {"budget": chosen, "notes": [note] if note else []}

    def run_to_end(self, session: Session) -> Session:
        """Run the session's job without streaming (waiting for the model as long as the lane allows)."""
        for _ in self.stream(session, threading.Event()):
            pass
        return session

    def compare(
        self,
        document_text: str | None = None,
        document_file: str | None = None,
        question: str | None = None,
        budget: object = None,
        max_new_tokens: object = None,
        include_run: bool = False,
    ) -> dict:
        """Both modes on a document (text or an uploaded file's path): the answers and summary numbers.

        With `include_run`, also "run": what the page's "Download this run" file holds (Session.export).
        """
        document, notes = self.choose(document_file, document_text)
        budget = self.defaults.budget if budget is None else budget  # not given: the default
        new = DEFAULT_NEW_TOKENS if max_new_tokens is None else max_new_tokens
        session = self.run_to_end(Session(self.prepare(document, question, budget, max_new_tokens=new, notes=notes)))
        summary = session.summary()
        return summary | {"run": session.export(self.model_name, self.device)} if include_run else summary

    def save(self, session: Session, report: Callable[[dict], str]) -> tuple[Path, Path]:
        """Write the run's JSON and its HTML report (`report` of its export) among the kept exports; their paths."""
        run = session.export(self.model_name, self.device)
        files = {"adamas-run.json": json.dumps(run, indent=1) + "\n", "adamas-report.html": report(run)}
        run_file, report_file = self.exports.write(files)
        return run_file, report_file

    def example(self, index: int) -> dict[str, object]:
        """An example filling the page's inputs: its text (no file), question, evidence and a note on its answer."""
        example = self.examples[int(index)]
        text = read_document(Path(self.examples_dir or ".") / example["file"])
        note = (
            f"**{example['name']}** · expected answer: *{example['answer']}* (its passage is outlined in "
            f"figure 1)  \nSource: {example['source']}. Licence: {example['licence']}."
        )
        filled = {"text": text, "file": None, "upload": None, "question": example["question"]}
        return filled | {"evidence": example.get("evidence"), "example_note": note}


def refusal(err: Exception) -> dict[str, object]:
    """The page's answer to input it cannot use: the status, escaped (the message may quote what the user typed,
    which must show as text, never as markup), the message to tell at once, and one line in the log."""
    logger.info("refused: %s", err)
    return {"status": f"**Could not run:** {html.escape(str(err))}", "warnings": [str(err)]}


def evaluation_report(eval_dir: Path) -> tuple[str, list[dict]]:
    """The Evaluate tab's text and records: eval_dir's newest full run (report.latest_results), else a note."""
    path = latest_results(eval_dir)
    if path is None:
        return f"No evaluation results under `{eval_dir}` yet: run `python -m adamas.eval --out DIR` there.", []
    try:
        text, records = load_report(path)
    except ValueError as err:
        return f"**Could not read the results:** {err}", []
    heading = f"Results from `{path.parent.name}/{path.name}` (the newest full run under `{eval_dir.name}/`, "
    return heading + "else the newest --quick one)\n\n" + text, records


def device_note(model: torch.nn.Module) -> str:
    """How both runs decode, in words, so that the latencies shown can be read for what they are."""
    from adamas.generation import graph_obstacle

    device = next(model.parameters()).device
    if device.type != "cuda":
        return "CPU (no GPU): both runs decode on a fixed-capacity cache, each step eagerly, timed as it runs"
    name = torch.cuda.get_device_name(device)
    obstacle = graph_obstacle(model)
    if obstacle is None:
        return f"Triton kernels on {name}, every decode step one CUDA-graph replay, as the library runs"
    return f"Triton kernels on {name}; latencies are **eager** (steps driven from Python): {obstacle}"


def load_examples(directory: Path) -> list[dict[str, str]]:
    """The bundled examples (examples.json in `directory`), or none when the file is missing."""
    index = Path(directory) / "examples.json"
    if not index.is_file():
        logger.warning("no bundled examples: %s is missing", index)
        return []
    return json.loads(index.read_text(encoding="utf-8"))


def return_memory() -> None:
    """Hand memory a finished run freed back to the system: glibc keeps freed blocks for reuse otherwise."""
    gc.collect()
    with contextlib.suppress(AttributeError, OSError):  # not glibc: nothing to trim
        ctypes.CDLL(None).malloc_trim(0)
