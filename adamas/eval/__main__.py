"""Command line: `python -m adamas.eval [--quick] [--model ID] [--selectors ...] [--budgets ...] --out DIR`.

Writes results.json and results.md (`report`) and, where plotly is installed, the figures as HTML.

A grid can also run in n parts side by side (processes on one GPU, or machines):
`--shard k/n --out DIR/k` for k = 1..n, then `--merge DIR/1 ... DIR/n --out DIR` joins them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import torch

from adamas.config import SELECTORS, check_int
from adamas.environment import environment
from adamas.eval import report, runner
from adamas.eval.runner import ALL_TASKS, QUICK, Grid
from adamas.loading import DEFAULT_MODEL_NAME, execution_device, load_model


def tokens(text: str) -> int:
    """A token count: 2048, or 2K / 8k for 2048 / 8192."""
    try:
        return int(text[:-1]) * 1024 if text[-1:] in ("K", "k") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a token count: {text!r} (e.g. 2048 or 2K)") from None


def shard(text: str) -> tuple[int, int]:
    """A shard k/n: the k-th (1-based) of n parts of the grid."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a shard: {text!r} (e.g. 2/8)") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"shard {text!r} needs 1 <= k <= n")
    return k, n


logger = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _parser() -> argparse.ArgumentParser:
    full = Grid()
    parser = argparse.ArgumentParser(
        prog="python -m adamas.eval",
        description="Passkey, RULER-style tasks, perplexity and recall@budget: Adamas vs Quest vs StreamingLLM "
        "vs oracle vs full attention. Writes results.json, results.md and HTML figures to --out.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--quick", action="store_true", help=f"a small grid ({_describe(QUICK)})")
    parser.add_argument("--model", default=None, help="HF model id or directory (default: offline SmolLM2-135M)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=DTYPES, help="weights' dtype (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--selectors", nargs="+", choices=SELECTORS, help="default: all six")
    parser.add_argument("--budgets", nargs="+", type=int, help=f"default: {' '.join(map(str, full.budgets))}")
    parser.add_argument("--lengths", nargs="+", type=tokens, help="context tokens, e.g. 2K 4K 8K (the default)")
    parser.add_argument("--tasks", nargs="+", choices=ALL_TASKS, help="default: all")
    parser.add_argument("--depths", nargs="+", type=float, help="passkey needle depths in [0, 1]")
    parser.add_argument("--samples", type=int, help=f"prompts per RULER task and length (default {full.samples})")
    parser.add_argument("--text-tokens", type=int, help=f"tokens scored for perplexity (default {full.text_tokens})")
    parser.add_argument("--seed", type=int, help="seed of the generated prompts (default 0)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--shard", type=shard, help="run only part k of n of the grid (k/n), to --merge later")
    parser.add_argument(
        "--merge", nargs="+", type=Path, metavar="DIR", help="join the results of the shards in these directories"
    )
    return parser


def _describe(grid: Grid) -> str:
    lengths = "/".join(str(n) for n in grid.lengths)
    budgets = "/".join(str(b) for b in grid.budgets)
    return (
        f"length {lengths}, budgets {budgets}, {len(grid.depths)} passkey depths, {grid.samples} prompt(s) per RULER "
        f"task, {grid.text_tokens} perplexity tokens"
    )


def grid_from(args: argparse.Namespace) -> Grid:
    """The grid: --quick's or the full one, with every flag given replacing its field."""
    base = QUICK if args.quick else Grid()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Grid) if getattr(args, f.name) is not None}
    return dataclasses.replace(base, **{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; return the exit status (2 for bad arguments)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.merge:
        return _merge(args.merge, args.out)
    try:
        grid = grid_from(args)
        if args.threads is not None:
            torch.set_num_threads(check_int("threads", args.threads, 1))
    except (TypeError, ValueError) as err:
        print(f"adamas.eval: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    model, tokenizer = load_model(args.model, device=args.device, dtype=DTYPES.get(args.dtype))
    try:
        runner.check_grid(grid, model)
        records = runner.run_grid(model, tokenizer, grid, progress=not args.no_progress, shard=args.shard)
    except ValueError as err:
        print(f"adamas.eval: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    device = execution_device(model)
    parameters = dataclasses.asdict(grid) | {
        "model": args.model or f"{DEFAULT_MODEL_NAME} (GGUF)",
        "dtype": str(next(model.parameters()).dtype),
        "quick": args.quick,
        "shard": "/".join(map(str, args.shard)) if args.shard else None,
        "decoding": "greedy; dense prefill shared by all selectors; answers stop at EOS or once every answer is found",
    }
    paths = report.write_report(args.out, environment(device), parameters, seconds, records)
    paths += write_figures(args.out, records)
    print((args.out / "results.md").read_text())
    print(f"wrote {', '.join(p.name for p in paths)} to {args.out} in {seconds / 60:.1f} min")
    return 0


def write_figures(out: Path, records: list[dict]) -> list[Path]:
    """The records' figures as HTML files beside one plotly.min.js, viewable offline; none without plotly."""
    try:
        from visualize import evaluation_figures  # only this command draws: no library module imports visualize
    except ImportError as err:
        logger.info("figures skipped: %s (install plotly to draw them)", err)
        return []
    paths = []
    for name, fig in evaluation_figures(records, report.CLAIM_BUDGET).items():
        paths.append(out / f"{name}.html")
        fig.write_html(paths[-1], include_plotlyjs="directory")
    return paths


def _merge(dirs: list[Path], out: Path) -> int:
    """Join the results.json of every shard k/n of one grid into the whole grid's report in `out`."""
    try:
        payloads = [report.read_payload(d / "results.json") for d in dirs]
        parameters = [{k: v for k, v in p["parameters"].items() if k != "shard"} for p in payloads]
        for d, params in zip(dirs, parameters, strict=True):
            changed = sorted(k for k in params.keys() | parameters[0].keys() if params.get(k) != parameters[0].get(k))
            if changed:
                raise ValueError(f"{d} ran another grid than {dirs[0]} ({', '.join(changed)} differ)")
        shards = sorted(str(p["parameters"].get("shard")) for p in payloads)
        n = len(payloads)
        if shards != sorted(f"{k}/{n}" for k in range(1, n + 1)):
            raise ValueError(f"need the shards 1/{n} … {n}/{n} once each, got {', '.join(shards)}")
        records = runner.merge_records([p["records"] for p in payloads])
    except ValueError as err:
        print(f"adamas.eval: {err}", file=sys.stderr)
        return 2
    env = max((p["environment"] for p in payloads), key=lambda e: e["date"])
    seconds = sum(p["seconds"] for p in payloads)  # process time: how the shards were scheduled is not known here
    merged = parameters[0] | {"shards": n, "longest_shard_seconds": max(p["seconds"] for p in payloads)}
    paths = report.write_report(out, env, merged, seconds, records) + write_figures(out, records)
    print((out / "results.md").read_text())
    print(f"merged {n} shards: wrote {', '.join(p.name for p in paths)} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
