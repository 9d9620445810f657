"""The app's settings as people type them, read into an AdamasConfig: every value checked, every change said.

The page and /compare take numbers as typed (a budget may come as "abc", NaN or nothing); each
reader here either returns what it will run with, with a note when that differs from what was
typed, or raises ValueError/TypeError saying what was wrong and what is allowed.
"""

from __future__ import annotations

import math
import re

from adamas.config import PAPER_THRESHOLDS, AdamasConfig

BUDGETS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
"""The budgets on offer: powers of two and the midpoints 1.5 times them."""
MAX_NEW_TOKENS = 128
"""The traces grow with every decode step (adamas.tracing gives their memory), so runs stop here."""
THRESHOLD_MODES = ("calibrated", "paper", "custom")


def snap_budget(value: float) -> int:
    """The entry of BUDGETS nearest to `value` on a log scale."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"the budget must be a positive number of tokens, got {value!r}")
    return min(BUDGETS, key=lambda b: abs(math.log(b / value)))


def read_budget(value: object) -> tuple[int, str | None]:
    """The budget to run with for a typed `value`, and a note saying what changed when it is not on offer."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"The budget is empty: enter a number of tokens from {BUDGETS[0]} to {BUDGETS[-1]}.")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(
                f"the budget must be a positive number of tokens, got {value!r}: enter a number from "
                f"{BUDGETS[0]} to {BUDGETS[-1]}"
            ) from None
    chosen = snap_budget(value)
    if chosen == value:
        return chosen, None
    return chosen, (
        f"A budget of {value:g} is not on offer ({BUDGETS[0]} to {BUDGETS[-1]}: powers of two and their midpoints): "
        f"ran with {chosen}, the nearest."
    )


def whole(name: str, value: object, low: int, high: int | None = None) -> int:
    """A typed number as an int in [low, high], else ValueError naming it and what is allowed."""
    allowed = f"a whole number from {low} to {high}" if high is not None else f"a whole number ≥ {low}"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{name} is empty: enter {allowed}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{name} must be {allowed}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if value != int(value) or value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}, got {value:g}")
    return int(value)


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


def settings_values(config: AdamasConfig | None) -> tuple:
    """The Advanced settings' values (thresholds, custom, dense layers, sink, recent) of a config.

    None: the measured defaults, with sink and recent left blank so that they follow the budget.
    """
    window = (None, None) if config is None else (config.sink, config.recent)
    config = config or AdamasConfig()
    return threshold_mode(config), custom_text(config), list(config.dense_layers), *window


def read_settings(
    defaults: AdamasConfig,
    layers: int,
    budget: int,
    thresholds: str | None,
    custom: str,
    dense: list[int] | None,
    sink: object,
    recent: object,
) -> AdamasConfig:
    """The Advanced settings read into a config at `budget`; those left None (or blank) take `defaults`' values."""
    chosen = list(defaults.dense_layers) if dense is None else list(dense)
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < layers for i in chosen):
        raise ValueError(f"dense layers must be layer indices from 0 to {layers - 1}, got {chosen}")
    return AdamasConfig(
        budget=budget,
        thresholds=parse_thresholds(threshold_mode(defaults) if thresholds is None else thresholds, custom),
        dense_layers=tuple(sorted(set(chosen))),
        sink=None if _blank(sink) else whole("sink tokens", sink, 0),  # blank: the default, fitted to the budget
        recent=None if _blank(recent) else whole("recent tokens", recent, 0),
    )


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())
