"""Model loading: the offline default model for real, and the errors a user can meet."""

import pytest
import torch
import transformers
from helpers import DEVICE

import adamas
from adamas import loading


def chat_ids(tokenizer, text: str) -> torch.Tensor:
    messages = [{"role": "user", "content": text}]
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return encoded["input_ids"].to(DEVICE)


def test_default_model_is_smollm2(smollm2):
    model, tokenizer = smollm2
    config = model.config
    assert (config.model_type, config.num_hidden_layers, config.num_attention_heads) == ("llama", 30, 9)
    assert (config.num_key_value_heads, config.head_dim, loading.max_context(model)) == (3, 64, 8192)
    assert model.dtype == (torch.bfloat16 if DEVICE == "cuda" else torch.float32) and not model.training
    assert tokenizer.decode(tokenizer("Paris")["input_ids"]) == "Paris"


def test_smollm2_full_budget_matches_full_attention_and_small_budget_answers(smollm2):
    model, tokenizer = smollm2
    ids = chat_ids(tokenizer, "Name the largest planet of the solar system.")
    settings = dict(max_new_tokens=16, do_sample=False)
    full = model.generate(ids, **settings)
    try:
        adamas.enable(model, adamas.AdamasConfig(budget=4096))
        assert torch.equal(model.generate(ids, **settings), full)
        adamas.enable(model, adamas.AdamasConfig(budget=16))
        sparse = model.generate(ids, **settings)
    finally:
        adamas.disable(model)
    answer = tokenizer.decode(sparse[0, ids.shape[1] :], skip_special_tokens=True)
    assert len(answer.strip()) > 0


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="could not load model"):
        adamas.load_model(str(tmp_path / "no-such-model"))


def test_unsupported_family_names_the_supported_ones(tmp_path, default_model):
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=300))
    gpt2.save_pretrained(tmp_path)
    default_model[1].save_pretrained(tmp_path)  # borrows the default model's tokenizer
    with pytest.raises(ValueError, match=r"'gpt2' model; supported families: llama"):
        adamas.load_model(str(tmp_path))


def test_context_check_names_both_lengths(smollm2):
    model, _ = smollm2
    loading.check_context(model, 8192)
    with pytest.raises(ValueError, match="needs 9000 tokens but the model's context is 8192"):
        loading.check_context(model, 9000)


def test_bad_dtype_is_rejected():
    with pytest.raises(TypeError, match="dtype"):
        adamas.load_model(dtype=torch.int8)
