"""The evaluation: task generators and scoring, decode-mode perplexity, recall, the shared prefill, runner, CLI."""

import importlib.util
import json
import math
import re

import pytest
import torch
from helpers import DEVICE
from tiny_models import TINY, tiny_model

import adamas
from adamas import generation
from adamas.config import SELECTORS
from adamas.environment import environment
from adamas.eval import __main__ as cli
from adamas.eval import decoding, perplexity, recall, report, runner, tasks
from adamas.integration import CACHE_ARGUMENT, AdamasCache, adamas_state

UNIT_SLACK = 16  # tokens a prompt may fall short of its target: one haystack unit (a filler sentence, a word)


@pytest.fixture(scope="module")
def tokenizer(default_model):
    return default_model[1]


def random_ids(n: int, seed: int = 0) -> list[int]:
    return torch.randint(3, TINY["vocab_size"], (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def make_task(tokenizer, kind: str, length: int, seed: int = 0) -> tasks.Task:
    if kind == "passkey":
        return tasks.passkey(tokenizer, length, 0.5, seed)
    return tasks.GENERATORS[kind](tokenizer, length, 0, seed)


@pytest.mark.parametrize("kind", tasks.TASKS)
@pytest.mark.parametrize("length", [400, 1500])
def test_tasks_fill_their_length_in_model_tokens(tokenizer, kind, length):
    task = make_task(tokenizer, kind, length)
    target = length - task.max_new_tokens
    assert target - UNIT_SLACK <= len(task.ids) <= target, (len(task.ids), target)
    text = tokenizer.decode(task.ids)
    assert all(e in text for e in task.expected), "every expected answer is in the prompt"
    assert task.needle in text and text.count(task.needle) == 1
    assert make_task(tokenizer, kind, length) == task, "deterministic"
    assert make_task(tokenizer, kind, length, seed=1).expected != task.expected


@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_passkey_needle_sits_at_the_requested_depth(tokenizer, depth):
    task = tasks.passkey(tokenizer, 1200, depth)
    _, haystack, _ = tokenizer.decode(task.ids).split("\n\n")  # instruction, haystack, question

    def count(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    before = count(haystack[: haystack.index(task.needle)])
    assert abs(before / (count(haystack) - count(task.needle)) - depth) < 0.02


def test_task_too_short_for_its_frame_is_refused(tokenizer):
    with pytest.raises(ValueError, match="length 60 is too short for passkey"):
        tasks.passkey(tokenizer, 60, 0.5)
    with pytest.raises(ValueError, match="depth must be a number in"):
        tasks.passkey(tokenizer, 1000, 1.5)


@pytest.mark.parametrize(
    ("expected", "answer", "score"),
    [
        (("71432",), " 71432.", 1.0),
        (("71432",), "The pass key is 714321", 0.0),  # part of a longer number is not the number
        (("71432",), "a magical item", 0.0),
        (("1", "2", "3", "4"), "1, 3 and 44", 0.5),
        (("ABCDE", "FGHIJ"), "they are: abcde, FGHIJ", 1.0),
    ],
    ids=["exact", "inside-a-longer-number", "missing", "half-of-four", "case-insensitive"],
)
def test_score_is_the_share_of_expected_strings_found(expected, answer, score):
    assert tasks.score(expected, answer) == score


def test_score_needs_an_expected_string():
    with pytest.raises(ValueError, match="at least one"):
        tasks.score((), "anything")


def full_forward_perplexity(model, ids: list[int], prefix: int) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=DEVICE)).logits[0].float()  # [T, vocab]
    nll = torch.nn.functional.cross_entropy(logits[prefix:-1], torch.tensor(ids[prefix + 1 :], device=DEVICE))
    return math.exp(float(nll))


@pytest.mark.parametrize(
    "config",
    [None, adamas.AdamasConfig(selector="full"), adamas.AdamasConfig(budget=64), adamas.AdamasConfig(budget=50)],
    ids=["dynamic-cache", "selector-full", "adamas-budget-above-context", "adamas-budget-equal-context"],
)
def test_decode_perplexity_equals_a_full_forward_when_nothing_is_dropped(config):
    model, ids = tiny_model("llama"), random_ids(50)
    expected = full_forward_perplexity(model, ids, prefix=9)
    got = perplexity.decode_perplexity(model, ids, 9, config)
    assert got == pytest.approx(expected, rel=1e-4)
    assert adamas.integration.enabled_config(model) is None


def test_decode_perplexity_differs_when_the_budget_drops_tokens():
    model, ids = tiny_model("llama"), random_ids(80)
    full = perplexity.decode_perplexity(model, ids, 9, adamas.AdamasConfig(selector="full"))
    assert perplexity.decode_perplexity(model, ids, 9, adamas.AdamasConfig(budget=4)) != pytest.approx(full, rel=1e-4)
    with pytest.raises(ValueError, match="must leave at least 2"):
        perplexity.decode_perplexity(model, ids, 79, None)


def traced_recall(model, ids: list[int], config: adamas.AdamasConfig) -> recall.RecallMeter:
    pre = decoding.prefill(model, ids[:20])
    with recall.RecallMeter(model, len(ids)) as meter:
        perplexity.continuation_nll(model, pre, config, ids[20:], on_step=meter.record)
    return meter


@pytest.mark.parametrize("selector", [s for s in SELECTORS if s != "full"])
def test_recall_is_one_at_a_budget_covering_the_context(selector):
    model = tiny_model("llama")
    meter = traced_recall(model, random_ids(40), adamas.AdamasConfig(selector=selector, budget=48))
    per_layer = meter.per_layer()
    assert per_layer[:2] == [None, None], "dense layers select nothing"
    assert per_layer[2:] == pytest.approx([1.0] * (TINY["num_hidden_layers"] - 2), abs=1e-5)
    assert int(meter.count[2]) == 19 * TINY["num_attention_heads"], "every decode step and head counted"


def test_recall_below_one_when_tokens_are_dropped_and_one_for_the_oracle():
    model, ids = tiny_model("llama"), random_ids(60)
    assert traced_recall(model, ids, adamas.AdamasConfig.paper(4)).mean() < 0.99
    assert traced_recall(model, ids, adamas.AdamasConfig.paper(4, selector="oracle")).mean() == pytest.approx(1.0)
    assert math.isnan(traced_recall(model, ids, adamas.AdamasConfig(selector="full")).mean())


@pytest.mark.parametrize("selector", SELECTORS)
def test_replayed_prefill_decodes_like_a_prefill_on_the_selectors_cache(selector):
    model, ids = tiny_model("qwen3"), random_ids(40, seed=2)
    config = adamas.AdamasConfig(selector=selector, budget=16)
    answer = decoding.greedy_answer(model, decoding.prefill(model, ids), config, 8, lambda tokens: False)
    cache, expected, inputs = AdamasCache(config, TINY["num_hidden_layers"]), [], torch.tensor([ids], device=DEVICE)
    with adamas_state(model, config), torch.no_grad():
        for _ in range(8):
            logits = model(input_ids=inputs, use_cache=True, **{CACHE_ARGUMENT: cache}).logits
            expected.append(int(logits[0, -1].argmax()))
            inputs = torch.tensor([[expected[-1]]], device=DEVICE)
    assert answer == expected


def test_greedy_answer_stops_when_told():
    model, ids = tiny_model("llama"), random_ids(30)
    pre = decoding.prefill(model, ids)
    assert len(decoding.greedy_answer(model, pre, None, 10, lambda tokens: len(tokens) == 3)) == 3
    assert len(decoding.greedy_answer(model, pre, None, 10, lambda tokens: False)) == 10


@pytest.fixture(scope="module")
def word_model(tokenizer):
    """A tiny random-weight llama that reads the SmolLM2 tokenizer's ids."""
    return tiny_model("llama", vocab_size=len(tokenizer), max_position_embeddings=1024)


def test_runner_writes_one_record_per_cell(word_model, tokenizer, tmp_path):
    grid = runner.Grid(
        selectors=("adamas", "quest", "full"), budgets=(16, 32), lengths=(320,), depths=(0.5,), samples=1, text_tokens=6
    )
    records = runner.run_grid(word_model, tokenizer, grid, progress=False)
    cells = [(r["task"], r["selector"], r["budget"], r["length"]) for r in records]
    expected = {(t, s, b, 320) for t in runner.ALL_TASKS for s, b, _ in grid.configs()}
    assert len(cells) == len(set(cells)) and set(cells) == expected - {("recall", "full", None, 320)}
    for r in records:
        assert r["metric"] == {"perplexity": "perplexity", "recall": "recall"}.get(r["task"], "accuracy")
        assert math.isfinite(r["value"]) and r["seconds"] >= 0
        if r["metric"] == "accuracy":
            assert r["n"] == len(r["samples"]) == 1 and 0 <= r["value"] <= 1
    paths = report.write_report(tmp_path, environment("cpu"), {"model": "tiny"}, 1.0, records)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["records"] == json.loads(json.dumps(records))
    assert {"device", "torch", "transformers", "date"} <= set(written["environment"])
    markdown = (tmp_path / "results.md").read_text()
    assert re.search(r"\| 320 \| full \| \S+ \| \S+ \|", markdown), "full's one run shows in every budget column"
    assert {p.name for p in paths} >= {"results.json", "results.md"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budgets", "64", "0"], "budget must be >= 1, got 0"),
        (["--depths", "1.5"], r"depths must be numbers in \[0, 1\]"),
        (["--threads", "0"], "threads must be >= 1, got 0"),
        (["--lengths", "9000"], "length 9000 exceeds the model's context of 1024 tokens"),
        (["--lengths", "100", "--tasks", "perplexity"], "length 100 is too short to score 256 text tokens"),
    ],
    ids=["budget-0", "depth", "threads-0", "length-past-context", "text-longer-than-length"],
)
def test_cli_names_bad_arguments(argv, message, word_model, tokenizer, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "load_model", lambda *args, **kwargs: (word_model, tokenizer))
    assert cli.main(["--out", str(tmp_path), *argv]) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--selectors", "adamas", "bogus"], "invalid choice: 'bogus'"), (["--lengths", "2X"], "not a token count")],
    ids=["unknown-selector", "bad-length"],
)
def test_cli_rejects_unknown_values_before_loading(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--out", str(tmp_path), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_cli_quick_grid_takes_the_flags_given():
    args = cli._parser().parse_args(["--out", "x", "--quick", "--budgets", "16", "--lengths", "1K"])
    grid = cli.grid_from(args)
    assert grid.budgets == (16,) and grid.lengths == (1024,) and grid.depths == runner.QUICK.depths
    assert cli.grid_from(cli._parser().parse_args(["--out", "x"])) == runner.Grid()


def _without_seconds(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_shards_merge_into_the_whole_grid(word_model, tokenizer):
    grid = runner.Grid(
        selectors=("adamas", "oracle", "full"), budgets=(16, 32), lengths=(320,), depths=(0.0, 1.0), samples=1,
        text_tokens=4, tasks=("passkey", "multikey", "perplexity", "recall"),
    )  # fmt: skip
    whole = runner.run_grid(word_model, tokenizer, grid, progress=False)
    parts = [runner.run_grid(word_model, tokenizer, grid, progress=False, shard=(k, 3)) for k in (1, 2, 3)]
    assert all(parts), "every shard gets work"
    assert _without_seconds(runner.merge_records(parts)) == _without_seconds(whole)
    with pytest.raises(ValueError, match="two shards both hold the record"):
        runner.merge_records([parts[0], parts[0]])


def test_shards_split_the_units_evenly(tokenizer):
    grid = runner.Grid(lengths=(2048, 8192))
    prompts = {n: list(runner._prompts(tokenizer, grid, n)) for n in grid.lengths}
    units = runner.plan(grid, prompts)
    shards = [runner.shard_units(grid, prompts, units, k, 5) for k in range(1, 6)]
    flat = [u for s in shards for u in s]
    assert len(flat) == len(units) and set(flat) == set(units), "each unit in exactly one shard"
    assert all(s == [u for u in units if u in s] for s in shards), "a shard keeps the run order"
    steps = [sum(len(grid.budgets) if u.selector != "full" else 1 for u in s) for s in shards]
    assert max(steps) < 1.5 * min(steps)
    with pytest.raises(ValueError, match="shard must be k/n"):
        runner.shard_units(grid, prompts, units, 6, 5)


def test_cli_merges_shards_and_refuses_a_mismatch(word_model, tokenizer, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "load_model", lambda *args, **kwargs: (word_model, tokenizer))
    grid = [
        "--selectors",
        "adamas",
        "full",
        "--budgets",
        "16",
        "--lengths",
        "320",
        "--tasks",
        "passkey",
        "--no-progress",
    ]
    flags = [*grid, "--depths", "0", "1"]
    for k in (1, 2):
        assert cli.main([*flags, "--shard", f"{k}/2", "--out", str(tmp_path / str(k))]) == 0
    assert cli.main(["--merge", str(tmp_path / "1"), str(tmp_path / "2"), "--out", str(tmp_path / "all")]) == 0
    merged = json.loads((tmp_path / "all" / "results.json").read_text())
    assert merged["parameters"]["shards"] == 2 and "shard" not in merged["parameters"]
    assert {(r["selector"], r["n"]) for r in merged["records"]} == {("adamas", 2), ("full", 2)}
    assert re.search(
        r"min of process time \(2 shards; the longest took \d+\.\d min\)", (tmp_path / "all" / "results.md").read_text()
    )
    drawn = importlib.util.find_spec("plotly") is not None  # the command draws the figures where plotly is installed
    assert (tmp_path / "all" / "accuracy_passkey.html").exists() == drawn
    capsys.readouterr()
    assert cli.main(["--merge", str(tmp_path / "1"), "--out", str(tmp_path / "x")]) == 2
    assert "need the shards 1/1" in capsys.readouterr().err
    assert cli.main([*grid, "--depths", "0.5", "--shard", "1/2", "--out", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    assert cli.main(["--merge", str(tmp_path / "other"), str(tmp_path / "2"), "--out", str(tmp_path / "y")]) == 2
    assert re.search(r"ran another grid .*\(depths differ\)", capsys.readouterr().err)
    assert cli.main(["--merge", str(tmp_path / "missing"), "--out", str(tmp_path / "z")]) == 2
    assert "is not an evaluation's results.json" in capsys.readouterr().err


def test_latest_results_prefers_the_newest_full_run_to_a_newer_quick_one(tmp_path):
    def write(name: str, date: str, quick: bool) -> None:
        (tmp_path / name).mkdir()
        payload = {"environment": {"date": date}, "parameters": {"quick": quick}, "seconds": 1.0, "records": []}
        (tmp_path / name / "results.json").write_text(json.dumps(payload))

    write("quick", "2026-12-01T00:00:00+00:00", quick=True)
    assert report.latest_results(tmp_path) == tmp_path / "quick" / "results.json", "a quick run when it is alone"
    write("full-old", "2026-11-01T00:00:00+00:00", quick=False)
    write("full-new", "2026-11-20T00:00:00+00:00", quick=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("not json")
    assert report.latest_results(tmp_path) == tmp_path / "full-new" / "results.json"


DEFAULT_PASSKEYS = [(2048, 0.7), (4096, 0.4), (7168, 0.1)]
"""Passkey prompts (length, depth; seed 0) that full attention answers on SmolLM2 (benchmarks/results/defaults_cpu.json:
at budget 64 the defaults found all 3, the paper's settings 1)."""


def answer_score(model, tokenizer, pre: decoding.Prefill, task: tasks.Task, config) -> tuple[float, str]:
    """Greedy answer to `task` after its prefill under `config`, stopped at the end of turn or once right."""
    stops = generation.stop_ids(model, tokenizer)

    def done(ids: list[int]) -> bool:
        return ids[-1] in stops or tasks.score(task.expected, tokenizer.decode(ids)) == 1.0

    answer = tokenizer.decode(decoding.greedy_answer(model, pre, config, task.max_new_tokens, done))
    return tasks.score(task.expected, answer), answer


def test_default_config_finds_passkeys_at_budget_64_about_as_often_as_full_attention(smollm2):
    model, tokenizer = smollm2
    found, answers = {"full": 0.0, "defaults": 0.0}, []
    for length, depth in DEFAULT_PASSKEYS:
        task = tasks.passkey(tokenizer, length, depth)
        pre = decoding.prefill(model, task.ids)
        for name, config in (("full", None), ("defaults", adamas.AdamasConfig(budget=64))):
            score, answer = answer_score(model, tokenizer, pre, task, config)
            found[name] += score
            answers.append((name, length, depth, task.expected[0], answer))
    assert found["defaults"] >= found["full"] - 1, f"passkeys found {found}: {answers}"
