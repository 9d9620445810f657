"""Which bucket thresholds select best? Recall of the true top-K attention mass, paper vs calibrated.

    python -m benchmarks.threshold_recall [--model ID] [--context 2048] [--budgets 32 64 128]

For each thresholds setting and budget, answers a question about a long offline text
(CPython's pydoc topics) with tracing on and averages, over sparse layers, heads and
decode steps, the share of the true top-K attention mass that the selection kept.
Runs on the CPU or a GPU; prints a table and writes benchmarks/results/threshold_recall_<device>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import adamas
from adamas.documents import document_messages
from adamas.eval.tasks import reference_text
from benchmarks.common import device_slug, write_results

QUANTILES = [(0.1, 0.5, 0.9), (0.2, 0.5, 0.8), (0.25, 0.5, 0.75), (0.3, 0.5, 0.7), (0.35, 0.5, 0.65), (0.4, 0.5, 0.6)]


def offline_document(tokenizer, tokens: int) -> str:
    """About `tokens` tokens of English prose that ships with CPython."""
    ids = tokenizer(reference_text())["input_ids"][:tokens]
    return tokenizer.decode(ids)


def mean_recall(model, tokenizer, messages, config: adamas.AdamasConfig, new_tokens: int) -> float:
    """Recall averaged over sparse layers, heads and decode steps."""
    records = list(adamas.generate(model, tokenizer, messages, config, max_new_tokens=new_tokens, trace=True))
    recalls = torch.stack([step.recall for step in records[-1].recorder.finish().steps])  # [steps, layers, Hq]
    return float(recalls.nanmean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--context", type=int, default=2048, help="document tokens")
    parser.add_argument("--budgets", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()
    model, tokenizer = adamas.load_model(args.model)
    messages = document_messages(offline_document(tokenizer, args.context), "Summarise the text above.")
    window = {"sink": 0, "recent": 0}  # the thresholds alone decide what is selected
    settings = [("paper", {"thresholds": "paper"} | window)]
    settings += [
        (f"calibrated {q}", {"thresholds": "calibrated", "calibration_quantiles": q} | window) for q in QUANTILES
    ]
    records = []
    for name, fields in settings:
        for budget in args.budgets:
            recall = mean_recall(
                model, tokenizer, messages, adamas.AdamasConfig(budget=budget, **fields), args.new_tokens
            )
            records.append({"thresholds": name, "budget": budget, "recall": recall})
            print(f"{name:32s} budget {budget:5d}  recall {recall:.3f}", flush=True)
    out = Path(__file__).parent / "results" / f"threshold_recall_{device_slug()}.json"
    params = vars(args) | {"model": args.model or "SmolLM2-135M-Instruct (GGUF)", "document": "pydoc topics"}
    write_results(out, params, records)
    print(f"wrote {out.name}")


if __name__ == "__main__":
    main()
