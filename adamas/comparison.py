"""Two answers to one prompt, Adamas and full attention, kept as plain values: text, latencies and Adamas's traces.

`Comparison` collects the records of `adamas.generation.generate_side_by_side` (`add`), turns
the Adamas run's recorder into numpy arrays once the run ends (`finish`), and gives them as
JSON values (`to_dict`) and headline numbers (`summary`): what the app shows and downloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from adamas.config import check_int

if TYPE_CHECKING:
    from adamas.generation import StepRecord
    from adamas.tracing import TraceRecorder


@dataclass
class Comparison:
    """What generate_side_by_side produced, kept as text and numpy arrays: answers, latencies, Adamas's traces."""

    answers: dict[str, str] = field(default_factory=lambda: {"adamas": "", "full": ""})
    prefill_ms: dict[str, float] = field(default_factory=dict)  # per mode, step 0: its prefill, or its copy of one
    copied_prefill: list[str] = field(default_factory=list)  # the modes whose step 0 copied the other's prefilled cache
    step_ms: dict[str, list[float]] = field(default_factory=lambda: {"adamas": [], "full": []})
    graph: dict[str, bool] = field(default_factory=dict)  # per mode: whether its decode steps were graph replays
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # per mode: device µs per stage of one step
    recall: list[np.ndarray] = field(default_factory=list)  # per decode step: [layers, Hq] fp32, NaN on dense layers
    heads: list[dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=list)
    """Per decode step, per traced (layer, head): selected [K] int64 (-1: empty), estimated [L] int16, true [L] fp16."""
    density: np.ndarray | None = None  # [layers, Hq, L] int32 selections summed over steps, set by finish()
    _recorder: TraceRecorder | None = field(default=None, repr=False)

    def add(self, mode: str, record: StepRecord) -> None:
        """Append one step of the "adamas" or the "full" run."""
        self.answers[mode] += record.text
        if record.step == 0:
            self.prefill_ms[mode] = record.latency_s * 1e3
            if record.copied:
                self.copied_prefill.append(mode)
            if record.stages is not None:
                self.stages[mode] = record.stages
        else:
            self.step_ms[mode].append(record.latency_s * 1e3)
            self.graph[mode] = record.graph
        if record.recorder is not None:
            self._recorder = record.recorder

    def finish(self) -> Comparison:
        """After the last step: compute the Adamas run's traces from its recorder, then let the recorder go."""
        if self._recorder is not None:
            run = self._recorder.finish()
            self.recall = [step.recall.numpy() for step in run.steps]
            self.heads = [
                {key: (h.selected.numpy(), h.estimated.numpy(), h.true.numpy()) for key, h in step.heads.items()}
                for step in run.steps
            ]
            self.density = run.density.numpy()
            self._recorder = None
        return self

    def to_dict(self, density_bins: int = 256) -> dict[str, object]:
        """The run as plain JSON values: per-step latencies, recall, every traced head's selections, the scores
        of the last step, and the density summed into at most `density_bins` near-equal position bins.

        NaN (recall on dense layers) becomes None. Scores are kept for the last step only: all of them
        would take pairs x steps x context numbers.
        """
        check_int("density_bins", density_bins, 1)
        run: dict[str, object] = {
            "answers": dict(self.answers),
            "prefill_ms": dict(self.prefill_ms),
            "copied_prefill": list(self.copied_prefill),
            "step_ms": {mode: list(ms) for mode, ms in self.step_ms.items()},
            "decode": {mode: "cuda graph" if graph else "eager" for mode, graph in self.graph.items()},
            "stages_us": dict(self.stages),
            "recall": [np.where(np.isnan(r), None, r).tolist() for r in self.recall],  # [steps][layers][Hq]
        }
        pairs = sorted(self.heads[0]) if self.heads else []
        run["heads"] = [
            {
                "layer": layer,
                "head": head,
                "selected": [step[(layer, head)][0].tolist() for step in self.heads],  # per step, -1: empty
                "last_step_estimated": self.heads[-1][(layer, head)][1].tolist(),
                "last_step_true": self.heads[-1][(layer, head)][2].astype(float).tolist(),
            }
            for layer, head in pairs
        ]
        if self.density is not None:
            length = self.density.shape[-1]
            starts = (np.arange(min(density_bins, length)) * length) // min(density_bins, length)
            binned = np.add.reduceat(self.density, starts, axis=-1)  # [layers, Hq, bins]
            run["density"] = {"length": length, "bin_starts": starts.tolist(), "counts": binned.tolist()}
        return run

    def summary(self) -> dict[str, object]:
        """The answers and the headline numbers: mean decode ms per token, speedup (full / Adamas), mean recall."""
        ms = {mode: float(np.mean(steps)) if steps else None for mode, steps in self.step_ms.items()}
        recall = np.stack(self.recall) if self.recall else np.full(1, np.nan)
        return {
            "adamas_answer": self.answers["adamas"].strip(),
            "full_answer": self.answers["full"].strip(),
            "same_answer": self.answers["adamas"] == self.answers["full"],
            "new_tokens": {mode: len(steps) + 1 for mode, steps in self.step_ms.items() if mode in self.prefill_ms},
            "prefill_ms": dict(self.prefill_ms),
            "copied_prefill": list(self.copied_prefill),
            "adamas_ms_per_token": ms["adamas"],
            "full_ms_per_token": ms["full"],
            "speedup": ms["full"] / ms["adamas"] if ms["adamas"] and ms["full"] else None,
            "decode": "cuda graph" if self.graph and all(self.graph.values()) else "eager",
            "stages_us": dict(self.stages),
            "mean_recall": None if np.isnan(recall).all() else float(np.nanmean(recall)),
        }
