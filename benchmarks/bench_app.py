"""The app's reported per-token latency beside bench_e2e's graph-decode figure, on one model in one process.

    python -m benchmarks.bench_app --model DIR [--contexts 32768 131072] [--new-tokens 32] [--budget 128]
                                   [--out benchmarks/results/app_<device>.json]

Serves app.py's page on 127.0.0.1 for the model directory DIR (e.g. a random-weight Llama-3.1-8B
from `python -m benchmarks.models`), sends a document of about each context's tokens to its
`/compare` endpoint through gradio_client, as an API user would, and keeps what the app reports
(mean ms per decode step of each run, the decode path, the stage breakdown). Then it times the
same model, context and budget with bench_e2e's `measure` (one prefill, graph replays timed by
CUDA events, median of the steps) and records both per mode: `app_ms_per_token`,
`bench_ms_per_token` and their ratio. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import logging
import socket
import time
from pathlib import Path

import torch

import adamas
from adamas.loading import load_model
from benchmarks.bench_e2e import free_memory, measure
from benchmarks.common import device_slug, print_table, write_results

logger = logging.getLogger("bench_app")
FILLER = (
    "The archive keeps letters, ledgers and maps from the harbour office, sorted by year and by ship. "
    "Clerks copied each entry twice, once for the office and once for the owners. "
)
NEEDLE = "The harbour master's cat is called Juniper."
QUESTION = "What is the harbour master's cat called? Answer in one word."


def document(tokenizer, tokens: int) -> str:
    """About `tokens` tokens of filler with the needle at the middle."""
    per = len(tokenizer(FILLER, add_special_tokens=False)["input_ids"])
    half = FILLER * max(1, tokens // per // 2)
    return f"{half}{NEEDLE} {half}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask(url: str, text: str, budget: int, new_tokens: int) -> dict:
    """One /compare call, as an API client makes it."""
    import gradio_client

    client = gradio_client.Client(url, verbose=False)
    start = time.perf_counter()
    result = client.predict(
        document_text=text, document_file=None, question=QUESTION, budget=budget, max_new_tokens=new_tokens,
        api_name="/compare",
    )  # fmt: skip
    result["request_s"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model directory (python -m benchmarks.models)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--budget", type=int, default=adamas.AdamasConfig().budget)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import app  # the page as users get it

    model, tokenizer = load_model(args.model)
    studio = app.Studio(model, tokenizer, model_name=args.model.name)
    port = free_port()
    app.launch(app.build_app(studio), "127.0.0.1", port, block=False)
    url = f"http://127.0.0.1:{port}/"
    config = adamas.AdamasConfig(budget=args.budget)
    out = args.out or Path(__file__).parent / "results" / f"app_{device_slug()}.json"
    params = vars(args) | {"model": args.model.name, "out": out.name, "config": repr(config), "decode": studio.device}
    records = []
    for context in args.contexts:
        text = document(tokenizer, context - 200 - args.new_tokens)  # the chat template and question take the rest
        result = ask(url, text, args.budget, args.new_tokens)
        logger.info("context %d: app %s", context, {k: result[k] for k in ("adamas_ms_per_token", "full_ms_per_token")})
        free_memory(model.device)
        tokens = result["context_tokens"] + args.new_tokens  # the app's decoders hold prompt + answer slots
        bench = measure(model, config, tokens, batch=1, steps=args.new_tokens, cuda_graph=torch.cuda.is_available())
        free_memory(model.device)
        for mode in ("adamas", "full"):
            app_ms, bench_ms = result[f"{mode}_ms_per_token"], bench[f"{mode}_ms_median"]
            records.append(
                {
                    "context": result["context_tokens"],
                    "mode": mode,
                    "app_ms_per_token": app_ms,
                    "bench_ms_per_token": bench_ms,
                    "app_over_bench": app_ms / bench_ms,
                    "app_decode": result["decode"],
                    "app_new_tokens": result["new_tokens"][mode],
                    "app_stages_us": result["stages_us"].get(mode),
                    "app_request_s": result["request_s"],
                    "answer": result[f"{mode}_answer"],
                }
            )
        write_results(out, params, records)
    print_table(records, ["context", "mode", "app_ms_per_token", "bench_ms_per_token", "app_over_bench"], True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
