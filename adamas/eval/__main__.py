"""Command line: `python -m adamas.eval [--quick] [--model ID] [--selectors ...] [--budgets ...] --out DIR`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import torch

from adamas.config import SELECTORS, check_int
from adamas.eval import report, runner
from adamas.eval.runner import ALL_TASKS, QUICK, Grid
from adamas.loading import DEFAULT_MODEL_NAME, load_model


def tokens(text: str) -> int:
    """A token count: 2048, or 2K / 8k for 2048 / 8192."""
    try:
        return int(text[:-1]) * 1024 if text[-1:] in ("K", "k") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a token count: {text!r} (e.g. 2048 or 2K)") from None


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
    parser.add_argument("--selectors", nargs="+", choices=SELECTORS, help="default: all six")
    parser.add_argument("--budgets", nargs="+", type=int, help=f"default: {' '.join(map(str, full.budgets))}")
    parser.add_argument("--lengths", nargs="+", type=tokens, help="context tokens, e.g. 2K 4K 8K (the default)")
    parser.add_argument("--tasks", nargs="+", choices=ALL_TASKS, help="default: all")
    parser.add_argument("--depths", nargs="+", type=float, help="passkey needle depths in [0, 1]")
    parser.add_argument("--samples", type=int, help=f"prompts per RULER task and length (default {full.samples})")
    parser.add_argument("--text-tokens", type=int, help=f"tokens scored for perplexity (default {full.text_tokens})")
    parser.add_argument("--seed", type=int, help="seed of the generated prompts (default 0)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's; 1 beats 2 on a busy CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    try:
        grid = grid_from(args)
        if args.threads is not None:
            torch.set_num_threads(check_int("threads", args.threads, 1))
    except (TypeError, ValueError) as err:
        print(f"adamas.eval: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    model, tokenizer = load_model(args.model, device=args.device)
    try:
        runner.check_grid(grid, model)
        records = runner.run_grid(model, tokenizer, grid, progress=not args.no_progress)
    except ValueError as err:
        print(f"adamas.eval: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    device = next(model.parameters()).device
    parameters = dataclasses.asdict(grid) | {
        "model": args.model or f"{DEFAULT_MODEL_NAME} (GGUF)",
        "dtype": str(next(model.parameters()).dtype),
        "quick": args.quick,
        "decoding": "greedy; dense prefill shared by all selectors; answers stop at EOS or once every answer is found",
    }
    paths = report.write_report(args.out, report.environment(device), parameters, seconds, records)
    print((args.out / "results.md").read_text())
    print(f"wrote {', '.join(p.name for p in paths)} to {args.out} in {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
