"""Random-weight models of real shapes, for the benchmarks (no download): in memory, or as a model directory.

    python -m benchmarks.models --shape llama-3.1-8b --out DIR [--device cuda]

writes DIR with config.json, random bf16 safetensors weights and the default model's tokenizer
(SmolLM2's, read from its GGUF), so that anything taking a model directory — `app.py --model DIR`,
`adamas.load_model(DIR)` — runs the real shape's compute. Its answers are noise: the weights
are random, and token ids past the tokenizer's vocabulary decode to nothing.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
import transformers

LLAMA3_ROPE = dict(
    rope_type="llama3",
    rope_theta=500000.0,
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=8192,
)
SHAPES: dict[str, tuple[str, dict]] = {  # (model type, config fields) of real models, and a tiny one for smoke runs
    "smollm2": (
        "llama",
        dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            head_dim=64,
            vocab_size=49152,
            max_position_embeddings=8192,
            tie_word_embeddings=True,
        ),
    ),
    "llama-3.2-1b": (
        "llama",
        dict(
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=64,
            vocab_size=128256,
            max_position_embeddings=131072,
            rope_parameters=LLAMA3_ROPE | {"factor": 32.0},
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
        ),
    ),
    "llama-3.1-8b": (
        "llama",
        dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            vocab_size=128256,
            max_position_embeddings=131072,
            rope_parameters=LLAMA3_ROPE,
            rms_norm_eps=1e-5,
        ),
    ),
    "qwen2.5-7b": (
        "qwen2",
        dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            head_dim=128,
            vocab_size=152064,
            max_position_embeddings=131072,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            use_sliding_window=False,
        ),
    ),
    "tiny": (
        "llama",
        dict(
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=64,
            vocab_size=1024,
            max_position_embeddings=4096,
            rope_parameters=LLAMA3_ROPE | {"original_max_position_embeddings": 512},
        ),
    ),
}
_CLASSES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
}
logger = logging.getLogger(__name__)


def shape_config(shape: str, **overrides: object) -> transformers.PretrainedConfig:
    """The transformers config of a named shape (ValueError naming the known ones)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    family, fields = SHAPES[shape]
    return _CLASSES[family][0](**(fields | overrides))


def random_model(
    shape: str, device: str | torch.device, dtype: torch.dtype, **overrides
) -> transformers.PreTrainedModel:
    """A model of `shape`, allocated on `device` in `dtype`, weights drawn as transformers initializes them.

    Linear and embedding weights come from N(0, 0.02), norms are ones: a step's activations stay finite.
    """
    torch.manual_seed(0)
    config = shape_config(shape, **overrides)
    with torch.device(device):  # no CPU copy: an 8B model is 16 GB in bf16
        model = _CLASSES[config.model_type][1]._from_config(config, dtype=dtype).eval()
    if not all(bool(p.isfinite().all()) for p in model.parameters()):
        raise RuntimeError("random initialization left non-finite weights")
    return model


def write_model_dir(shape: str, out: Path, device: str | torch.device = "cpu", tokenizer: Path | None = None) -> Path:
    """Write a loadable directory: `shape`'s config, random bf16 weights and a tokenizer.

    The tokenizer comes from the folder `tokenizer` (one saved by save_pretrained), else from the default model's GGUF.
    """
    if tokenizer is not None:
        tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer)
    else:
        from adamas.loading import default_model_file

        gguf = default_model_file()
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    vocab = max(shape_config(shape).vocab_size, len(tokenizer))  # every id the tokenizer makes has an embedding
    model = random_model(shape, device, torch.bfloat16, vocab_size=vocab)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a random-weight model directory of a real model's shape")
    parser.add_argument("--shape", default="llama-3.1-8b", choices=list(SHAPES))
    parser.add_argument("--out", type=Path, required=True, help="the directory to write")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where to draw")
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="a tokenizer folder (default: the default model's)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start = time.perf_counter()
    write_model_dir(args.shape, args.out, args.device, args.tokenizer)
    logger.info("wrote %s (%s) in %.1f s", args.out, args.shape, time.perf_counter() - start)


if __name__ == "__main__":
    main()
