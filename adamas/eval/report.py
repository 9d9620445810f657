"""The evaluation's outputs: results.json and a markdown report.

results.json holds {environment, parameters, seconds, records}; results.md a summary, the
two claims of the paper as tables, and one table per task (rows: length and selector,
columns: budget). The figures are drawn from the records by `visualize.evaluation_figures`
(the command line writes them beside these files; the app shows them).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path

from adamas.config import SELECTORS
from adamas.eval.tasks import TASKS

CLAIM_BUDGET = 64
"""The paper: Adamas matches full attention at a budget of 64 tokens."""
QUEST_RATIO = 8
"""The paper: Adamas reaches Quest's accuracy at up to 8x less budget."""
METRICS = {"accuracy": "share of expected answers found", "perplexity": "lower is better", "recall": "of 1"}


def write_report(out: Path, env: dict, parameters: dict, seconds: float, records: list[dict]) -> list[Path]:
    """Write results.json and results.md into `out`; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.json"
    payload = {"environment": env, "parameters": parameters, "seconds": round(seconds, 1), "records": records}
    results.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    table = out / "results.md"
    table.write_text(markdown(records, env, parameters, seconds))
    return [results, table]


def markdown(records: list[dict], env: dict, parameters: dict, seconds: float) -> str:
    """The report: run line, summary, the paper's claims, one table per task."""
    head = (
        f"# Adamas evaluation\n\n{parameters.get('model')} on {env['device']}, {env['date']}; "
        f"{len(records)} records in {seconds / 60:.1f} min{_shards(parameters)}. "
        "Full attention does not depend on the budget: its one run per prompt is shown in every budget column.\n"
    )
    parts = [head, _summary(records), _claims(records)]
    for task in (*TASKS, "perplexity", "recall"):
        mine = [r for r in records if r["task"] == task]
        if mine:
            metric = mine[0]["metric"]
            parts.append(f"## {task} ({metric}: {METRICS[metric]})\n\n" + table(mine))
    return "\n".join(parts)


def _shards(parameters: dict) -> str:
    n, longest = parameters.get("shards"), parameters.get("longest_shard_seconds")
    return f" of process time ({n} shards; the longest took {longest / 60:.1f} min)" if n and longest else ""


def table(records: list[dict]) -> str:
    """A markdown table: a row per (length, selector), a column per budget."""
    budgets = sorted({r["budget"] for r in records if r["budget"] is not None})
    rows = ["| length | selector | " + " | ".join(map(str, budgets)) + " |", "|---" * (len(budgets) + 2) + "|"]
    for length in sorted({r["length"] for r in records}):
        for selector in _order({r["selector"] for r in records}):
            mine = {r["budget"]: r["value"] for r in records if r["length"] == length and r["selector"] == selector}
            if mine:
                cells = [_fmt(mine.get(b, mine.get(None))) for b in budgets]
                rows.append(f"| {length} | {selector} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _summary(records: list[dict]) -> str:
    """Accuracy averaged over the tasks and lengths, per selector and budget."""
    accuracy = [r for r in records if r["metric"] == "accuracy"]
    if not accuracy:
        return ""
    tasks = ", ".join(t for t in TASKS if any(r["task"] == t for r in accuracy))
    means = _mean_by(accuracy, ("selector", "budget"))
    budgets = sorted({b for _, b in means if b is not None})
    rows = ["| selector | " + " | ".join(map(str, budgets)) + " |", "|---" * (len(budgets) + 1) + "|"]
    for selector in _order({s for s, _ in means}):
        cells = [_fmt(means.get((selector, b), means.get((selector, None)))) for b in budgets]
        rows.append(f"| {selector} | " + " | ".join(cells) + " |")
    return f"## Summary: accuracy averaged over {tasks} and all lengths\n\n" + "\n".join(rows) + "\n"


def _claims(records: list[dict]) -> str:
    """The paper's two claims in numbers: every selector at CLAIM_BUDGET vs full; Adamas at b vs Quest at 8b."""
    means = _mean_by(records, ("task", "selector", "budget"))  # averaged over lengths
    tasks = [t for t in (*TASKS, "perplexity", "recall") if any(k[0] == t for k in means)]
    sparse = _order({s for _, s, b in means if b is not None})
    parts = [f"## The paper's claims\n\nAt budget {CLAIM_BUDGET} (mean over lengths) against full attention:\n"]
    rows = ["| task | full | " + " | ".join(sparse) + " |", "|---" * (len(sparse) + 2) + "|"]
    for task in tasks:
        cells = [_fmt(means.get((task, "full", None)))] + [_fmt(means.get((task, s, CLAIM_BUDGET))) for s in sparse]
        rows.append(f"| {task} | " + " | ".join(cells) + " |")
    parts.append("\n".join(rows) + "\n")
    budgets = sorted({b for _, _, b in means if b is not None})
    pairs = [b for b in budgets if b * QUEST_RATIO in budgets]
    adamas = [s for s in ("adamas", "adamas-calibrated") if s in sparse]
    if pairs and adamas and "quest" in sparse:
        parts.append(f"Adamas at budget b against Quest at {QUEST_RATIO}·b (mean over lengths):\n")
        head = [f"{s} @b" for s in adamas] + [f"quest @{QUEST_RATIO}b"]
        rows = ["| task | b | " + " | ".join(head) + " |", "|---" * (len(head) + 2) + "|"]
        for task in tasks:
            for b in pairs:
                cells = [_fmt(means.get((task, s, b))) for s in adamas] + [
                    _fmt(means.get((task, "quest", QUEST_RATIO * b)))
                ]
                rows.append(f"| {task} | {b} | " + " | ".join(cells) + " |")
        parts.append("\n".join(rows) + "\n")
    else:
        parts.append(
            f"(Adamas vs Quest at {QUEST_RATIO}x the budget needs budgets b and {QUEST_RATIO}·b in the grid.)\n"
        )
    return "\n".join(parts)


def latest_results(root: Path) -> Path | None:
    """The results.json in `root` or its subdirectories to show first, or None.

    The newest full run by the date it records; a --quick run (a check that everything runs)
    only when there is no full run.
    """
    found = [path for pattern in ("results.json", "*/results.json") for path in Path(root).glob(pattern)]
    return max(found, key=_rank, default=None)


def _rank(path: Path) -> tuple[bool, str]:
    """(a full run, the date it records, ISO so that it sorts); a file not read ranks as quick, by its mtime."""
    try:
        payload = json.loads(path.read_text())
        return not payload["parameters"].get("quick", False), payload["environment"]["date"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False, datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc).isoformat()


def read_payload(path: Path) -> dict:
    """A results.json read back as {environment, parameters, seconds, records}; ValueError naming the path if not."""
    try:
        payload = json.loads(Path(path).read_text())
        if not all(isinstance(payload.get(k), t) for k, t in _PAYLOAD.items()):
            raise ValueError(f"needs the keys {', '.join(_PAYLOAD)}")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not an evaluation's results.json: {err}") from None
    return payload


_PAYLOAD = {"environment": dict, "parameters": dict, "seconds": (int, float), "records": list}


def load_report(path: Path) -> tuple[str, list[dict]]:
    """A results.json read back as its markdown report and its records (for the figures); ValueError if unreadable."""
    payload = read_payload(path)
    try:
        text = markdown(payload["records"], payload["environment"], payload["parameters"], payload["seconds"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path} is not an evaluation's results.json: {err}") from None
    return text, payload["records"]


def _mean_by(records: list[dict], keys: Sequence[str]) -> dict[tuple, float]:
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r["value"])
    return {k: sum(v) / len(v) for k, v in groups.items()}


def _order(selectors: set[str]) -> list[str]:
    return [s for s in SELECTORS if s in selectors] + sorted(selectors - set(SELECTORS))


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"
