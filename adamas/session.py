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

    def stats(self, mode: str) -> str:
        """One line under an answer: prefill time, tokens so far, mean decode latency, why it is empty."""
        if mode not in self.result.prefill_ms:
            return ""
        steps = self.result.step_ms[mode]
        line = f"prefill {self.result.prefill_ms[mode] / 1e3:.2f} s · {len(steps) + 1} tokens"
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
