"""The fixed-capacity cache and GraphDecoder: same tokens as transformers' own decoding, on CPU and CUDA."""

import dataclasses

import pytest
import torch
from helpers import DEVICE, assert_close, assert_codes_follow_keys
from tiny_models import FAMILIES, TINY, CharTokenizer, prompt_batch, tiny_model

import adamas
from adamas import integration, ops, reference, static
from adamas.static import FixedCache, GraphDecoder

STEPS = 10
CAPACITY = 64


def decode_rows(model, config, ids, steps: int = STEPS, **kwargs) -> list[list[int]]:
    """Greedy tokens of each prompt row of ids [B, T] from a GraphDecoder of batch B."""
    decoder = GraphDecoder(model, config, CAPACITY, batch=ids.shape[0], **kwargs)
    tokens = [decoder.prefill(ids).clone()]
    tokens += [decoder.step().clone() for _ in range(steps - 1)]
    return torch.cat(tokens, dim=1).tolist()


def decode(model, config, ids, steps: int = STEPS, **kwargs) -> list[int]:
    return decode_rows(model, config, ids, steps, **kwargs)[0]


def dynamic_rows(model, config, ids, steps: int = STEPS) -> list[list[int]]:
    """Greedy tokens of each row from model.generate() on the dynamic cache (Adamas under `config`, full if None)."""
    if config is not None:
        adamas.enable(model, config)
    mask = torch.ones_like(ids)
    out = model.generate(
        ids, attention_mask=mask, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=0
    )
    adamas.disable(model)
    return out[:, ids.shape[1] :].tolist()


def dynamic(model, config, ids, steps: int = STEPS) -> list[int]:
    return dynamic_rows(model, config, ids, steps)[0]


def one_prompt(length: int = 40) -> torch.Tensor:
    return prompt_batch(batch=1, length=length)[0]


def two_prompts(length: int = 40) -> torch.Tensor:
    """Two different prompts of the same length (no padding): [2, length]."""
    return prompt_batch(batch=2, length=length, pad=0)[0]


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
    if DEVICE == "cpu":  # the compiled step scores the written slots: the prompt and every token so far
        seen = [ids.shape[1] + step for step in range(1, STEPS) for _ in range(sparse_layers)]
        assert decode_calls == seen, "every decode step runs Adamas over the slots written so far"
    else:
        assert decode_calls == [CAPACITY] * sparse_layers * (STEPS - 1), "every decode step runs Adamas over the buffer"


def test_a_layer_without_the_compiled_step_encodes_each_new_key_itself():
    """backend="torch" (as a GPU, or a CPU without numba) takes the stage-wise step: the layer writes each decode
    step's code as its key arrives, and the decoder gives full attention's tokens at a full budget."""
    model = tiny_model("llama")
    ids = one_prompt()
    config = adamas.AdamasConfig(budget=4096, thresholds="calibrated", backend="torch")
    decoder = GraphDecoder(model, config, CAPACITY, cuda_graph=False)
    tokens = [int(decoder.prefill(ids))] + [int(decoder.step()) for _ in range(STEPS - 1)]
    assert tokens == dynamic(model, None, ids)
    for layer in decoder.cache.layers[2:]:
        assert layer.pending is None, "no code is left for a compiled step to write"
        assert_codes_follow_keys(layer)


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
        assert_codes_follow_keys(mine)
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
    for layer in decoder.cache.layers[2:]:  # the first prompt's later slots were zeroed, codes too
        assert_codes_follow_keys(layer)


def test_a_batch_of_two_decodes_each_prompt_as_alone_and_as_generate(decode_calls):
    model = tiny_model("llama")
    ids = two_prompts()
    full_budget = adamas.AdamasConfig(budget=4096, thresholds="calibrated")
    rows = decode_rows(model, full_budget, ids)
    assert rows == [decode(model, full_budget, ids[i : i + 1]) for i in range(2)]
    assert rows == dynamic_rows(model, None, ids)
    assert rows == decode_rows(model, None, ids)
    assert rows[0] != rows[1], "the two prompts must lead to different answers for the test to mean anything"
    # the compiled CPU step runs over the slots written so far, the GPU's over the whole buffer
    written = {ids.shape[1] + step for step in range(1, STEPS)}
    assert set(decode_calls) == (written if DEVICE == "cpu" else {CAPACITY})


def test_a_batch_of_two_selects_as_the_dynamic_cache_does(monkeypatch):
    # torch.topk breaks ties at the k-th distance by no fixed rule, differently over the static
    # cache's C slots than over the dynamic cache's L tokens: break them by index, as the GPU kernel does
    monkeypatch.setattr(reference, "select", lambda dist, budget: dist.sort(dim=-1, stable=True).indices[..., :budget])
    model = tiny_model("qwen3")
    ids = two_prompts(48)
    config = adamas.AdamasConfig(budget=8, sink=2, recent=2, thresholds="calibrated")
    assert decode_rows(model, config, ids) == dynamic_rows(model, config, ids)


def test_the_kernel_path_appends_and_selects_over_the_written_prefix_as_the_reference(monkeypatch):
    """The GPU's path (the interpreter's on a CPU): one append kernel writes K, V and the new key's code, and the
    step selects over the written slots from their count, with no mask; the tokens are the reference backend's."""
    monkeypatch.setattr(reference, "select", lambda dist, budget: dist.sort(dim=-1, stable=True).indices[..., :budget])
    appended, counted = [], []
    real_append, real_decode = static.kernels.append, ops.decode_attention
    monkeypatch.setattr(static.kernels, "append", lambda *a: appended.append(a[4].numel()) or real_append(*a))
    monkeypatch.setattr(
        integration,
        "decode_attention",
        lambda *a, **kw: counted.append(kw["lengths"] is not None and kw["valid"] is None) or real_decode(*a, **kw),
    )
    model = tiny_model("llama")
    ids = two_prompts(40)
    config = adamas.AdamasConfig(budget=8, sink=2, recent=2, thresholds="calibrated", backend="triton")
    decoder = GraphDecoder(model, config, CAPACITY, cuda_graph=False, batch=2)
    tokens = [decoder.prefill(ids).clone()] + [decoder.step().clone() for _ in range(3)]
    sparse_layers = [layer for layer in decoder.cache.layers if layer.config is not None]
    for layer in sparse_layers:
        assert layer.appends
        assert_codes_follow_keys(layer)
    steps = 3 * len(sparse_layers)
    assert appended.count(1) == steps and all(counted) and len(counted) == steps
    torch_config = dataclasses.replace(config, backend="torch")
    assert torch.cat(tokens, dim=1).tolist() == decode_rows(model, torch_config, ids, steps=4, cuda_graph=False)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_the_split_k_dense_kernel_decodes_the_masked_steps_as_generate(family, monkeypatch):
    """Full attention and the dense layers over the fixed cache's mask, through the Triton kernel (CUDA's default)."""
    calls = []
    real = ops.dense_attention
    monkeypatch.setattr(ops, "dense_attention", lambda *a, **kw: calls.append(a[1].shape[2]) or real(*a, **kw))
    model = tiny_model(family)
    ids = two_prompts()
    expected = dynamic_rows(model, None, ids, steps=4)
    assert decode_rows(model, None, ids, steps=4) == expected
    calls.clear()  # the default dense backend, "auto", runs the kernel on CUDA only
    full_budget = adamas.AdamasConfig(budget=4096, thresholds="calibrated", dense_backend="triton")
    decoder = GraphDecoder(model, full_budget, CAPACITY, cuda_graph=False, batch=2)
    tokens = [decoder.prefill(ids).clone()]
    decoder.switch(None)  # full attention keeps the decoder's dense backend
    tokens += [decoder.step().clone() for _ in range(3)]
    assert torch.cat(tokens, dim=1).tolist() == expected
    assert calls == [CAPACITY] * TINY["num_hidden_layers"] * 3, "every layer of every decode step ran the kernel"
    calls.clear()
    assert decode_rows(model, full_budget, ids, steps=4, cuda_graph=False) == expected
    assert calls == [CAPACITY] * 2 * 3, "the two dense layers ran the kernel"


def test_switching_to_full_attention_and_back_shares_one_prefill(decode_calls):
    model = tiny_model("llama")
    ids = two_prompts()
    full_budget = adamas.AdamasConfig(budget=4096, thresholds="calibrated")
    decoder = GraphDecoder(model, full_budget, CAPACITY, cuda_graph=False, batch=2)  # Python sees every step
    tokens = [decoder.prefill(ids).clone()]
    decoder.switch(None)
    tokens += [decoder.step().clone() for _ in range(4)]
    assert decode_calls == [], "full attention runs no Adamas step"
    decoder.switch(full_budget)
    tokens += [decoder.step().clone() for _ in range(STEPS - 5)]
    assert torch.cat(tokens, dim=1).tolist() == dynamic_rows(model, None, ids)
    assert len(decode_calls) == (TINY["num_hidden_layers"] - 2) * (STEPS - 5)
    for layer in decoder.cache.layers[2:]:
        written = layer.keys[:, :, : decoder.length]
        assert torch.equal(layer.codes[:, :, : decoder.length], adamas.encode(written, layer.thresholds)), (
            "the keys written under full attention are encoded on switching back"
        )
        assert_codes_follow_keys(layer)
    with pytest.raises(ValueError, match="switch"):
        decoder.switch(adamas.AdamasConfig(budget=8))
    with pytest.raises(ValueError, match="switch"):
        GraphDecoder(model, None, CAPACITY).switch(full_budget)


@pytest.mark.parametrize("thresholds", ["paper", "calibrated"])
def test_a_decoder_started_from_anothers_prefill_decodes_as_after_its_own(thresholds):
    model = tiny_model("llama")
    ids = two_prompts()
    configs = {"adamas": adamas.AdamasConfig(budget=8, thresholds=thresholds), "full": None}
    expected = {mode: decode_rows(model, config, ids) for mode, config in configs.items()}
    for first, second in (("adamas", "full"), ("full", "adamas")):
        source = GraphDecoder(model, configs[first], CAPACITY, batch=2)
        follower = GraphDecoder(model, configs[second], CAPACITY, batch=2)
        tokens = {first: [source.prefill(ids).clone()], second: []}
        tokens[second].append(follower.prefill_from(source).clone())
        assert follower.length == source.length == ids.shape[1]
        for _ in range(STEPS - 1):  # in turns, as generate_side_by_side runs them: each keeps its own cache
            tokens[first].append(source.step().clone())
            tokens[second].append(follower.step().clone())
        for mode, decoded in tokens.items():
            assert torch.cat(decoded, dim=1).tolist() == expected[mode], f"{mode} after {first}'s prefill"
    fresh = GraphDecoder(model, None, CAPACITY, batch=2)
    with pytest.raises(TypeError, match="source must be a GraphDecoder"):
        fresh.prefill_from(ids)
    with pytest.raises(ValueError, match="prefilled"):
        fresh.prefill_from(GraphDecoder(model, None, CAPACITY, batch=2))
    with pytest.raises(ValueError, match="prefilled"):
        source.prefill_from(source)
    with pytest.raises(ValueError, match="source decodes 2 sequences on 4 layers, this decoder 1 on 4"):
        GraphDecoder(model, None, CAPACITY).prefill_from(source)
    with pytest.raises(ValueError, match="fewer than the capacity"):
        GraphDecoder(model, None, ids.shape[1], batch=2).prefill_from(source)


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
def test_graph_replay_of_a_batch_and_of_both_settings_gives_the_eager_tokens():
    model = tiny_model("llama", dtype=torch.bfloat16)
    ids = two_prompts(48)
    config = adamas.AdamasConfig(budget=8, recent=2, thresholds="calibrated")
    assert decode_rows(model, config, ids, cuda_graph=True) == decode_rows(model, config, ids, cuda_graph=False)

    def switched(cuda_graph: bool) -> list[list[int]]:
        decoder = GraphDecoder(model, config, CAPACITY, cuda_graph=cuda_graph, batch=2)
        tokens = [decoder.prefill(ids).clone()]
        for setting in (None, config, None, config):
            decoder.switch(setting)
            tokens += [decoder.step().clone() for _ in range(3)]
        return torch.cat(tokens, dim=1).tolist()

    assert switched(True) == switched(False)


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
    with pytest.raises(ValueError, match=r"\[2, T\]"):
        GraphDecoder(model, None, 8, batch=2).prefill(one_prompt(6))
    with pytest.raises(ValueError, match="batch"):
        GraphDecoder(model, None, 8, batch=0)
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


@pytest.mark.parametrize(
    "config", [None, adamas.AdamasConfig(budget=8, thresholds="calibrated")], ids=["full", "adamas"]
)
def test_generate_decodes_the_same_with_and_without_a_graph(config):
    # fp32: the dynamic cache and the fixed one hold the keys at other lengths; the fused
    # selection returns the same set in an order that depends on the cache's length, so the
    # attention sums in another order, and bf16 rounding can flip a random model's near-tied argmax.
    model = tiny_model("llama", dtype=torch.float32)
    model.generation_config.eos_token_id = None  # run every step
    prompt = "a long enough prompt for a tiny model " * 2

    def tokens(**kwargs) -> list[int]:
        return [r.token_id for r in adamas.generate(model, CharTokenizer(), prompt, config, 12, **kwargs)]

    dynamic = tokens(fixed_cache=False)  # as model.generate() decodes
    assert len(dynamic) == 12
    assert tokens(cuda_graph=False) == dynamic  # the fixed cache, every step eager
    if DEVICE == "cuda":
        assert tokens() == dynamic  # the default on CUDA: the graph
        assert tokens(cuda_graph=True) == dynamic
        assert tokens(trace=True) == dynamic  # traces are recorded inside the graph
    else:
        assert tokens() == dynamic  # the default on a CPU: the fixed cache, eagerly
        with pytest.raises(ValueError, match="needs the model on a CUDA device"):
            tokens(cuda_graph=True)
    with pytest.raises(ValueError, match="needs fixed_cache True or None"):
        tokens(cuda_graph=True, fixed_cache=False)
    with pytest.raises(TypeError, match="fixed_cache"):
        tokens(fixed_cache="no")
    with pytest.raises(TypeError, match="cuda_graph"):
        tokens(cuda_graph="yes")
