"""Random-weight models of real shapes, for the benchmarks (no download): in memory, placed over devices, or on disk.

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

import accelerate
import torch
import transformers
from accelerate.utils import compute_module_sizes, get_balanced_memory, set_module_tensor_to_device

LLAMA3_ROPE = dict(
    rope_type="llama3",
    rope_theta=500000.0,
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=8192,
)
LLAMA_3_1_8B = dict(
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
    "llama-3.1-8b": ("llama", LLAMA_3_1_8B),
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
    # Llama-3.1-8B's rope and context at a size that runs anywhere; 8 layers, so that a model split
    # over two devices holds sparse layers on both (dense_layers are 0 and 1)
    "tiny": (
        "llama",
        LLAMA_3_1_8B
        | dict(
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=32,
            vocab_size=1024,
        ),
    ),
}


def _heads(shape: str) -> tuple[int, int, int]:
    """(Hq, Hkv, d) of one attention layer of a named shape."""
    fields = SHAPES[shape][1]
    return fields["num_attention_heads"], fields["num_key_value_heads"], fields["head_dim"]


ATTENTION_SHAPES: dict[str, tuple[int, int, int]] = {
    "llama3-8b": _heads("llama-3.1-8b"),
    "qwen2.5-7b": _heads("qwen2.5-7b"),
    "mha-7b": (32, 32, 128),  # Llama-2-7B and LongChat-7B, the paper's models: a KV head per query head
}
"""(Hq, Hkv, d) of one attention layer, by the names the attention benchmarks record in their results."""

FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
}
"""(config class, model class) of each model family Adamas supports, by model type."""
WEIGHT_STD = 0.02
"""Standard deviation of random linear and embedding weights: transformers' own initializer_range."""
logger = logging.getLogger(__name__)


def shape_config(shape: str, **overrides: object) -> transformers.PretrainedConfig:
    """The transformers config of a named shape (ValueError naming the known ones)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    family, fields = SHAPES[shape]
    return FAMILIES[family][0](**(fields | overrides))


def model_from_config(
    config: transformers.PretrainedConfig, device: str | torch.device, dtype: torch.dtype
) -> transformers.PreTrainedModel:
    """A model of `config` (one of FAMILIES), allocated on `device` in `dtype`, weights drawn as transformers
    initializes them after seeding 0: the one random-weight builder of the benchmarks and the tests.

    Linear and embedding weights come from N(0, WEIGHT_STD), norms are ones: a step's activations stay finite.
    """
    torch.manual_seed(0)
    with torch.device(device):  # no CPU copy: an 8B model is 16 GB in bf16
        model = FAMILIES[config.model_type][1]._from_config(config, dtype=dtype).eval()
    if not all(bool(p.isfinite().all()) for p in model.parameters()):
        raise RuntimeError("random initialization left non-finite weights")
    return model


def random_model(
    shape: str, device: str | torch.device, dtype: torch.dtype, **overrides
) -> transformers.PreTrainedModel:
    """A model of the named `shape` (its config fields changed by `overrides`), built by model_from_config."""
    return model_from_config(shape_config(shape, **overrides), device, dtype)


def memory_key(device: str) -> int | str:
    """accelerate's name of a device in max_memory and device maps: a GPU's index, or "cpu"."""
    parsed = torch.device(device)
    if parsed.type == "cpu":
        return "cpu"
    if parsed.type != "cuda":
        raise ValueError(f"devices must be cuda:<i> or cpu, got {device!r}")
    return parsed.index or 0


def spread_model(shape: str, devices: list[str], dtype: torch.dtype) -> tuple[transformers.PreTrainedModel, dict]:
    """A random-weight model of `shape` placed over `devices` as device_map="auto" would; and the max_memory used.

    Each device gets about an equal share of the weights, so every one holds layers; each weight is then drawn
    on its device (as random_model draws them: normal, std WEIGHT_STD; norms 1) and the model dispatched.
    """
    config = shape_config(shape)
    with accelerate.init_empty_weights(include_buffers=False):  # the rotary inv_freq stays real and fp32
        model = FAMILIES[config.model_type][1](config)
    no_split = list(model._no_split_modules)
    sizes = compute_module_sizes(model, dtype=dtype)
    largest = max(sizes[f"model.layers.{i}"] for i in range(config.num_hidden_layers))
    share = sizes[""] // len(devices) + largest  # the first device keeps one layer's room free, as accelerate does
    max_memory = {memory_key(d): share for d in devices}
    max_memory[memory_key(devices[-1])] = sizes[""] + largest  # the last takes whatever is left
    balanced = get_balanced_memory(model, max_memory=dict(max_memory), no_split_module_classes=no_split, dtype=dtype)
    device_map = accelerate.infer_auto_device_map(
        model, max_memory=balanced, no_split_module_classes=no_split, dtype=dtype
    )
    torch.manual_seed(0)
    for name, param in list(model.named_parameters()):
        where = next(place for prefix, place in device_map.items() if name.startswith(f"{prefix}.") or not prefix)
        where = torch.device("cuda", where) if isinstance(where, int) else torch.device(where)
        value = torch.empty(param.shape, dtype=dtype, device=where)
        if name.endswith("norm.weight"):
            value.fill_(1.0)
        else:
            value.normal_(0.0, WEIGHT_STD)
        set_module_tensor_to_device(model, name, where, value=value, dtype=dtype)
    # main_device="cpu": the CPU's layers run there (by default accelerate would offload them to a GPU)
    main = "cpu" if "cpu" in device_map.values() else None
    skip = list(model._skip_keys_device_placement or ())
    accelerate.dispatch_model(model, device_map, main_device=main, skip_keys=skip)
    model.generation_config.eos_token_id = None  # decode every requested step
    return model.eval(), {str(k): v for k, v in max_memory.items()}


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
