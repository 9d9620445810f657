"""Adamas through transformers: plain generate() on tiny random models of each family."""

import pytest
import torch
import transformers
from helpers import DEVICE, assert_codes_follow_keys
from tiny_models import FAMILIES, TINY, prompt_batch, tiny_model

import adamas
from adamas import integration

NEW_TOKENS = 10


def greedy(model, ids, mask, **kwargs):
    return model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=0,
        **kwargs,
    )


@pytest.mark.parametrize("family", list(FAMILIES))
def test_full_budget_is_token_identical_and_disable_restores(family, decode_calls):
    model = tiny_model(family)
    ids, mask = prompt_batch()
    full = greedy(model, ids, mask)
    adamas.enable(model, adamas.AdamasConfig(budget=4096))
    with_adamas = greedy(model, ids, mask)
    sparse_layers = TINY["num_hidden_layers"] - 2  # layers 0 and 1 stay dense
    assert len(decode_calls) == sparse_layers * (NEW_TOKENS - 1), "Adamas did not run on every decode step"
    assert torch.equal(with_adamas, full)
    adamas.disable(model)
    assert model.config._attn_implementation == "sdpa"
    assert torch.equal(greedy(model, ids, mask), full)
    assert len(decode_calls) == sparse_layers * (NEW_TOKENS - 1), "Adamas ran after disable()"


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_small_budget_decodes_through_the_sparse_path(family, decode_calls):
    model = tiny_model(family)
    ids, mask = prompt_batch()
    adamas.enable(model, adamas.AdamasConfig(budget=8, dense_layers=()))
    out = greedy(model, ids, mask)
    assert out.shape == (2, ids.shape[1] + NEW_TOKENS)
    assert len(decode_calls) == TINY["num_hidden_layers"] * (NEW_TOKENS - 1)
    assert decode_calls[-1] == ids.shape[1] + NEW_TOKENS - 1, "the last step should see the whole context"


def test_cache_layer_keeps_codes_of_every_key():
    model = tiny_model("llama")
    ids, mask = prompt_batch(batch=1)
    config = adamas.AdamasConfig.paper(budget=8)
    cache = integration.AdamasCache(config, TINY["num_hidden_layers"])
    kwargs = {integration.CACHE_ARGUMENT: cache}
    model.generate(ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4, do_sample=False, **kwargs)
    assert [type(layer).__name__ for layer in cache.layers] == ["DynamicLayer"] * 2 + ["AdamasLayer"] * 2
    layer = cache.layers[3]
    assert layer.codes.shape == (*layer.keys.shape[:3], 16 // 4)
    assert torch.equal(layer.codes, adamas.encode(layer.keys, backend="torch"))
    assert_codes_follow_keys(layer)
    layer.crop(-2)
    assert layer.codes.shape[2] == layer.keys.shape[2] == ids.shape[1] + 1
    assert_codes_follow_keys(layer)


def test_cache_layer_writes_in_place_and_stays_consistent_through_batch_edits():
    config = adamas.AdamasConfig(budget=8, thresholds="calibrated")
    layer = integration.AdamasLayer(config)
    gen = torch.Generator().manual_seed(3)
    k, v = (torch.randn(2, 2, 300, 16, generator=gen).to(DEVICE) for _ in range(2))
    layer.update(k[:, :, :290], v[:, :, :290])
    buffer = layer._keys
    for t in range(290, 300):  # decode steps write into the same buffer
        keys, values = layer.update(k[:, :, t : t + 1], v[:, :, t : t + 1])
    assert layer._keys is buffer and keys.data_ptr() == buffer.data_ptr()
    assert torch.equal(keys, k) and torch.equal(values, v)
    assert torch.equal(layer.codes, adamas.encode(k, layer.thresholds, backend="torch"))
    assert_codes_follow_keys(layer)
    layer.batch_repeat_interleave(2)
    assert_codes_follow_keys(layer)
    layer.batch_select_indices(torch.tensor([0, 3], device=DEVICE))
    assert_codes_follow_keys(layer)
    extra = torch.randn(2, 2, 300, 16, generator=gen).to(DEVICE)  # grows past the buffer
    layer.update(extra, extra)
    expected = torch.cat([k, extra], dim=2)
    assert torch.equal(layer.keys, expected)
    assert torch.equal(layer.codes, adamas.encode(expected, layer.thresholds, backend="torch"))
    assert_codes_follow_keys(layer)
    layer.reset()
    assert layer.codes is None and layer.get_seq_length() == 0


def test_cache_layer_codes_follow_beam_reorders_crops_and_new_steps():
    config = adamas.AdamasConfig(budget=8, thresholds="calibrated")
    layer = integration.AdamasLayer(config)
    gen = torch.Generator().manual_seed(5)
    k, v = (torch.randn(3, 2, 40, 64, generator=gen).to(DEVICE) for _ in range(2))
    layer.update(k[:, :, :37], v[:, :, :37])
    layer.reorder_cache(torch.tensor([2, 0, 0], device=DEVICE))
    assert_codes_follow_keys(layer)
    layer.update(k[:, :, 37:38], v[:, :, 37:38])  # a step after the reorder writes into the adopted buffers
    assert_codes_follow_keys(layer)
    layer.crop(-8)
    assert layer.codes.shape[2] == 30
    layer.update(k[:, :, 38:40], v[:, :, 38:40])  # overwrites the cropped slots
    assert layer.codes.shape[2] == 32
    assert_codes_follow_keys(layer)


def test_calibrated_layers_fit_thresholds_to_their_prefill(decode_calls):
    model = tiny_model("qwen3")
    ids, mask = prompt_batch()
    full = greedy(model, ids, mask)
    config = adamas.AdamasConfig(budget=4096, thresholds="calibrated")
    cache = integration.AdamasCache(config, TINY["num_hidden_layers"])
    kwargs = {integration.CACHE_ARGUMENT: cache}
    adamas.enable(model, config)
    try:
        assert torch.equal(greedy(model, ids, mask, **kwargs), full)
    finally:
        adamas.disable(model)
    layer = cache.layers[2]
    assert layer.thresholds.shape == (TINY["num_key_value_heads"], 3)
    assert torch.equal(layer.codes, adamas.encode(layer.keys, layer.thresholds, backend="torch"))
    assert len(decode_calls) == 2 * (NEW_TOKENS - 1)


def test_enable_rejects_bad_input():
    with pytest.raises(TypeError, match="AdamasConfig"):
        adamas.enable(tiny_model("llama"), {"budget": 8})
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match=r"'gpt2' is not supported.*llama"):
        adamas.enable(gpt2, adamas.AdamasConfig())
    adamas.disable(gpt2)  # a no-op on a model that was never enabled


def test_sliding_window_layers_stay_dense_with_a_warning(caplog, decode_calls):
    model = tiny_model("mistral", sliding_window=16)
    with caplog.at_level("WARNING", logger="adamas.integration"):
        adamas.enable(model, adamas.AdamasConfig(budget=8))
    assert "sliding-window" in caplog.text
    greedy(model, *prompt_batch())
    assert decode_calls == []


def test_enable_twice_replaces_the_config():
    model = tiny_model("llama")
    adamas.enable(model, adamas.AdamasConfig(budget=8))
    adamas.enable(model, adamas.AdamasConfig(budget=16))
    assert integration.enabled_config(model).budget == 16
    assert len(model._forward_pre_hooks) == len(model._forward_hooks) == 1
    adamas.disable(model)
    assert integration.enabled_config(model) is None
    assert len(model._forward_pre_hooks) == len(model._forward_hooks) == 0


def test_switching_an_enabled_models_config_walks_no_modules_and_keeps_its_hooks(monkeypatch, decode_calls):
    model = tiny_model("llama")
    ids, mask = prompt_batch()
    full = greedy(model, ids, mask)
    adamas.enable(model, adamas.AdamasConfig(budget=8))
    hooks = (list(model._forward_pre_hooks.values()), list(model._forward_hooks.values()))
    walks = []
    real = torch.nn.Module.named_modules
    monkeypatch.setattr(torch.nn.Module, "named_modules", lambda m, *a, **kw: walks.append(m) or real(m, *a, **kw))
    adamas.enable(model, adamas.AdamasConfig(budget=16))
    with integration.adamas_state(model, adamas.AdamasConfig(budget=4096)):
        assert integration.enabled_config(model).budget == 4096
        assert walks == [], "a switch between configs walked the model's modules"
        assert torch.equal(greedy(model, ids, mask), full), "the attention function runs under the new config"
    assert len(decode_calls) == 2 * NEW_TOKENS - 2, "both sparse layers of every decode step ran Adamas"
    integration.set_enabled(model, adamas.AdamasConfig(budget=32))
    assert integration.enabled_config(model).budget == 32
    assert (list(model._forward_pre_hooks.values()), list(model._forward_hooks.values())) == hooks
    model.set_attn_implementation("sdpa")  # changed behind Adamas' back: enabling again sets it again
    adamas.enable(model, adamas.AdamasConfig(budget=8))
    assert model.config._attn_implementation == integration.ATTENTION_NAME
    adamas.disable(model)
    assert model.config._attn_implementation == "sdpa" and len(model._forward_pre_hooks) == 0


def test_the_configs_dense_backend_runs_the_masked_dense_steps(monkeypatch):
    """A padded batch decodes under a mask: dense_backend "triton" sends the dense layers' steps to the kernel."""
    calls = []
    real = adamas.ops.dense_attention
    monkeypatch.setattr(adamas.ops, "dense_attention", lambda *a, **kw: calls.append(a[1].shape[2]) or real(*a, **kw))
    model = tiny_model("llama")
    ids, mask = prompt_batch()  # row 1 is left-padded
    full = greedy(model, ids, mask)
    adamas.enable(model, adamas.AdamasConfig(budget=4096, dense_backend="triton"))
    assert torch.equal(greedy(model, ids, mask), full)
    assert len(calls) == 2 * (NEW_TOKENS - 1), "the two dense layers' decode steps ran the kernel"
    assert integration._FORWARD_CONFIG.get() is None, "the forward hooks leave no config behind"
    adamas.disable(model)


@pytest.mark.parametrize("heads", [(4, 4), (6, 2), (8, 1)], ids=["mha", "gqa-3", "mqa"])
def test_dense_attention_of_a_masked_step_matches_sdpa(heads):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    hq, hkv = heads
    gen = torch.Generator().manual_seed(hq)
    q, k, v = (torch.randn(2, h, n, 32, generator=gen).to(DEVICE) for h, n in ((hq, 1), (hkv, 37), (hkv, 37)))
    mask = (torch.rand(2, 1, 1, 37, generator=gen) > 0.3).to(DEVICE)
    module = torch.nn.Module().eval()
    module.num_key_value_groups, module.is_causal = hq // hkv, True
    expected, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.2)
    actual, _ = integration.dense_attention(module, q, k, v, mask, scaling=0.2)
    assert actual.shape == expected.shape == (2, 1, hq, 32)
    torch.testing.assert_close(actual, expected)
