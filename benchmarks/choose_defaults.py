"""Which decode settings should AdamasConfig() default to? A grid on the default model, against full attention.

    python -m benchmarks.choose_defaults [--budgets 64 128] [--lengths 2048 4096 7168] [--threads 1]

Every prompt is prefilled once (dense, adamas.eval.decoding) and each setting decodes from
a replay of that prefill, so the grid costs decode steps only. Tasks: passkey retrieval
(adamas.eval.tasks.passkey) at each length and depth; the app's needle question (a one-line
fact about a named pet or a person's code word in repeated filler, asked for in one word,
rendered through adamas.documents.document_messages, no answer prefix); and perplexity of
the reference text's tokens after a dense prefix. Settings, in two stages:
1. thresholds {paper, calibrated} x (sink, recent) in SINK_RECENT, dense layers (0, 1);
2. the `--refine` best of stage 1 again with each of DENSE_ALTERNATIVES.
A setting ranks by passkey + needle accuracy summed over the budgets, then by mean perplexity.
Full attention on the same prompts is the reference row. Prints the table and writes
benchmarks/results/defaults_cpu.json (or --out) after every setting, so a cut run keeps its rows.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import adamas
from adamas.documents import document_messages
from adamas.eval import tasks
from adamas.eval.decoding import Prefill, greedy_answer, prefill
from adamas.eval.perplexity import continuation_nll
from adamas.generation import prompt_ids, stop_ids
from benchmarks.common import device_slug, print_table, write_results

THRESHOLDS = ("paper", "calibrated")
SINK_RECENT = ((0, 0), (4, 0), (0, 32), (4, 16), (4, 32), (4, 64))
"""(sink, recent) pairs of stage 1: none (the paper's), each window alone, and sinks with three recent windows."""
DENSE_LAYERS = (0, 1)
DENSE_ALTERNATIVES = ((0, 1, 2), (0, 1, -1))
"""Stage 2's dense layers (-1: the last layer): layer 2, the sparse layer of lowest recall in
benchmarks/results/eval_2k_cpu, and the last, which writes the logits."""
PETS = ("cat", "dog", "parrot", "rabbit", "hamster", "turtle", "goldfish", "pony")
PET_NAMES = ("Biscuit", "Pepper", "Mango", "Clover", "Noodle", "Ziggy", "Waffles", "Juniper", "Pickles", "Tofu")
PEOPLE = ("Maria", "Tomas", "Priya", "Kenji", "Olga", "Samuel", "Amara", "Lucas")
CODE_WORDS = ("lantern", "falcon", "meadow", "copper", "thistle", "glacier", "saffron", "harbor")
FILLER = (
    "The meeting was moved to the afternoon. ",
    "Nothing else of note happened that day. ",
    "The report was filed on time as usual. ",
    "Everyone agreed to keep the office tidy. ",
    "The printer on the second floor was fixed. ",
)
"""The needle document's repeated filler: office-memo sentences, unlike the passkey test's."""
PPL_TIE = 0.01
"""Mean perplexities (of 64 tokens) this close are a tie: the grid's rows differ by more between budgets 64 and 128
of one setting (21.22 and 21.51), so a closer margin is noise, and a dense layer costs a full attention per step."""
NEEDLE_ROOM = 12
"""Tokens decoded for the answer: the model often answers in a sentence ("The name of my cat is Ziggy")."""


@dataclass(frozen=True)
class Prompt:
    """One prompt of the grid: its ids, what a right answer contains, and how to report it."""

    task: str  # "passkey" or "needle"
    length: int  # the context it was made for
    depth: float
    ids: tuple[int, ...]
    expected: tuple[str, ...]
    max_new_tokens: int


@dataclass(frozen=True)
class Setting:
    """Decode settings of one grid row, short of the budget."""

    thresholds: str
    sink: int
    recent: int
    dense_layers: tuple[int, ...]

    def config(self, budget: int) -> adamas.AdamasConfig | None:
        """This setting at `budget`, or None where sink + recent does not fit it."""
        if self.sink + self.recent > budget:
            return None
        return adamas.AdamasConfig(
            budget=budget,
            thresholds=self.thresholds,
            sink=self.sink,
            recent=self.recent,
            dense_layers=self.dense_layers,
        )


def needle_document(tokenizer, tokens: int, sample: int, seed: int = 0) -> tuple[str, str, str, float]:
    """(document, question, answer, depth): a one-line fact at a random depth in about `tokens` tokens of filler."""
    rng = random.Random(f"needle/{tokens}/{sample}/{seed}")
    if sample % 2 == 0:
        pet, answer = rng.choice(PETS), rng.choice(PET_NAMES)
        fact, question = f"My {pet} is named {answer}. ", f"What is the name of my {pet}? Answer in one word."
    else:
        person, answer = rng.choice(PEOPLE), rng.choice(CODE_WORDS)
        fact, question = f"{person}'s code word is {answer}. ", f"What is {person}'s code word? Answer in one word."
    per_unit = sum(len(tokenizer(u)["input_ids"]) for u in FILLER) / len(FILLER)
    units = [FILLER[i % len(FILLER)] for i in range(round(tokens / per_unit))]
    depth = rng.uniform(0.05, 0.95)
    units.insert(round(depth * len(units)), fact)
    return "".join(units), question, answer, depth


def build_prompts(tokenizer, args: argparse.Namespace) -> list[Prompt]:
    """The passkey prompts at every length and depth, then the needle prompts at every needle length."""
    prompts = []
    for length in args.lengths:
        for depth in args.depths:
            t = tasks.passkey(tokenizer, length, depth, args.seed)
            prompts.append(Prompt("passkey", length, depth, t.ids, t.expected, t.max_new_tokens))
    for length in args.needle_lengths:
        for sample in range(args.needle_samples):
            document, question, answer, depth = needle_document(tokenizer, length, sample, args.seed)
            ids = prompt_ids(tokenizer, document_messages(document, question))[0].tolist()
            prompts.append(Prompt("needle", length, round(depth, 3), tuple(ids), (answer,), NEEDLE_ROOM))
    return prompts


def answered(tokenizer, expected: tuple[str, ...], stops: set[int]) -> Callable[[list[int]], bool]:
    """Stop at an end token or once the answer holds every expected string."""
    return lambda ids: ids[-1] in stops or tasks.score(expected, tokenizer.decode(ids)) == 1.0


def evaluate(model, tokenizer, config, prompts, prefills, text: tuple[Prefill, list[int]]) -> dict:
    """Accuracy per task and length, perplexity and answers of one config (None: full attention)."""
    stops = stop_ids(model, tokenizer)
    start = time.perf_counter()
    samples = []
    for p, pre in zip(prompts, prefills, strict=True):
        ids = greedy_answer(model, pre, config, p.max_new_tokens, answered(tokenizer, p.expected, stops))
        answer = tokenizer.decode(ids, skip_special_tokens=True)
        samples.append({"task": p.task, "length": p.length, "depth": p.depth, "answer": answer,
                        "expected": list(p.expected), "score": tasks.score(p.expected, answer)})  # fmt: skip
    text_pre, continuation = text
    nll = continuation_nll(model, text_pre, config, continuation)
    row = {"perplexity": math.exp(float(nll.mean())), "seconds": round(time.perf_counter() - start, 1)}
    for task in ("passkey", "needle"):
        mine = [s for s in samples if s["task"] == task]
        row[task] = _mean(mine)
        row[f"{task}_by_length"] = {str(n): _mean([s for s in mine if s["length"] == n]) for n in _lengths(mine)}
    return row | {"samples": samples}


def rank(records: list[dict], budgets: list[int]) -> list[tuple[float, float, Setting]]:
    """(accuracy, perplexity, setting) best first: passkey + needle summed over `budgets`, then mean perplexity.

    At equal accuracy, perplexities within PPL_TIE of the best are a tie, won by fewer dense layers.
    """
    by_setting: dict[Setting, dict[int, dict]] = {}
    for r in records:
        if r["setting"] is not None:
            by_setting.setdefault(r["setting"], {})[r["budget"]] = r
    ranked = []
    for setting, rows in by_setting.items():
        accuracy = round(sum(rows[b]["passkey"] + rows[b]["needle"] for b in budgets if b in rows), 6)
        perplexity = sum(rows[b]["perplexity"] for b in budgets if b in rows) / len(rows)
        ranked.append((accuracy, perplexity, setting))
    best: dict[float, float] = {}
    for accuracy, perplexity, _ in ranked:
        best[accuracy] = min(perplexity, best.get(accuracy, math.inf))

    def key(t: tuple[float, float, Setting]) -> tuple:
        accuracy, perplexity, setting = t
        tied = perplexity <= best[accuracy] * (1 + PPL_TIE)
        return (-accuracy, not tied, len(setting.dense_layers) if tied else 0, perplexity)

    return sorted(ranked, key=key)


def stage_one() -> list[Setting]:
    """Thresholds x (sink, recent) on the paper's dense layers."""
    return [Setting(t, s, r, DENSE_LAYERS) for t in THRESHOLDS for s, r in SINK_RECENT]


def stage_two(records: list[dict], budgets: list[int], refine: int, layers: int) -> list[Setting]:
    """The `refine` best settings so far with each alternative set of dense layers."""
    best = [s for _, _, s in rank(records, budgets)[:refine]]
    alternatives = [tuple(sorted({i % layers for i in dense})) for dense in DENSE_ALTERNATIVES]
    return [Setting(s.thresholds, s.sink, s.recent, dense) for s in best for dense in alternatives]


def table_rows(records: list[dict], budgets: list[int]) -> list[dict]:
    """Flat rows for print_table, the full-attention row first, then settings best first."""
    order = {s: i for i, (_, _, s) in enumerate(rank(records, budgets))}
    rows = sorted(records, key=lambda r: (-1 if r["setting"] is None else order[r["setting"]], r["budget"] or 0))
    return [_flat(r) for r in rows]


def _flat(r: dict) -> dict:
    s: Setting | None = r["setting"]
    row = {"thresholds": "full" if s is None else s.thresholds, "budget": r["budget"] or "-"}
    row |= {"sink": "-", "recent": "-", "dense": "-"} if s is None else _setting_columns(s)
    row |= {f"pk@{n}": f"{v:.2f}" for n, v in r["passkey_by_length"].items()}
    row |= {f"needle@{n}": f"{v:.2f}" for n, v in r["needle_by_length"].items()}
    return row | {"ppl": f"{r['perplexity']:.2f}", "s": r["seconds"]}


def _setting_columns(s: Setting) -> dict:
    return {"sink": s.sink, "recent": s.recent, "dense": ",".join(map(str, s.dense_layers))}


def _serializable(r: dict) -> dict:
    s: Setting | None = r["setting"]
    fields = {"selector": "full"} if s is None else {"selector": "adamas"} | vars(s)
    return fields | {k: v for k, v in r.items() if k != "setting"}


def _deserialized(r: dict) -> dict:
    """A record as `_serializable` wrote it, with its Setting back (None for full attention)."""
    if r.pop("selector") == "full":
        return r | {"setting": None}
    fields = {f: r.pop(f) for f in Setting.__dataclass_fields__}
    return r | {"setting": Setting(**fields | {"dense_layers": tuple(fields["dense_layers"])})}


def _mean(samples: list[dict]) -> float:
    return sum(s["score"] for s in samples) / len(samples) if samples else float("nan")


def _lengths(samples: list[dict]) -> list[int]:
    return sorted({s["length"] for s in samples})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 7168], help="passkey context tokens")
    parser.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.4, 0.7, 0.95], help="passkey depths")
    parser.add_argument("--needle-lengths", type=int, nargs="+", default=[1024, 3072], help="needle document tokens")
    parser.add_argument("--needle-samples", type=int, default=3, help="needle prompts per length")
    parser.add_argument("--text-length", type=int, default=4096, help="reference-text tokens, prefix and scored")
    parser.add_argument("--text-tokens", type=int, default=64, help="tokens scored for perplexity")
    parser.add_argument("--refine", type=int, default=3, help="stage-1 settings tried with other dense layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--table", type=Path, default=None, help="print the table of this results file, run nothing")
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.table:
        records = [_deserialized(r) for r in json.loads(args.table.read_text())["records"]]
        print_table(table_rows(records, args.budgets), _columns(records), markdown=args.markdown)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or Path(__file__).parent / "results" / f"defaults_{device_slug()}.json"
    model, tokenizer = adamas.load_model()
    layers = model.config.num_hidden_layers
    prompts = build_prompts(tokenizer, args)
    prefills = [prefill(model, p.ids) for p in prompts]
    text_ids = tokenizer(tasks.reference_text())["input_ids"][: args.text_length]
    prefix = len(text_ids) - args.text_tokens - 1
    text = (prefill(model, text_ids[:prefix]), text_ids[prefix:])
    params = vars(args) | {"out": str(out), "model": "SmolLM2-135M-Instruct (GGUF)", "layers": layers,
                           "prompt_tokens": [len(p.ids) for p in prompts], "sink_recent": SINK_RECENT,
                           "dense_alternatives": DENSE_ALTERNATIVES, "needle_room": NEEDLE_ROOM}  # fmt: skip
    records = [{"setting": None, "budget": None, "stage": 0}]
    records[0] |= evaluate(model, tokenizer, None, prompts, prefills, text)
    print(f"full attention: passkey {records[0]['passkey']:.2f}, needle {records[0]['needle']:.2f}", flush=True)
    for stage in (1, 2):
        settings = stage_one() if stage == 1 else stage_two(records, args.budgets, args.refine, layers)
        for setting in settings:
            for budget in args.budgets:
                config = setting.config(budget)
                if config is None:
                    continue
                row = evaluate(model, tokenizer, config, prompts, prefills, text)
                records.append({"setting": setting, "budget": budget, "stage": stage} | row)
                print(f"{setting} budget {budget}: passkey {row['passkey']:.2f}, needle {row['needle']:.2f}, "
                      f"ppl {row['perplexity']:.2f} ({row['seconds']} s)", flush=True)  # fmt: skip
                write_results(out, params, [_serializable(r) for r in records])
    print_table(table_rows(records, args.budgets), _columns(records), markdown=args.markdown)
    print(f"wrote {out}")


def _columns(records: list[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        keys |= dict.fromkeys(_flat(r))
    return list(keys)


if __name__ == "__main__":
    main()
