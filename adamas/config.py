"""The one source of Adamas defaults: a frozen, validated configuration."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

PAPER_THRESHOLDS: tuple[float, float, float] = (-10.0, 0.0, 10.0)
"""Bucket edges of the authors' code, tuned on Llama-2 at head_dim 128."""

CALIBRATION_QUANTILES: tuple[float, float, float] = (0.35, 0.5, 0.65)
"""Quantiles of the prefill keys' transformed values for "calibrated" thresholds: the best recall
measured on SmolLM2 (benchmarks/results/threshold_recall_cpu.json)."""

DEFAULT_THRESHOLDS: tuple[float, float, float] | str = "calibrated"
DEFAULT_DENSE_LAYERS: tuple[int, ...] = (0, 1)
DEFAULT_SINK = 4
DEFAULT_RECENT = 32
WINDOW_BUDGET = 64
"""The defaults won a grid of settings on the default model's passkeys, needle questions and perplexity
(benchmarks/choose_defaults.py; the results and the reasons in docs/evaluation.md#defaults). Below budget
WINDOW_BUDGET, the smallest measured, an unset sink and recent window shrink in proportion to the budget."""
PAPER_FIELDS: dict[str, object] = {"thresholds": "paper", "dense_layers": (0, 1), "sink": 0, "recent": 0}
"""The paper's decode settings, short of the budget: what `AdamasConfig.paper()` sets."""

BACKENDS = ("auto", "torch", "triton", "cpu")
DENSE_BACKENDS = ("auto", "torch", "triton")
"""How the integration runs a masked one-token dense step: the split-K kernel on CUDA and SDPA elsewhere, or either."""
SELECTORS = ("adamas", "adamas-calibrated", "quest", "streaming", "oracle", "full")
"""How a decode step picks its tokens: Adamas (paper or calibrated thresholds), or a baseline to compare with."""
ADAMAS_SELECTORS = SELECTORS[:2]
"""The selectors that score tokens by their 2-bit key codes."""
QUEST_PAGE = 16
"""Tokens per page of the Quest selector, as in the Quest paper."""
STREAMING_SINK = 4
"""Sink tokens of the StreamingLLM selector when the config sets no `sink`, as in the StreamingLLM paper."""
CODE_LEVELS = 4
"""Levels of a 2-bit code: the buckets 0..3 that three thresholds cut a transformed value into."""


def max_code_distance(head_dim: int) -> int:
    """The largest Manhattan distance between two codes of `head_dim` dims: every dim at opposite levels (0 and 3).

    Distances run over 0..max_code_distance(d), so a histogram of that many + 1 bins ranks them exactly.
    """
    return (CODE_LEVELS - 1) * head_dim


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """`value` as an int in [minimum, maximum] (no maximum if None), else raise naming it.

    TypeError when it is not an int (a bool is not; a numpy integer is), ValueError when it is out of range.
    The one integer check of the library, the figures and the app.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def check_thresholds(thresholds: object, allow_calibrated: bool = False) -> tuple[float, float, float] | str:
    """Return `thresholds` as three finite, strictly increasing floats.

    `"paper"` stands for the authors' (-10, 0, 10); `"calibrated"` passes through where allowed.
    """
    if thresholds == "paper":
        return PAPER_THRESHOLDS
    if thresholds == "calibrated" and allow_calibrated:
        return "calibrated"
    if isinstance(thresholds, str):
        allowed = "'paper', 'calibrated'" if allow_calibrated else "'paper'"
        raise ValueError(f"thresholds must be {allowed} or three increasing floats, got {thresholds!r}")
    return check_increasing("thresholds", thresholds)


def check_increasing(name: str, thresholds: object) -> tuple[float, float, float]:
    """Return `thresholds` as three finite, strictly increasing floats, else raise naming them."""
    try:
        values = tuple(float(t) for t in thresholds)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be three floats, got {thresholds!r}") from None
    if len(values) != 3:
        raise ValueError(f"{name} must hold exactly 3 values (4 buckets), got {len(values)}: {values}")
    if not all(math.isfinite(t) for t in values):
        raise ValueError(f"{name} must be finite, got {values}")
    if not values[0] < values[1] < values[2]:
        raise ValueError(f"{name} must be strictly increasing, got {values}")
    return values  # type: ignore[return-value]


def check_quantiles(quantiles: object, name: str = "calibration_quantiles") -> tuple[float, float, float]:
    """Return three strictly increasing quantiles inside (0, 1), else raise naming them."""
    values = check_increasing(name, quantiles)
    if not (values[0] > 0 and values[2] < 1):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {values}")
    return values


@dataclass(frozen=True)
class AdamasConfig:
    """How one Adamas decode step selects the tokens it attends to.

    selector: "adamas" (2-bit codes under `thresholds`), "adamas-calibrated" (the same with
        thresholds "calibrated"), or a baseline sharing the cache and the decode path:
        "quest" (pages of QUEST_PAGE tokens ranked by the bound q·max/min of their keys),
        "streaming" (the first `sink` tokens, STREAMING_SINK if 0, and the most recent ones),
        "oracle" (the true top-`budget` by q·k) or "full" (every token).
    budget: tokens attended per query head (sink and recent tokens included).
    thresholds: bucket edges for the 2-bit codes, "paper" for (-10, 0, 10), or "calibrated":
        per layer and KV head, the `calibration_quantiles` of the prefill keys' transformed values.
    dense_layers: layer indices that always run full attention.
    sink: the first `sink` tokens are always selected; unset (None), DEFAULT_SINK scaled to the
        budget (see `default_window`).
    recent: the last `recent` tokens are always selected; unset, DEFAULT_RECENT scaled likewise.
    backend: "auto" (Triton on CUDA, PyTorch elsewhere), "torch" or "triton".
    dense_backend: how the model's masked one-token dense steps run (a dense layer, or full
        attention, on a fixed-capacity cache or a padded batch): "auto" (the split-K kernel
        `adamas.dense_attention` on CUDA, grouped SDPA elsewhere), "torch" (SDPA) or "triton"
        (the kernel; on the CPU only with TRITON_INTERPRET=1).

    The defaults are the best of a measured grid on the default model (benchmarks/choose_defaults.py,
    docs/evaluation.md); `AdamasConfig.paper()` gives the paper's settings.
    """

    budget: int = 128
    thresholds: tuple[float, float, float] | str = DEFAULT_THRESHOLDS
    calibration_quantiles: tuple[float, float, float] = CALIBRATION_QUANTILES
    dense_layers: tuple[int, ...] = DEFAULT_DENSE_LAYERS
    sink: int | None = None
    recent: int | None = None
    backend: str = "auto"
    selector: str = "adamas"
    dense_backend: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", check_int("budget", self.budget, 1))
        if self.selector not in SELECTORS:
            raise ValueError(f"selector must be one of {SELECTORS}, got {self.selector!r}")
        thresholds = check_thresholds(self.thresholds, allow_calibrated=True)
        if self.selector == "adamas-calibrated":
            if thresholds not in (PAPER_THRESHOLDS, "calibrated"):
                raise ValueError(f"selector 'adamas-calibrated' fits its own thresholds; got thresholds {thresholds}")
            thresholds = "calibrated"
        object.__setattr__(self, "thresholds", thresholds)
        object.__setattr__(self, "calibration_quantiles", check_quantiles(self.calibration_quantiles))
        if isinstance(self.dense_layers, (str, bytes)) or not hasattr(self.dense_layers, "__iter__"):
            raise TypeError(f"dense_layers must be a sequence of ints, got {self.dense_layers!r}")
        layers = tuple(check_int("dense_layers item", i, 0) for i in self.dense_layers)
        object.__setattr__(self, "dense_layers", layers)
        self._resolve_window()
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.dense_backend not in DENSE_BACKENDS:
            raise ValueError(f"dense_backend must be one of {DENSE_BACKENDS}, got {self.dense_backend!r}")

    @classmethod
    def paper(cls, budget: int = 128, **fields: object) -> AdamasConfig:
        """The paper's decode step at `budget`: thresholds (-10, 0, 10), layers 0 and 1 dense, no sink or
        recent tokens; `fields` override any of them."""
        return cls(budget=budget, **(PAPER_FIELDS | fields))  # type: ignore[arg-type]

    def _resolve_window(self) -> None:
        """Check sink and recent; fill an unset one from `default_window`, within what the other leaves."""
        sink = None if self.sink is None else check_int("sink", self.sink, 0)
        recent = None if self.recent is None else check_int("recent", self.recent, 0)
        default_sink, default_recent = default_window(self.budget)
        if sink is None:
            sink = max(0, min(default_sink, self.budget - (recent or 0)))
        if recent is None:
            recent = max(0, min(default_recent, self.budget - sink))
        if sink + recent > self.budget:
            raise ValueError(
                f"sink + recent ({sink} + {recent}) must not exceed budget ({self.budget}); "
                "leave one unset to fit it to the budget"
            )
        object.__setattr__(self, "sink", sink)
        object.__setattr__(self, "recent", recent)


def default_window(budget: int) -> tuple[int, int]:
    """(sink, recent) of a config that sets neither: DEFAULT_SINK and DEFAULT_RECENT from budget WINDOW_BUDGET
    up, shrunk in proportion below it (budget 16: 1 and 8), so that every budget keeps room for selected tokens."""
    scale = min(budget, WINDOW_BUDGET)
    return DEFAULT_SINK * scale // WINDOW_BUDGET, DEFAULT_RECENT * scale // WINDOW_BUDGET
