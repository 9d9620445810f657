"""A model that accelerate places over several devices (device_map): every layer's cache on its device, same tokens.

On the CPU, layers offloaded to disk exercise accelerate's hooks; with CUDA, layers run on
cuda:0 and on the CPU (Triton on some, the reference on others); with two GPUs, on cuda:0
and cuda:1. Each time, Adamas at a budget above the context must give full attention's
greedy tokens through model.generate() and adamas.generate().
"""

import accelerate
import pytest
import torch
import transformers
from helpers import CUDA, assert_close
from tiny_models import TINY, tiny_model
from tokenizers import Tokenizer, models, pre_tokenizers

import adamas
from adamas import generation, integration, loading

NEW_TOKENS = 8
FULL_BUDGET = adamas.AdamasConfig(budget=4096, thresholds="calibrated", dense_layers=())  # every layer sparse
PROMPT = " ".join(f"w{3 + 7 * i % (TINY['vocab_size'] - 3)}" for i in range(60))
CPU, CUDA0, CUDA1 = torch.device("cpu"), torch.device("cuda", 0), torch.device("cuda", 1)
TWO_GPUS = CUDA and torch.cuda.device_count() >= 2


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Llama (fp32) and a word-level tokenizer saved as a model directory; and a memory cap.

    The cap holds the embedding and between one and two decoder layers, however accelerate
    reserves room for the largest layer: a device given it holds layers, and leaves some.
    """
    path = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_model("llama")
    model.save_pretrained(path)
    vocab = {f"w{i}": i for i in range(TINY["vocab_size"])}
    words = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0", pad_token="w0").save_pretrained(path)
    layer = sum(p.numel() * p.element_size() for p in model.model.layers[0].parameters())
    embedding = model.model.embed_tokens.weight.numel() * 4
    return path, int(embedding + 2.5 * layer)


def load(saved, **kwargs):
    model, tokenizer = adamas.load_model(str(saved[0]), dtype=torch.float32, **kwargs)
    model.generation_config.eos_token_id = None  # run every step
    return model, tokenizer


def layer_devices(model) -> list[torch.device]:
    """Where each decoder layer runs (its weights' device on a model that is not dispatched)."""
    return [loading.execution_device(layer) for layer in model.model.layers]


def assert_split_decoding_matches_full_attention(model, tokenizer, decode_calls) -> list[int]:
    """model.generate() and adamas.generate() at a full budget give full attention's greedy tokens.

    Each Adamas layer's K, V, codes and thresholds must sit where that layer runs.
    Returns the tokens.
    """
    ids = generation.prompt_ids(tokenizer, PROMPT)
    settings = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
    full = model.generate(ids, **settings)[0, ids.shape[1] :].tolist()
    cache = integration.AdamasCache(FULL_BUDGET, TINY["num_hidden_layers"])
    with integration.adamas_state(model, FULL_BUDGET):
        sparse = model.generate(ids, **settings, **{integration.CACHE_ARGUMENT: cache})
    assert sparse[0, ids.shape[1] :].tolist() == full
    for i, (layer, device) in enumerate(zip(cache.layers, layer_devices(model), strict=True)):
        placed = {layer.keys.device, layer.values.device, layer.codes.device, layer.thresholds.device}
        assert placed == {device}, f"layer {i} runs on {device} but its cache sits on {placed}"
    records = list(adamas.generate(model, tokenizer, PROMPT, FULL_BUDGET, NEW_TOKENS))
    assert [r.token_id for r in records] == full
    layers = TINY["num_hidden_layers"]
    assert len(decode_calls) == 2 * layers * (NEW_TOKENS - 1), "Adamas did not run on every layer and step"
    return full


def test_layers_offloaded_to_disk_decode_as_the_whole_model(saved, tmp_path, decode_calls):
    whole, tokenizer = load(saved, device="cpu")
    expected = assert_split_decoding_matches_full_attention(whole, tokenizer, decode_calls)
    decode_calls.clear()
    model, _ = load(saved, device_map="auto", max_memory={"cpu": saved[1]}, offload_folder=tmp_path)
    placed = set(model.hf_device_map.values())
    assert placed == {"cpu", "disk"} and loading.is_dispatched(model)
    assert set(layer_devices(model)) == {CPU}
    assert assert_split_decoding_matches_full_attention(model, tokenizer, decode_calls) == expected
    with pytest.raises(ValueError, match=r"device_map.*cannot decode on a fixed-capacity cache"):
        next(adamas.generate(model, tokenizer, PROMPT, FULL_BUDGET, NEW_TOKENS, cuda_graph=True))


def test_device_and_device_map_together_are_refused(saved):
    with pytest.raises(ValueError, match="device or device_map, not both"):
        adamas.load_model(str(saved[0]), device="cpu", device_map="auto")


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
def test_layers_offloaded_to_the_cpu_run_on_the_gpu(saved, decode_calls):
    model, tokenizer = load(saved, device_map="auto", max_memory={0: saved[1], "cpu": 2**30})
    assert "cpu" in set(model.hf_device_map.values())
    assert set(layer_devices(model)) == {CUDA0}  # accelerate streams the CPU's weights in
    assert_split_decoding_matches_full_attention(model, tokenizer, decode_calls)


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
def test_layers_on_the_gpu_and_the_cpu_keep_their_cache_where_they_run(saved, decode_calls):
    model, tokenizer = load(saved, device="cuda")
    placement = accelerate.infer_auto_device_map(
        model, max_memory={0: saved[1], "cpu": 2**30}, no_split_module_classes=list(model._no_split_modules)
    )
    # main_device="cpu": the CPU's layers run there (by default accelerate would offload them to the GPU)
    accelerate.dispatch_model(
        model, placement, main_device="cpu", skip_keys=list(model._skip_keys_device_placement or ())
    )
    devices = layer_devices(model)
    assert devices[0] == CUDA0 and devices[-1] == CPU
    assert_split_decoding_matches_full_attention(model, tokenizer, decode_calls)


@pytest.mark.skipif(not TWO_GPUS, reason="needs two GPUs")
def test_layers_on_two_gpus_keep_their_cache_where_they_run(saved, decode_calls):
    model, tokenizer = load(saved, device_map="auto", max_memory={0: saved[1], 1: 2**30})
    devices = layer_devices(model)
    assert devices[0] == CUDA0 and devices[-1] == CUDA1
    assert_split_decoding_matches_full_attention(model, tokenizer, decode_calls)


@pytest.mark.skipif(not TWO_GPUS, reason="needs two GPUs")
def test_kernels_launch_on_their_tensors_gpu_not_the_current_one():
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, 8, 64, generator=gen).to(CUDA1)
    k, v = (torch.randn(1, 2, 300, 64, generator=gen).to(CUDA1) for _ in range(2))
    config = adamas.AdamasConfig.paper(budget=512, dense_layers=())
    with torch.cuda.device(CUDA0):  # Triton launches on the current device unless adamas.ops switches it
        codes = adamas.encode(k)
        out = adamas.decode_attention(q, k, v, codes, config)
    assert torch.equal(codes, adamas.encode(k, backend="torch"))
    reference = adamas.AdamasConfig.paper(budget=512, dense_layers=(), backend="torch")
    assert_close("decode on cuda:1", out, adamas.decode_attention(q, k, v, codes, reference), torch.float32)
