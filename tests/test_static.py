"""The fixed-capacity cache and GraphDecoder: same tokens as transformers' own decoding, on CPU and CUDA."""

import pytest
import torch
from helpers import DEVICE, assert_close
from tiny_models import FAMILIES, TINY, prompt_batch, tiny_model

import adamas
from adamas import static
from adamas.static import FixedCache, GraphDecoder

STEPS = 10
CAPACITY = 64


def decode(model, config, ids, steps: int = STEPS, **kwargs) -> list[int]:
    decoder = GraphDecoder(model, config, CAPACITY, **kwargs)
    tokens = [int(decoder.prefill(ids))]
    tokens += [int(decoder.step()) for _ in range(steps - 1)]
    return tokens


def dynamic(model, config, ids, steps: int = STEPS) -> list[int]:
    """Greedy tokens from model.generate() on the dynamic cache (Adamas under `config`, full if None)."""
    if config is not None:
        adamas.enable(model, config)
    out = model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=0)
    adamas.disable(model)
    return out[0, ids.shape[1] :].tolist()


def one_prompt(length: int = 40) -> torch.Tensor:
    return prompt_batch(batch=1, length=length)[0]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_full_attention_and_a_full_budget_match_generate(family, decode_calls):
    model = tiny_model(family)
    ids = one_prompt()
    expected = dynamic(model, None, ids)
    assert decode(model, None, ids) == expected
    assert decode_calls == []
    full_budget = adamas.AdamasConfig(budget=4096, thresholds="calibrated")
    assert decode(model, full_budget, ids) == expected
    decode_calls.clear()
    assert decode(model, full_budget, ids, cuda_graph=False) == expected  # eager: Python sees every step
    sparse_layers = TINY["num_hidden_layers"] - 2
    assert decode_calls == [CAPACITY] * sparse_layers * (STEPS - 1), "every decode step runs Adamas over the buffer"


@pytest.mark.parametrize("thresholds", ["paper", "calibrated"])
def test_a_small_budget_selects_as_the_dynamic_cache_does(thresholds):
    model = tiny_model("llama")
    ids = one_prompt(48)
    config = adamas.AdamasConfig(budget=8, sink=2, recent=2, thresholds=thresholds)
    assert decode(model, config, ids) == dynamic(model, config, ids)


@pytest.mark.parametrize("chunk", [16, 47], ids=["chunks-of-16", "last-chunk-of-1"])
def test_a_prompt_prefilled_in_chunks_is_cached_and_encoded_as_in_one_piece(chunk, monkeypatch):
    model = tiny_model("qwen2")
    ids = one_prompt(48)
    config = adamas.AdamasConfig(budget=8, thresholds="calibrated")
    whole = GraphDecoder(model, config, CAPACITY)
    whole.prefill(ids)
    monkeypatch.setattr(static, "PREFILL_CHUNK", chunk)
    chunked = GraphDecoder(model, config, CAPACITY)
    assert int(chunked.prefill(ids)) == int(whole.token)
    for mine, theirs in zip(chunked.cache.layers[2:], whole.cache.layers[2:], strict=True):
        assert_close("chunked keys", mine.keys, theirs.keys, torch.float32)
        prompt = mine.keys[:, :, :48]
        assert torch.equal(mine.thresholds, adamas.calibrate(prompt, config.calibration_quantiles))
        assert torch.equal(mine.codes[:, :, :48], adamas.encode(prompt, mine.thresholds))
        assert not mine.codes[:, :, 48:].any(), "empty slots hold no codes"
    full_budget = adamas.AdamasConfig(budget=4096, thresholds="calibrated")
    assert decode(model, full_budget, ids) == dynamic(model, None, ids)


def test_the_model_keeps_its_own_attention_setting():
    model = tiny_model("llama")
    decode(model, adamas.AdamasConfig(budget=8), one_prompt())
    assert adamas.integration.enabled_config(model) is None
    mine = adamas.AdamasConfig(budget=32)
    adamas.enable(model, mine)
    decode(model, None, one_prompt())
    assert adamas.integration.enabled_config(model) is mine
    adamas.disable(model)


def test_a_second_prompt_after_reset_decodes_as_a_fresh_decoder():
    model = tiny_model("qwen3")
    config = adamas.AdamasConfig(budget=8, thresholds="calibrated")
    first, second = one_prompt(40), one_prompt(30).flip(-1)
    decoder = GraphDecoder(model, config, CAPACITY)
    decoder.prefill(first)
    for _ in range(5):
        decoder.step()
    tokens = [int(decoder.prefill(second))] + [int(decoder.step()) for _ in range(STEPS - 1)]
    assert tokens == decode(model, config, second)


def test_fixed_cache_layout():
    config = adamas.AdamasConfig(budget=8, dense_layers=(0,))
    cache = FixedCache(3, 16, config)
    assert [layer.config for layer in cache.layers] == [None, config, config]
    assert cache.get_max_length() == 16 and cache.get_seq_length() == 0


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("thresholds", ["paper", "calibrated"])
def test_graph_replay_gives_the_eager_tokens(thresholds):
    model = tiny_model("llama", dtype=torch.bfloat16)
    ids = one_prompt(48)
    for config in (None, adamas.AdamasConfig(budget=8, recent=2, thresholds=thresholds)):
        graphed = decode(model, config, ids, cuda_graph=True)
        assert graphed == decode(model, config, ids, cuda_graph=False)


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs need a GPU")
def test_a_captured_graph_serves_the_next_prompt_with_its_own_thresholds():
    model = tiny_model("llama", dtype=torch.bfloat16)
    config = adamas.AdamasConfig(budget=8, thresholds="calibrated")
    decoder = GraphDecoder(model, config, CAPACITY, cuda_graph=True)
    decoder.prefill(one_prompt(40))
    decoder.step()
    graph = decoder.graph
    second = one_prompt(30).flip(-1)
    tokens = [int(decoder.prefill(second))] + [int(decoder.step()) for _ in range(STEPS - 1)]
    assert decoder.graph is graph
    assert tokens == decode(model, config, second, cuda_graph=False)


def test_bad_use_is_named():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="capacity"):
        GraphDecoder(model, None, 1)
    with pytest.raises(ValueError, match="context is 512"):
        GraphDecoder(model, None, 1024)
    with pytest.raises(TypeError, match="AdamasConfig"):
        GraphDecoder(model, {"budget": 8}, CAPACITY)
    decoder = GraphDecoder(model, None, 8, cuda_graph=False)
    with pytest.raises(RuntimeError, match="prefill"):
        decoder.step()
    with pytest.raises(ValueError, match=r"\[1, T\]"):
        decoder.prefill(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="shorter than the capacity"):
        decoder.prefill(one_prompt(8))
    decoder.prefill(one_prompt(6))
    decoder.step(), decoder.step()
    with pytest.raises(ValueError, match="cache is full: 8 tokens"):
        decoder.step()
    with pytest.raises(ValueError, match="sliding window"):
        GraphDecoder(tiny_model("mistral", sliding_window=16), None, CAPACITY)
    if DEVICE != "cuda":
        with pytest.raises(ValueError, match="needs the model on a CUDA device"):
            GraphDecoder(model, None, CAPACITY, cuda_graph=True)


class CharTokenizer:
    """Just enough tokenizer for adamas.generate on a tiny model: one id per character."""

    eos_token_id = None

    def __call__(self, text: str, return_tensors: str = "pt") -> dict:
        return {"input_ids": torch.tensor([[3 + ord(c) % (TINY["vocab_size"] - 3) for c in text]])}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(97 + i % 26) for i in ids)


@pytest.mark.parametrize(
    "config", [None, adamas.AdamasConfig(budget=8, thresholds="calibrated")], ids=["full", "adamas"]
)
def test_generate_decodes_the_same_with_and_without_a_graph(config):
    model = tiny_model("llama", dtype=torch.bfloat16 if DEVICE == "cuda" else torch.float32)
    model.generation_config.eos_token_id = None  # run every step
    prompt = "a long enough prompt for a tiny model " * 2

    def tokens(**kwargs) -> list[int]:
        return [r.token_id for r in adamas.generate(model, CharTokenizer(), prompt, config, 12, **kwargs)]

    eager = tokens(cuda_graph=False)
    assert len(eager) == 12
    if DEVICE == "cuda":
        assert tokens() == eager  # the default on CUDA: the graph
        assert tokens(cuda_graph=True) == eager
    else:
        with pytest.raises(ValueError, match="needs the model on a CUDA device"):
            tokens(cuda_graph=True)
    with pytest.raises(ValueError, match="cannot run in a CUDA graph"):
        tokens(cuda_graph=True, trace=True)
    with pytest.raises(TypeError, match="cuda_graph"):
        tokens(cuda_graph="yes")
