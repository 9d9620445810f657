"""Command line: `python -m adamas generate --doc FILE --question "..." [--budget 128] [--compare-full]`."""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from adamas.config import AdamasConfig
from adamas.documents import document_messages, read_document


def thresholds_arg(text: str) -> str | list[str]:
    """--thresholds: "paper", "calibrated" or three comma-separated numbers (AdamasConfig checks them)."""
    return text if text in ("paper", "calibrated") else text.split(",")


def _parser() -> argparse.ArgumentParser:
    defaults = AdamasConfig()
    parser = argparse.ArgumentParser(prog="adamas", description="Adamas sparse-attention decoding")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="answer a question about a document, streaming the answer")
    gen.add_argument("--doc", type=Path, required=True, help="the document: text, Markdown, HTML, PDF or a source file")
    gen.add_argument("--question", required=True)
    budget_help = f"tokens attended per query head (default {defaults.budget})"
    gen.add_argument("--budget", type=int, default=defaults.budget, help=budget_help)
    gen.add_argument(
        "--thresholds",
        type=thresholds_arg,
        default=defaults.thresholds,
        help=f"calibrated, paper, or three numbers such as -10,0,10 (default {defaults.thresholds})",
    )
    gen.add_argument("--model", default=None, help="HF model id or directory (default: offline SmolLM2-135M)")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--compare-full", action="store_true", help="also answer with full attention")
    return parser


def _answer(label: str, stream) -> list[float]:
    """Print the streamed answer under `label`; return the decode steps' latencies (s)."""
    print(f"\n== {label}", flush=True)
    latencies, prefill = [], None
    for record in stream:
        print(record.text, end="", flush=True)
        if record.step == 0:
            prefill = record.latency_s
        else:
            latencies.append(record.latency_s)
    print()
    if latencies:
        per_token = statistics.median(latencies) * 1e3
        print(f"-- prefill {prefill:.2f} s, decode {per_token:.1f} ms/token (median of {len(latencies)} steps)")
    return latencies


def main(argv: list[str] | None = None) -> int:
    """Run the chosen command; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        config = AdamasConfig(budget=args.budget, thresholds=args.thresholds)
        document = read_document(args.doc)
    except (TypeError, ValueError) as err:  # DocumentError is a ValueError
        print(f"adamas: {err}", file=sys.stderr)
        return 2
    from adamas.generation import generate
    from adamas.loading import load_model

    model, tokenizer = load_model(args.model)
    messages = document_messages(document, args.question)
    try:
        sparse = _answer(
            f"Adamas, budget {args.budget}", generate(model, tokenizer, messages, config, args.max_new_tokens)
        )
        if args.compare_full:
            full = _answer("full attention", generate(model, tokenizer, messages, None, args.max_new_tokens))
            if sparse and full:
                ratio = statistics.median(full) / statistics.median(sparse)
                print(f"\ndecode speed, Adamas vs full: {ratio:.2f}x")
    except ValueError as err:
        print(f"adamas: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
