"""One session's state, the second of the two places state lives (the other is the cache): the document as
read, the job checked from the user's input, and the comparison it ran, kept as plain numbers and text
(every figure and download is drawn from it, without the model)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from adamas.comparison import Comparison
from adamas.config import AdamasConfig
from adamas.documents import DocumentPrompt

MIN_DOCUMENT_TOKENS = 16
"""Fewer document tokens than the smallest budget leave Adamas nothing to choose: the page warns."""


@dataclass(frozen=True)
class Document:
    """A document's text as far as the context can reach, what was cut off before tokenizing, where it came from."""

    text: str
    name: str = "the pasted text"
    cut_chars: int = 0
    source: str | None = None  # the upload's path on the server (deleted once read)

    def describe(self) -> str:
        """One line for the page: what was read, what was cut."""
        cut = f", the last {self.cut_chars:,} cut (past what the context holds)" if self.cut_chars else ""
        return f"{self.name}: {len(self.text):,} characters read{cut}."

    def length_notes(self, prompt: DocumentPrompt, context: int, new: int) -> list[str]:
        """What the user should know of the document's length in `prompt` (a `context`-token window leaving room
        for `new` tokens): cut to fit, or almost empty."""
        kept, fits = len(prompt.tokens), f"The document is longer than the {context}-token context allows"
        room = f"leaving room for the question and {new} new tokens."
        if self.cut_chars:
            cut = f"{prompt.dropped} tokens and {self.cut_chars:,} more characters"
            return [f"{fits}: its first {kept} tokens were kept and the rest ({cut}) cut, {room}"]
        if prompt.dropped:
            return [f"{fits}: its first {kept} tokens were kept and the last {prompt.dropped} cut, {room}"]
        if kept < MIN_DOCUMENT_TOKENS:
            chars = len(prompt.document)
            return [
                f"The document holds only {kept} token{'s' * (kept > 1)} ({chars} character{'s' * (chars > 1)}): "
                "there is little to read, and nothing for Adamas to choose from, so the answers say more about the "
                "model than the document."
            ]
        return []


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
    token_ids: dict[str, list[int]] = field(default_factory=lambda: {"adamas": [], "full": []})
    answer_notes: dict[str, str] = field(default_factory=dict)  # why an answer has no visible text

    def add(self, mode: str, record) -> None:
        """Append one step (an adamas.generation.StepRecord) of the "adamas" or the "full" run."""
        self.result.add(mode, record)
        self.token_ids[mode].append(record.token_id)

    def traced_layers(self) -> list[int]:
        """The layers whose heads' scores are traced, in order: figure 3's choices."""
        return sorted({layer for layer, _ in self.job.pairs})

    def stats(self, mode: str) -> str:
        """One line under an answer: prefill time (or that of copying the other run's), tokens so far, mean decode
        latency, why it is empty."""
        if mode not in self.result.prefill_ms:
            return ""
        steps, seconds = self.result.step_ms[mode], self.result.prefill_ms[mode] / 1e3
        prefill = f"prefill {seconds:.2f} s"
        if mode in self.result.copied_prefill:
            prefill = f"prefill shared with the other answer (its cache copied in {seconds:.2f} s)"
        line = f"{prefill} · {len(steps) + 1} tokens"
        line += f" · **{np.mean(steps):.0f} ms/token** (mean of {len(steps)} steps)" if steps else ""
        return line + (f"  \n⚠️ {self.answer_notes[mode]}" if mode in self.answer_notes else "")

    def answers(self) -> dict[str, str]:
        """Both answers so far, with their stats lines, by the names the page gives them."""
        stats = {f"{mode}_stats": self.stats(mode) for mode in self.result.answers}
        return {f"{mode}_answer": text for mode, text in self.result.answers.items()} | stats

    def summary(self) -> dict:
        """What /compare returns: the answers, the summary numbers and the warnings shown."""
        config, prompt = self.job.config, self.job.prompt
        return self.result.summary() | {
            "budget": config.budget,
            "thresholds": config.thresholds if isinstance(config.thresholds, str) else list(config.thresholds),
            "context_tokens": prompt.length,
            "document_tokens": len(prompt.tokens),
            "dropped_tokens": prompt.dropped,
            "warnings": [*self.job.notes, *self.answer_notes.values()],
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
