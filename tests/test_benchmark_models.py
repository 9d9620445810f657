"""The benchmarks' model shapes and random-weight builders (benchmarks/models.py), on the CPU."""

import torch

from benchmarks import models


def test_attention_shapes_are_the_model_shapes_heads():
    llama = models.shape_config("llama-3.1-8b")
    assert models.ATTENTION_SHAPES["llama3-8b"] == (llama.num_attention_heads, llama.num_key_value_heads, 128)
    assert models.ATTENTION_SHAPES["qwen2.5-7b"] == (28, 4, 128)
    assert all(hq % hkv == 0 for hq, hkv, _ in models.ATTENTION_SHAPES.values())


def test_tiny_is_llama_3_1_8b_scaled_down_with_sparse_layers_on_both_halves():
    tiny, big = models.shape_config("tiny"), models.shape_config("llama-3.1-8b")
    assert tiny.num_hidden_layers == 8 and (tiny.num_attention_heads, tiny.num_key_value_heads) == (8, 2)
    assert tiny.rope_parameters == big.rope_parameters and tiny.max_position_embeddings == big.max_position_embeddings


def test_random_and_spread_models_draw_finite_weights_alike():
    model = models.random_model("tiny", "cpu", torch.float32)
    spread, max_memory = models.spread_model("tiny", ["cpu"], torch.float32)
    assert set(max_memory) == {"cpu"}
    for built in (model, spread):
        weights = dict(built.named_parameters())
        assert all(bool(p.isfinite().all()) and p.device.type == "cpu" for p in weights.values())
        assert torch.equal(weights["model.norm.weight"], torch.ones_like(weights["model.norm.weight"]))
        std = float(weights["model.layers.0.mlp.up_proj.weight"].detach().std())
        assert abs(std - models.WEIGHT_STD) < 0.002, std
