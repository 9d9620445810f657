"""Tiny random-weight models of each supported family, prompts for them, and a tokenizer of characters."""

import torch
from helpers import DEVICE

from benchmarks.models import FAMILIES, model_from_config

TINY = dict(
    vocab_size=96,
    hidden_size=96,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
)


def tiny_model(family: str, dtype=torch.float32, **overrides) -> torch.nn.Module:
    """A `family` model of TINY's sizes (and `overrides`) on DEVICE in `dtype`, random weights as the benchmarks'.

    Drawn on the CPU in fp32, then moved: every device and dtype gets the same weights.
    """
    if family == "mistral":
        overrides.setdefault("sliding_window", None)  # Mistral v0.2 on: full attention
    config = FAMILIES[family][0](**TINY | overrides)
    return model_from_config(config, "cpu", torch.float32).to(DEVICE, dtype)


def prompt_batch(batch: int = 2, length: int = 40, pad: int = 12):
    """Token ids and a left-padding mask: row 1 holds `pad` padding tokens."""
    ids = torch.randint(3, TINY["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if batch > 1:
        ids[1, :pad], mask[1, :pad] = 0, 0
    return ids.to(DEVICE), mask.to(DEVICE)


class CharTokenizer:
    """Just enough tokenizer for adamas.generate on a tiny model: one id per character."""

    eos_token_id = None

    def __call__(self, text: str, return_tensors: str = "pt") -> dict:
        return {"input_ids": torch.tensor([[3 + ord(c) % (TINY["vocab_size"] - 3) for c in text]])}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(97 + i % 26) for i in ids)
