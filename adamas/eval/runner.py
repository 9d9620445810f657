"""The evaluation grid: tasks × selectors × budgets × lengths, one dense prefill per prompt.

Each prompt (a passkey depth, a RULER sample, the reference text at one length) is
prefilled once; every (selector, budget) then decodes from a replay of that prefill
(adamas.eval.decoding), so the selectors see the same prompt, cache and dense layers.
"full" does not depend on the budget: it runs once per prompt and its records carry
budget None. One record per task × selector × budget × length (see `run_grid`).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from adamas.config import SELECTORS, AdamasConfig, check_int
from adamas.eval import tasks
from adamas.eval.decoding import greedy_answer, prefill
from adamas.eval.perplexity import continuation_nll
from adamas.eval.recall import RecallMeter
from adamas.generation import stop_ids
from adamas.loading import max_context

TEXT_TASKS = ("perplexity", "recall")
"""Measured on the reference text in one teacher-forced decode pass per selector and budget."""
ALL_TASKS = (*tasks.TASKS, *TEXT_TASKS)


@dataclass(frozen=True)
class Grid:
    """What to evaluate; the defaults are the full run, QUICK a small one."""

    selectors: tuple[str, ...] = SELECTORS
    budgets: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
    lengths: tuple[int, ...] = (2048, 4096, 8192)  # tokens of context: prompt + answer room
    tasks: tuple[str, ...] = ALL_TASKS
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # passkey needle depths
    samples: int = 3  # prompts per RULER task and length
    text_tokens: int = 256  # tokens scored for perplexity (and recall) at the end of each length
    seed: int = 0

    def __post_init__(self) -> None:
        for name, values, allowed in (("selector", self.selectors, SELECTORS), ("task", self.tasks, ALL_TASKS)):
            unknown = [v for v in values if v not in allowed]
            if unknown or not values:
                raise ValueError(f"unknown {name} {unknown or '(none given)'}; choose from {', '.join(allowed)}")
        for name, values in (("budget", self.budgets), ("length", self.lengths)):
            if not values:
                raise ValueError(f"give at least one {name}")
            for v in values:
                check_int(name, v, 1)
        if not self.depths or not all(isinstance(d, (int, float)) and 0 <= d <= 1 for d in self.depths):
            raise ValueError(f"depths must be numbers in [0, 1], got {self.depths}")
        check_int("samples", self.samples, 1)
        check_int("text_tokens", self.text_tokens, 1)
        check_int("seed", self.seed, 0)

    def configs(self) -> list[tuple[str, int | None, AdamasConfig]]:
        """(selector, budget, config) per decode run of a prompt; "full" once, with budget None.

        Every selector runs on the paper's settings (AdamasConfig.paper: no sink or recent tokens,
        layers 0 and 1 dense), so that the grid compares the selections alone.
        """
        runs = []
        for selector in self.selectors:
            if selector == "full":
                runs.append((selector, None, AdamasConfig.paper(selector=selector)))
            else:
                runs += [(selector, b, AdamasConfig.paper(b, selector=selector)) for b in self.budgets]
        return runs


QUICK = Grid(budgets=(64, 128), lengths=(1024,), depths=(0.0, 0.5, 1.0), samples=1, text_tokens=32)
"""A grid that runs all six selectors and every task in minutes on a small CPU: a check that everything runs.

Its cost is decode steps, whose time on a CPU hardly depends on the context, so the grid keeps
few budgets and prompts rather than short contexts alone."""


def check_grid(grid: Grid, model: PreTrainedModel) -> None:
    """ValueError when a length exceeds the model's context or leaves no room for the scored text."""
    limit = max_context(model)
    too_long = [length for length in grid.lengths if length > limit]
    if too_long:
        raise ValueError(f"length {too_long[0]} exceeds the model's context of {limit} tokens")
    if set(grid.tasks) & set(TEXT_TASKS) and min(grid.lengths) < grid.text_tokens + 2:
        raise ValueError(
            f"length {min(grid.lengths)} is too short to score {grid.text_tokens} text tokens after a prefix; "
            f"lower text_tokens or raise the length"
        )


TEXT = -1
"""The item index of the reference text (perplexity and recall) in a `Unit`."""


@dataclass(frozen=True)
class Unit:
    """The grid's unit of work: one prompt (or the reference text) at one length under one selector's budgets."""

    length: int
    item: int  # index into the length's prompts, or TEXT
    selector: str


def run_grid(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    grid: Grid,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> list[dict]:
    """Every record of the grid (or of shard (k, n): its k-th of n parts), ordered by length, task, selector, budget.

    A record: task, selector, budget (None for "full"), length, metric ("accuracy",
    "perplexity" or "recall"), value, n (prompts or scored tokens), seconds (decode time), and
    per task: `samples` (each prompt's index, depth, score, answer, expected), `nll` and
    `prefix_tokens` (perplexity), `per_layer` (recall, None on dense layers). The n shards of
    a grid split its units so that each takes about the same time; `merge_records` joins them
    into the records of the whole grid.
    """
    check_grid(grid, model)
    prompts = {length: list(_prompts(tokenizer, grid, length)) for length in grid.lengths}  # built first: errors early
    units = plan(grid, prompts)
    if shard is not None:
        units = shard_units(grid, prompts, units, *shard)
    by_selector: dict[str, list] = {}
    for selector, budget, config in grid.configs():
        by_selector.setdefault(selector, []).append((selector, budget, config))
    cells: dict[tuple[str, str, int | None, int], _Cell] = {}
    records: list[dict] = []
    total = sum(len(by_selector[u.selector]) for u in units)
    with tqdm(total=total, desc="adamas.eval", unit="run", disable=not progress) as bar:
        for (length, item), group in itertools.groupby(units, key=lambda u: (u.length, u.item)):
            configs = [c for u in group for c in by_selector[u.selector]]
            if item == TEXT:
                records += _text_records(model, tokenizer, grid, length, configs, bar)
            else:
                _answer(model, tokenizer, prompts[length][item], item, configs, cells, bar)
    records += [
        _record(kind, selector, budget, length, "accuracy", _mean(c.samples), len(c.samples), c.seconds)
        | {"samples": c.samples}
        for (kind, selector, budget, length), c in cells.items()
    ]
    return sorted(records, key=_record_order)


def plan(grid: Grid, prompts: dict[int, list[tasks.Task]]) -> list[Unit]:
    """The grid's units in run order: by length, then prompt (the reference text last), then selector."""
    texts = bool(set(grid.tasks) & set(TEXT_TASKS))
    return [
        Unit(length, item, selector)
        for length in grid.lengths
        for item in [*range(len(prompts[length])), *([TEXT] * texts)]
        for selector in grid.selectors
    ]


def shard_units(grid: Grid, prompts: dict[int, list[tasks.Task]], units: list[Unit], k: int, n: int) -> list[Unit]:
    """The units of shard k of n (1-based), in run order: the costliest first, each to the least loaded shard.

    The cost of a unit is its decode steps at most (budgets x answer room, or x text tokens)
    weighted by the context length, so the n shards, run side by side, end at about the same time.
    """
    check_int("shard count", n, 1)
    if not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"shard must be k/n with 1 <= k <= n, got {k}/{n}")

    def cost(u: Unit) -> float:
        runs = 1 if u.selector == "full" else len(grid.budgets)
        steps = grid.text_tokens if u.item == TEXT else prompts[u.length][u.item].max_new_tokens
        return runs * steps * (1 + u.length / 16384)  # a step costs more with a longer context

    loads = [0.0] * n
    mine = set()
    for _, i, u in sorted((-cost(u), i, u) for i, u in enumerate(units)):
        least = loads.index(min(loads))
        loads[least] += cost(u)
        if least == k - 1:
            mine.add(i)
    return [u for i, u in enumerate(units) if i in mine]


def merge_records(shards: list[list[dict]]) -> list[dict]:
    """The records of a whole grid from those of its shards: accuracy cells pool their samples, others are unique."""
    merged: dict[tuple, dict] = {}
    for records in shards:
        for r in records:
            key = (r["task"], r["selector"], r["budget"], r["length"])
            if key not in merged:
                merged[key] = dict(r) | ({"samples": list(r["samples"])} if "samples" in r else {})
            elif "samples" in r:
                cell = merged[key]
                cell["samples"] = sorted(cell["samples"] + r["samples"], key=lambda s: s["prompt"])
                cell["n"] = len(cell["samples"])
                cell["value"] = _mean(cell["samples"])
                cell["seconds"] = round(cell["seconds"] + r["seconds"], 3)
            else:
                raise ValueError(f"two shards both hold the record {key}: were they run with different --shard n?")
    return sorted(merged.values(), key=_record_order)


def _record_order(r: dict) -> tuple:
    return (r["length"], ALL_TASKS.index(r["task"]), SELECTORS.index(r["selector"]), r["budget"] or 0)


def _prompts(tokenizer: PreTrainedTokenizerBase, grid: Grid, length: int) -> Iterator[tasks.Task]:
    for kind in tasks.TASKS:
        if kind not in grid.tasks:
            continue
        if kind == "passkey":
            yield from (tasks.passkey(tokenizer, length, d, grid.seed) for d in grid.depths)
        else:
            yield from (tasks.GENERATORS[kind](tokenizer, length, i, grid.seed) for i in range(grid.samples))


@dataclass
class _Cell:
    """What one (task, selector, budget, length) collects over its prompts."""

    samples: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _answer(model, tokenizer, task: tasks.Task, item: int, configs, cells: dict, bar: tqdm) -> None:
    """Answer one prompt under every config, adding a sample to each (task, selector, budget, length) cell."""
    stops = stop_ids(model, tokenizer)
    pre = prefill(model, task.ids)
    answered = _stopper(tokenizer, task.expected, stops)
    for selector, budget, config in configs:
        bar.set_postfix_str(f"{task.kind} {task.length} {selector} {budget or ''}".strip())
        start = time.perf_counter()
        tokens = greedy_answer(model, pre, config, task.max_new_tokens, answered)
        cell = cells.setdefault((task.kind, selector, budget, task.length), _Cell())
        cell.seconds += time.perf_counter() - start
        answer = tokenizer.decode(tokens, skip_special_tokens=True)
        cell.samples.append(
            {
                "prompt": item,
                "depth": round(task.depth, 4),
                "score": tasks.score(task.expected, answer),
                "answer": answer,
                "expected": list(task.expected),
                "prompt_tokens": len(task.ids),
            }
        )
        bar.update()


def _stopper(tokenizer, expected: tuple[str, ...], stop_ids: set[int]):
    """Stop decoding at an end-of-sequence token or once every expected string is in the answer."""

    def done(tokens: list[int]) -> bool:
        return tokens[-1] in stop_ids or tasks.score(expected, tokenizer.decode(tokens)) == 1.0

    return done


def _text_records(model, tokenizer, grid: Grid, length: int, configs, bar: tqdm) -> list[dict]:
    """Perplexity of the last `text_tokens` of the reference text's first `length` tokens, and recall on the way."""
    ids = _reference_ids(tokenizer, length)
    prefix = length - grid.text_tokens - 1
    pre = prefill(model, ids[:prefix])
    records = []
    for selector, budget, config in configs:
        bar.set_postfix_str(f"text {length} {selector} {budget or ''}".strip())
        start = time.perf_counter()
        with RecallMeter(model, length) as meter:
            nll = continuation_nll(model, pre, config, ids[prefix:], on_step=meter.record)
        seconds = time.perf_counter() - start
        mean_nll = float(nll.mean())
        if "perplexity" in grid.tasks:
            record = _record(
                "perplexity", selector, budget, length, "perplexity", math.exp(mean_nll), len(nll), seconds
            )
            records.append(record | {"nll": mean_nll, "prefix_tokens": prefix})
        if "recall" in grid.tasks and not math.isnan(meter.mean()):  # "full" selects nothing to score
            record = _record("recall", selector, budget, length, "recall", meter.mean(), len(nll), seconds)
            records.append(record | {"per_layer": meter.per_layer()})
        bar.update()
    return records


def _reference_ids(tokenizer: PreTrainedTokenizerBase, length: int) -> list[int]:
    ids = tokenizer(tasks.reference_text())["input_ids"]
    if len(ids) < length:
        raise ValueError(f"the reference text has {len(ids)} tokens, fewer than length {length}")
    return ids[:length]


def _record(task, selector, budget, length, metric, value, n, seconds) -> dict:
    return {
        "task": task,
        "selector": selector,
        "budget": budget,
        "length": length,
        "metric": metric,
        "value": value,
        "n": n,
        "seconds": round(seconds, 3),
    }


def _mean(samples: list[dict]) -> float:
    return sum(s["score"] for s in samples) / len(samples)
