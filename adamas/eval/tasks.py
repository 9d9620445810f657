"""Offline long-context tasks: passkey retrieval and RULER-style needles and variable tracking.

Every generator returns a `Task`: the prompt's token ids (chat template and answer prefix
included), the expected answer strings and the tokens left for the answer. The prompt has
as many tokens as fit in `length - max_new_tokens` with whole haystack units (never more;
short of it by less than one unit: a sentence of filler or a word of prose). Nothing is
downloaded: the filler is the passkey test's repeated sentences, the prose CPython's
`pydoc_data.topics`. A task is a function of (tokenizer, length, depth or sample, seed).
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from adamas.config import check_int

TASKS = ("passkey", "multikey", "multivalue", "vartrack")
"""The generated tasks, scored by `score`: passkey retrieval, and three RULER tasks."""
NOISE = ("The grass is green. ", "The sky is blue. ", "The sun is yellow. ", "Here we go. ", "There and back again. ")
"""The passkey test's filler (Mohtashami & Jaggi, 2023), also RULER's noise haystack."""
ANSWER_ROOM = {"passkey": 8, "multikey": 12, "multivalue": 48, "vartrack": 32}
"""Tokens decoded per answer: the expected answer with some slack (digits are one token each; a listed
value such as "1. 5920118" and its line break take 11)."""
NEEDLES = 4
"""Needles per multi-key / multi-value prompt and hops + 1 of the variable chain, as in RULER."""
ADJECTIVES = ("amber", "brave", "calm", "dusty", "eager", "fuzzy", "gentle", "hollow", "icy", "jolly", "kind", "lucky")
NOUNS = ("anchor", "badger", "candle", "dolphin", "engine", "falcon", "garden", "harbor", "island", "jacket", "kettle")


@dataclass(frozen=True)
class Task:
    """One prompt with its expected answers; `score` rates a generated answer against them."""

    kind: str  # one of TASKS
    ids: tuple[int, ...]  # the prompt's token ids, template and answer prefix included
    expected: tuple[str, ...]  # strings a correct answer contains, all of them
    max_new_tokens: int  # room left for the answer: len(ids) + max_new_tokens <= length
    length: int  # the context the task was made for
    depth: float  # where the (queried) needle sits in the haystack: 0 start .. 1 end
    needle: str  # the text of the queried needle, to find it in the prompt


def score(expected: Sequence[str], answer: str) -> float:
    """Share of the `expected` strings found in `answer` (case-insensitive, as whole words): RULER's match-all."""
    if not expected:
        raise ValueError("expected must hold at least one string")
    found = sum(bool(re.search(rf"(?<![0-9A-Za-z]){re.escape(e)}(?![0-9A-Za-z])", answer, re.I)) for e in expected)
    return found / len(expected)


@functools.cache
def reference_text() -> str:
    """About 460K characters of English prose that ship with CPython: the pydoc topics, sorted by name."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def passkey(tokenizer: PreTrainedTokenizerBase, length: int, depth: float, seed: int = 0) -> Task:
    """Find a 5-digit pass key hidden at `depth` (0..1) in repeated filler sentences."""
    _check_depth(depth)
    rng = _rng("passkey", length, depth, seed)
    key = str(rng.randint(10_000, 99_999))
    needle = f"The pass key is {key}. Remember it. {key} is the pass key. "
    return _build(
        tokenizer,
        "passkey",
        length,
        NOISE,
        [(depth, needle)],
        instruction="There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
        "I will quiz you about the important information there.",
        question="What is the pass key?",
        answer_prefix="The pass key is",
        expected=(key,),
    )


def multikey(tokenizer: PreTrainedTokenizerBase, length: int, sample: int = 0, seed: int = 0) -> Task:
    """RULER's multi-key needle: four keyed numbers hidden in prose; recall the one of the asked key."""
    rng = _rng("multikey", length, sample, seed)
    keys = [f"{a}-{n}" for a, n in rng.sample([(a, n) for a in ADJECTIVES for n in NOUNS], NEEDLES)]
    values = [_number(rng) for _ in keys]
    needles = [f"One of the special magic numbers for {k} is: {v}. " for k, v in zip(keys, values, strict=True)]
    asked = rng.randrange(NEEDLES)
    depths = _depths(rng, NEEDLES)
    return _build(
        tokenizer,
        "multikey",
        length,
        _prose_units(),
        list(zip(depths, needles, strict=True)),
        instruction=_magic_intro("number"),
        question=f"What is the special magic number for {keys[asked]} mentioned in the provided text?",
        answer_prefix=f"The special magic number for {keys[asked]} mentioned in the provided text is",
        expected=(values[asked],),
        asked=asked,
    )


def multivalue(tokenizer: PreTrainedTokenizerBase, length: int, sample: int = 0, seed: int = 0) -> Task:
    """RULER's multi-value needle: four numbers filed under one key in prose; recall all four."""
    rng = _rng("multivalue", length, sample, seed)
    key = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
    values = [_number(rng) for _ in range(NEEDLES)]
    needles = [f"One of the special magic numbers for {key} is: {v}. " for v in values]
    return _build(
        tokenizer,
        "multivalue",
        length,
        _prose_units(),
        list(zip(_depths(rng, NEEDLES), needles, strict=True)),
        instruction=_magic_intro("numbers"),
        question=f"What are all the special magic numbers for {key} mentioned in the provided text?",
        answer_prefix=f"The special magic numbers for {key} mentioned in the provided text are",
        expected=tuple(values),
    )


def vartrack(tokenizer: PreTrainedTokenizerBase, length: int, sample: int = 0, seed: int = 0) -> Task:
    """RULER's variable tracking: one chain of four hops in filler; name every variable holding the value."""
    rng = _rng("vartrack", length, sample, seed)
    names: list[str] = []
    while len(names) < NEEDLES + 1:
        name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
        names += [name] if name not in names else []
    value = str(rng.randint(10_000, 99_999))
    chain = [f"VAR {names[0]} = {value}. "] + [f"VAR {b} = VAR {a}. " for a, b in itertools.pairwise(names)]
    return _build(
        tokenizer,
        "vartrack",
        length,
        NOISE,
        list(zip(_depths(rng, len(chain)), chain, strict=True)),
        instruction="Memorize and track the chain(s) of variable assignment hidden in the following text.",
        question=f"Question: Find all variables that are assigned the value {value} in the text above.",
        answer_prefix=f"Answer: According to the chain(s) of variable assignment in the text above, {len(names)} "
        f"variables are assigned the value {value}, they are:",
        expected=tuple(names),
    )


GENERATORS: dict[str, Callable[..., Task]] = {
    "passkey": passkey,
    "multikey": multikey,
    "multivalue": multivalue,
    "vartrack": vartrack,
}


def _build(
    tokenizer: PreTrainedTokenizerBase,
    kind: str,
    length: int,
    units: Sequence[str],
    needles: list[tuple[float, str]],
    instruction: str,
    question: str,
    answer_prefix: str,
    expected: tuple[str, ...],
    asked: int = 0,
) -> Task:
    """The longest prompt of whole haystack units (cycled) that leaves ANSWER_ROOM[kind] tokens of `length`."""
    check_int("length", length, 1)
    room = ANSWER_ROOM[kind]
    target = length - room

    def prompt(n: int) -> list[int]:
        haystack = _insert(units, n, needles)
        return _render(tokenizer, f"{question} {instruction}\n\n{haystack}\n\n{question}", answer_prefix)

    if len(prompt(0)) > target:
        raise ValueError(
            f"length {length} is too short for {kind}: the prompt without haystack has {len(prompt(0))} tokens "
            f"and the answer needs {room}"
        )
    lo, hi = 0, target  # every unit holds at least one token, so `target` units are too many
    while lo < hi:  # the largest n whose prompt fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if len(prompt(mid)) <= target else (lo, mid - 1)
    depth, needle = needles[asked]
    return Task(kind, tuple(prompt(lo)), expected, room, length, depth, needle.strip())


def _insert(units: Sequence[str], n: int, needles: list[tuple[float, str]]) -> str:
    """The first `n` units (cycled), each needle at its depth, moved back to a sentence's start."""
    haystack = [units[i % len(units)] for i in range(n)]
    for depth, needle in sorted(needles, reverse=True):  # from the back, so earlier positions stay put
        at = round(depth * n)
        while at > 0 and not re.search(r"[.!?]\s*$|\n\s*$", haystack[at - 1]):
            at -= 1
        haystack.insert(at, needle)
    return "".join(haystack).strip()


def _render(tokenizer: PreTrainedTokenizerBase, content: str, answer_prefix: str) -> list[int]:
    """Token ids of a user turn holding `content` and the start of the assistant's answer."""
    if tokenizer.chat_template is None:
        return tokenizer(f"{content}\n{answer_prefix}")["input_ids"]
    messages = [{"role": "user", "content": content}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text + answer_prefix, add_special_tokens=False)["input_ids"]


@functools.cache
def _prose_units() -> tuple[str, ...]:
    """The reference text as words, each with the whitespace after it."""
    return tuple(re.findall(r"\S+\s*", reference_text()))


def _rng(*parts: object) -> random.Random:
    return random.Random("/".join(map(str, parts)))  # str seeds hash the same in every process


def _number(rng: random.Random) -> str:
    return str(rng.randint(1_000_000, 9_999_999))  # RULER's values: 7 digits


def _depths(rng: random.Random, n: int) -> list[float]:
    return sorted(rng.random() for _ in range(n))


def _magic_intro(what: str) -> str:
    return (
        f"Some special magic {what} are hidden within the following text. Make sure to memorize it. "
        f"I will quiz you about the {what} afterwards."
    )


def _check_depth(depth: object) -> None:
    if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not 0 <= depth <= 1:
        raise ValueError(f"depth must be a number in [0, 1], got {depth!r}")
