import time

import pytest
import torch

from nemo_distill.models import loading
from nemo_distill.models.loading import EMBEDDED_MODEL_NAME, TokenizerConfig, load_tokenizer, resolve_model_path


def test_embedded_model_generates_with_chat_template():
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(EMBEDDED_MODEL_NAME)
    tokenizer = load_tokenizer(EMBEDDED_MODEL_NAME)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant" in text
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_second_load_does_not_convert_again(monkeypatch):
    resolve_model_path(EMBEDDED_MODEL_NAME)  # converted (or already cached)
    calls = []
    monkeypatch.setattr(loading, "_convert_embedded_model", lambda target: calls.append(target))
    started = time.time()
    resolve_model_path(EMBEDDED_MODEL_NAME)
    assert calls == [] and time.time() - started < 1.0


def test_conversion_into_fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_DISTILL_CACHE", str(tmp_path))
    path = resolve_model_path(EMBEDDED_MODEL_NAME)
    assert str(path).startswith(str(tmp_path))
    assert (tmp_path / "models" / EMBEDDED_MODEL_NAME / "model.safetensors").is_file()
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_unknown_model_is_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_model_path("no-such-model")
    with pytest.raises(FileNotFoundError, match="local HF cache"):
        resolve_model_path("nobody/nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model_path(str(tmp_path / "empty"))


def test_tiny_model_shares_vocab(tiny_model_dir, tiny_teacher_dir):
    from nemo_distill.models.loading import model_vocab_size

    assert model_vocab_size(tiny_model_dir) == model_vocab_size(tiny_teacher_dir) == len(load_tokenizer(tiny_model_dir))


def test_chat_template_override(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, TokenizerConfig(chat_template="{% for m in messages %}[{{ m.content }}]{% endfor %}"))
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "[hi]"
