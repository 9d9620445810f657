"""The documents' tables of measured results, generated from the committed results files.

    python -m benchmarks.tables            # print every table
    python -m benchmarks.tables --write    # rewrite the tables in README.md and docs/*.md
    python -m benchmarks.tables --check    # exit 1 where a document's table differs from its results file

A document holds a table between `<!-- table: NAME -->` and `<!-- /table -->`; NAME is one of TABLES.
After a benchmark writes a new results file, `--write` puts its numbers into every document that
shows them, and tests/test_tables.py fails until it has.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCUMENTS = ("README.md", "docs/performance.md", "docs/evaluation.md", "docs/scale.md")
BLOCK = re.compile(r"(<!-- table: ([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.S)
ATTENTION_SHAPE, BUDGET = "llama3-8b", 128
"""The attention step's tables show the Llama-3-8B shape (32 query / 8 KV heads, d = 128) at budget 128."""


@cache
def results(name: str) -> dict:
    """The whole of benchmarks/results/`name`: environment, parameters, records and any other lists of rows."""
    return json.loads((RESULTS / name).read_text())


def records(name: str) -> list[dict]:
    """The records of benchmarks/results/`name`."""
    return results(name)["records"]


def markdown(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table: the first column, which names the row, left-aligned; the numbers right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "|".join("---:" for _ in header[1:]) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]) + "\n"


def tokens(n: int) -> str:
    """A context length as the tables write it: 8K, 128K."""
    return f"{round(n / 1024)}K"


Column = tuple[str, Callable[[dict], object]]
"""A table column: its header, and how a record makes its cell."""


def columns_table(columns: list[Column], rows: Iterable[dict]) -> str:
    """A markdown table of `rows`, a line each, with a cell per column."""
    return markdown([header for header, _ in columns], [[cell(r) for _, cell in columns] for r in rows])


def number(key: str, digits: int = 1, unit: str = "") -> Callable[[dict], str]:
    """A cell of record[key] to `digits` decimals, `unit` after it; a dash where the value is None."""
    return lambda r: "—" if r[key] is None else f"{r[key]:.{digits}f}{unit}"


def eval_value(task: str, selector: str, budget: int | None, length: int) -> float:
    """One cell of the evaluation grid on the default model (eval_h100/results.json)."""
    found = [
        r["value"]
        for r in records("eval_h100/results.json")
        if (r["task"], r["selector"], r["budget"], r["length"]) == (task, selector, budget, length)
    ]
    if len(found) != 1:
        raise ValueError(f"eval_h100 holds {len(found)} records of {task}, {selector}, {budget}, {length}")
    return found[0]


def headline() -> str:
    """README's table: the attention step and the whole model on the GPU, decode on a CPU, and what is kept."""
    step = next(r for r in _attention(1) if r["L"] == 131072)
    e2e = {(r["context"], r["batch"]): r for r in records("e2e_h200.json")}
    cpu = _cpu_decode()[-1]
    rows = [
        [
            "one attention layer's decode step, batch 1",
            "Llama-3-8B shape, H200",
            tokens(step["L"]),
            BUDGET,
            f"{step['dense_us']:.1f} µs",
            f"{step['adamas_us']:.1f} µs ({step['speedup']:.2f}x)",
            "`attention_h200.json`",
        ]
    ]
    for context, batch in ((32768, 4), (131072, 1), (131072, 4)):
        r = e2e[context, batch]
        rows.append(
            [
                f"whole-model decode step, batch {batch}",
                "Llama-3.1-8B shape, H200",
                tokens(context),
                BUDGET,
                f"{r['full_ms_median']:.2f} ms",
                f"{r['adamas_ms_median']:.2f} ms ({r['speedup']:.2f}x)",
                "`e2e_h200.json`",
            ]
        )
    rows.append(
        [
            "whole-model decode step, batch 1",
            "SmolLM2-135M, 2-core CPU",
            tokens(cpu["context"]),
            BUDGET,
            f"{cpu['full']:.1f} ms",
            f"{cpu['adamas']:.1f} ms ({cpu['full'] / cpu['adamas']:.2f}x)",
            "`decode_cpu.json`",
        ]
    )
    for example in results("decode_cpu.json").get("examples", [])[:1]:
        rows.append(
            [
                f'the app\'s ms per token, example "{example["example"]}"',
                "SmolLM2-135M, 2-core CPU",
                f"{example['context']:,}",
                example["budget"],
                f"{example['full_ms']:.1f} ms",
                f"{example['adamas_ms']:.1f} ms ({example['speedup']:.2f}x)",
                "`decode_cpu.json`",
            ]
        )
    for task, length, what in (("passkey", 4096, "passkeys found"), ("recall", 8192, "top-K attention mass kept")):
        full = 1.0 if task == "recall" else eval_value(task, "full", None, length)
        calibrated, paper = (eval_value(task, s, 64, length) for s in ("adamas-calibrated", "adamas"))
        rows.append(
            [
                f"{what} (calibrated thresholds; the paper's)",
                "SmolLM2-135M",
                tokens(length),
                64,
                f"{full:.2f}",
                f"{calibrated:.2f} ({paper:.2f})",
                "`eval_h100/results.json`",
            ]
        )
    header = ["measure", "model, device", "context", "budget", "full attention", "Adamas", "results file"]
    return markdown(header, rows)


def _attention(batch: int) -> list[dict]:
    rows = [
        r
        for r in records("attention_h200.json")
        if (r["shape"], r["budget"], r["batch"]) == (ATTENTION_SHAPE, BUDGET, batch)
    ]
    return sorted(rows, key=lambda r: r["L"])


def attention() -> str:
    """The attention step against dense decodes, and its parts, per context and batch."""
    columns = [
        ("context", lambda r: tokens(r["L"])),
        ("batch", lambda r: r["batch"]),
        ("SDPA dense (flash)", number("dense_us")),
        ("split-K dense, masked", number("dense_split_k_us")),
        ("SDPA, masked", number("dense_masked_sdpa_us", 0)),
        ("Adamas", number("adamas_us")),
        ("Adamas, two-kernel", number("adamas_two_kernel_us")),
        ("speedup over the fastest dense", number("speedup", 1, "x")),
        ("encode q", number("encode_q_us")),
        ("select: fused (its scan)", lambda r: f"{r['nearest_us']:.1f} ({r['scan_us']:.1f})"),
        ("sparse attention", number("attention_us")),
        ("over codes floor", number("over_floor", 1, "x")),
    ]
    return columns_table(columns, (r for batch in (1, 8) for r in _attention(batch)))


def kernels() -> str:
    """Each kernel's device time in one eager Adamas step (batch 1), beside the step's graph-replay time."""
    profiled = [r for r in _attention(1) if "adamas_kernels_us" in r]
    names = list(dict.fromkeys(k for r in profiled for k in r["adamas_kernels_us"]))
    rows = [
        [
            tokens(r["L"]),
            *(f"{r['adamas_kernels_us'].get(k, 0):.1f}" for k in names),
            f"{r['adamas_kernels_sum_us']:.1f}",
            f"{r['adamas_us']:.1f}",
        ]
        for r in profiled
    ]
    return markdown(["context", *(k.strip("_").removesuffix("_kernel") for k in names), "sum", "graph replay"], rows)


def e2e() -> str:
    """Whole-model decode: full attention on the split-K kernel against Adamas; full attention on masked SDPA beside."""
    sdpa = {(r["context"], r["batch"]): r["full_ms_median"] for r in records("e2e_h200_sdpa.json")}

    def masked_sdpa(r: dict) -> str:
        ms = sdpa.get((r["context"], r["batch"]))
        return "" if ms is None else f"{ms:.2f} ms"

    columns = [
        ("context", lambda r: tokens(r["context"])),
        ("batch", lambda r: r["batch"]),
        ("prefill", lambda r: f"{r['prefill_ms'] / 1e3:.2f} s"),
        ("key encoding, share of prefill", lambda r: f"{100 * r['encode_share']:.1f}%"),
        ("full attention", number("full_ms_median", 2, " ms")),
        ("Adamas", number("adamas_ms_median", 2, " ms")),
        ("speedup", number("speedup", 2, "x")),
        ("full attention, masked SDPA", masked_sdpa),
        ("peak memory", number("peak_gib", 1, " GiB")),
    ]
    return columns_table(columns, sorted(records("e2e_h200.json"), key=lambda r: (r["context"], r["batch"])))


def _cpu_decode() -> list[dict]:
    """Per context of decode_cpu.json: the median step of each attention and mode; full's faster, Adamas' fixed."""
    by = {}
    for r in records("decode_cpu.json"):
        kind = "full" if r["attention"] == "full" else "adamas"
        by.setdefault(r["context"], {})[f"{kind}_{r['mode']}"] = r["step_ms_median"]
    rows = []
    for context, ms in sorted(by.items()):
        full, adamas = min(ms["full_eager"], ms["full_graph"]), ms["adamas_graph"]
        rows.append({"context": context, **ms, "full": full, "adamas": adamas})
    return rows


def cpu_decode() -> str:
    """Decode on the CPU: both cache paths of each mode, and Adamas on the fixed cache against the faster full."""
    columns = [
        ("context", lambda r: tokens(r["context"])),
        ("full, dynamic cache", number("full_eager")),
        ("full, fixed cache", number("full_graph")),
        ("Adamas, dynamic cache", number("adamas_eager")),
        ("Adamas, fixed cache", number("adamas_graph")),
        ("Adamas vs the faster full", lambda r: f"{r['full'] / r['adamas']:.2f}x"),
    ]
    return columns_table(columns, _cpu_decode())


def cpu_examples(rows: list[dict] | None = None) -> str:
    """The app on each bundled example (`rows`, default decode_cpu.json's "examples"): its ms per token, the
    speedup and the wait for both first tokens; a line saying so where none was timed."""
    rows = results("decode_cpu.json").get("examples", []) if rows is None else rows
    if not rows:
        return "No bundled example is timed in `decode_cpu.json` yet: `bench_decode --weights default` times them.\n"
    columns = [
        ("example", lambda r: r["example"]),
        ("context (tokens)", lambda r: f"{r['context']:,}"),
        ("Adamas ms/token", number("adamas_ms")),
        ("full ms/token", number("full_ms")),
        ("speedup", number("speedup", 2, "x")),
        ("speedup of the medians", number("speedup_median", 2, "x")),
        ("time to first token", number("ttft_s", 1, " s")),
        ("same answer", lambda r: "yes" if r["same_answer"] else "no"),
    ]
    return columns_table(columns, rows)


def app() -> str:
    """The app's ms per token through /compare against the whole-model benchmark's, same model and context."""
    by = {}
    for r in records("app_h200.json"):
        by.setdefault(r["context"], {})[r["mode"]] = f"{r['app_ms_per_token']:.2f} / {r['bench_ms_per_token']:.2f} ms"
    rows = [[f"{context:,}", ms["adamas"], ms["full"]] for context, ms in sorted(by.items())]
    return markdown(["context (tokens)", "Adamas: app / benchmark", "full attention: app / benchmark"], rows)


def thresholds() -> str:
    """Recall of the true top-K attention mass per threshold setting and budget, on the default model."""
    by = {}
    for r in records("threshold_recall_cpu.json"):
        by.setdefault(str(r["thresholds"]), {})[r["budget"]] = f"{r['recall']:.3f}"
    budgets = sorted({b for cells in by.values() for b in cells})
    rows = [[name, *(cells.get(b, "") for b in budgets)] for name, cells in by.items()]
    return markdown(["thresholds", *(f"budget {b}" for b in budgets)], rows)


def _step(shape: str, length: int, batch: int, budget: int) -> dict:
    """One case of attention_h200.json; ValueError naming it where the file lacks it."""
    for r in records("attention_h200.json"):
        if (r["shape"], r["L"], r["batch"], r["budget"]) == (shape, length, batch, budget):
            return r
    raise ValueError(f"attention_h200.json has no record of {shape}, {length} tokens, batch {batch}, budget {budget}")


# The attention step's targets: (shape, context, batch, budget, speedup over the fastest dense decode)
STEP_TARGETS = (
    ("llama3-8b", 32768, 1, 128, 3),
    ("llama3-8b", 131072, 1, 128, 6),
    ("llama3-8b", 131072, 8, 128, 8),
    ("mha-7b", 32768, 1, 256, 8),
    ("qwen2.5-7b", 131072, 1, 128, 4),
)
SHAPE_NAMES = {"llama3-8b": "Llama-3-8B", "mha-7b": "the paper's MHA 32/32/128", "qwen2.5-7b": "Qwen2.5-7B"}


def targets() -> str:
    """The project's performance targets beside what the H200 files measured."""
    rows = []
    for shape, length, batch, budget, goal in STEP_TARGETS:
        r = _step(shape, length, batch, budget)
        what = f"attention step ≥ {goal}x the fastest dense, {SHAPE_NAMES[shape]}, {tokens(length)}"
        what += f", batch {batch}" + (f", budget {budget}" if budget != BUDGET else "")
        rows.append([what, f"{r['speedup']:.2f}x ({r['adamas_us']:.1f} vs {r['dense_best_us']:.1f} µs)"])
        rows[-1].append("met" if r["speedup"] >= goal else "not met")
    r = _step(ATTENTION_SHAPE, 131072, 1, BUDGET)
    floor = f"{r['over_floor']:.1f}x ({r['adamas_us']:.1f} vs {r['codes_floor_us']:.1f} µs)"
    rows.append(["attention step ≤ 2x the 2-bit codes' read at 128K, batch 1", floor])
    rows[-1].append("met" if r["over_floor"] <= 2 else "not met")
    e2e = {(r["context"], r["batch"]): r for r in records("e2e_h200.json")}
    for batch, goal in ((1, 1.8), (4, 3.0)):
        r = e2e[131072, batch]
        what = f"whole model ≥ {goal}x at 128K, batch {batch} (Llama-3.1-8B shape)"
        speedup = f"{r['speedup']:.2f}x ({r['adamas_ms_median']:.2f} vs {r['full_ms_median']:.2f} ms)"
        rows.append([what, speedup, "met" if r["speedup"] >= goal else "not met"])
    shares = {c: [100 * e2e[c, b]["encode_share"] for b in (1, 4)] for c in (8192, 32768, 131072)}
    met = [tokens(c) for c, v in shares.items() if max(v) < 3]
    verdict = "met" if len(met) == len(shares) else ("not met" if not met else "met at " + " and ".join(met) + " only")
    rows.append(["key encoding < 3% of prefill", "; ".join(f"{_span(v)}% at {tokens(c)}" for c, v in shares.items())])
    rows[-1].append(verdict)
    codes = e2e[131072, 1]["codes_per_kv_adamas_layer"]
    rows.append(
        ["codes add 1/16 of K+V", f"1/{1 / codes:.0f} per Adamas layer", "met" if codes <= 1 / 16 else "not met"]
    )
    return markdown(["target", "measured", ""], rows)


PEER_NAMES = {
    "adamas": "Adamas (ours)",
    "sdpa": "SDPA flash, dense",
    "flashinfer-dense": "FlashInfer decode, dense",
    "flashinfer-sparse": "FlashInfer top_k + sparse decode",
    "double-sparsity": "Double Sparsity (sglang)",
    "adamas-authors": "the paper authors' kernels",
}
PEER_CASES = {
    "llama3-8b-32k": "Llama-3-8B, 32K",
    "llama3-8b-128k": "Llama-3-8B, 128K",
    "llama3-8b-128k-b8": "Llama-3-8B, 128K, batch 8",
    "mha-7b-32k-paper": "MHA 32/32/128, 32K, budget 256",
}


def _stages(stages: dict[str, float]) -> str:
    """A step's stages in order; a stage timed beside the step but not in it (FlashInfer's fused top-k) last."""
    inside = [f"{name} {us:.1f}" for name, us in stages.items() if "ragged" not in name]
    beside = [f"{name[len('select (') : -1]} {us:.1f}" for name, us in stages.items() if "ragged" in name]
    return "; ".join(inside) + (f" (not in the step: {', '.join(beside)})" if beside else "") or "—"


def peers(cases: tuple[str, ...] = tuple(PEER_CASES)) -> str:
    """One layer's decode step of each system that ran, total and stage by stage, from peers_h200.json."""
    columns = [
        ("case (budget 128 unless named)", lambda r: PEER_CASES[r["case"]]),
        ("system", lambda r: PEER_NAMES[r["system"]]),
        ("step µs", number("total_us")),
        ("vs fastest dense", number("speedup", 2, "x")),
        ("stages, µs", lambda r: _stages(r["stages_us"])),
    ]
    ran = (r for case in cases for r in records("peers_h200.json") if r["case"] == case and "total_us" in r)
    return columns_table(columns, ran)


def _span(values: list[float]) -> str:
    """The range of `values` to one decimal, one number when they round alike."""
    low, high = f"{min(values):.1f}", f"{max(values):.1f}"
    return low if low == high else f"{low}–{high}"


def _cell(value: float, metric: str) -> str:
    """A grid value as the evaluation table writes it: shares to two decimals, perplexities to three digits."""
    if metric == "perplexity":
        return f"{value:.0f}" if value >= 100 else f"{value:.3g}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def grid() -> str:
    """The evaluation grid on the default model: per task and length, each selector across budgets 16 … 1024."""
    budgets, selectors = (16, 64, 128, 512, 1024), ("adamas", "adamas-calibrated", "quest", "streaming", "oracle")
    shown = [("passkey", 2048), ("passkey", 4096), ("multikey", 4096), ("multivalue", 2048)]
    shown += [("perplexity", 2048), ("perplexity", 8192), ("recall", 2048), ("recall", 8192)]
    rows = []
    for task, length in shown:
        metric = {"perplexity": "perplexity", "recall": "recall"}.get(task, "accuracy")
        full = "—" if task == "recall" else _cell(eval_value(task, "full", None, length), metric)
        cells = [" / ".join(_cell(eval_value(task, s, b, length), metric) for b in budgets) for s in selectors]
        rows.append([f"{task}, {tokens(length)}", full, *cells])
    header = ["task, length", "full", "adamas (paper)", "adamas-calibrated", "quest", "streaming", "oracle"]
    return markdown(header, rows)


TABLES: dict[str, Callable[[], str]] = {
    "headline": headline,
    "attention": attention,
    "kernels": kernels,
    "e2e": e2e,
    "cpu-decode": cpu_decode,
    "cpu-examples": cpu_examples,
    "app": app,
    "thresholds": thresholds,
    "targets": targets,
    "peers": peers,
    "peers-headline": lambda: peers(("llama3-8b-128k", "mha-7b-32k-paper")),
    "grid": grid,
}


def render(text: str) -> str:
    """`text` with every table block regenerated; ValueError naming an unknown table."""

    def fill(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
        return match.group(1) + TABLES[name]() + match.group(4)

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the documents' tables from benchmarks/results")
    parser.add_argument("--write", action="store_true", help="rewrite the tables in " + ", ".join(DOCUMENTS))
    parser.add_argument("--check", action="store_true", help="exit 1 if a document's table is out of date")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        for name, table in TABLES.items():
            print(f"<!-- table: {name} -->\n{table()}")
        return 0
    stale = []
    for document in DOCUMENTS:
        path = ROOT / document
        text = path.read_text()
        fresh = render(text)
        if fresh != text:
            stale.append(document)
            if args.write:
                path.write_text(fresh)
    if stale:
        print(("rewrote " if args.write else "out of date: ") + ", ".join(stale), file=sys.stderr)
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
