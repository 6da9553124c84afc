"""Streaming HF weights out of a model and writing them as (sharded) safetensors that from_pretrained loads."""

from __future__ import annotations

import json

import torch

from nemo_distill.models.policy.weights import iter_hf_weights, write_hf_weights


def _model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


def test_stream_yields_copies_of_every_weight(tiny_model_dir):
    model = _model(tiny_model_dir)
    streamed = dict(iter_hf_weights(model, lora_scale=None, keep=True))
    assert set(streamed) == set(model.state_dict())
    name = "model.norm.weight"
    torch.testing.assert_close(streamed[name], model.state_dict()[name])
    with torch.no_grad():
        model.model.norm.weight.add_(1.0)
    assert not torch.equal(streamed[name], model.model.norm.weight)  # a copy, not the live parameter
    assert all(tensor is None for _, tensor in iter_hf_weights(model, lora_scale=None, keep=False))


def test_sharded_folder_reloads(tiny_model_dir, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    model = _model(tiny_model_dir)
    write_hf_weights(iter_hf_weights(model, lora_scale=None, keep=True), tmp_path, tied_embeddings=False, shard_bytes=4 * 2**20)
    AutoConfig.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files[0].endswith(f"-of-{len(files):05d}.safetensors")
    assert not list(tmp_path.glob("model-part-*"))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_tied_weights_are_streamed_once_and_specs_match_the_stream(tiny_model_dir):
    from nemo_distill.models.policy.weights import hf_weight_specs

    model = _model(tiny_model_dir)
    model.lm_head.weight = model.model.embed_tokens.weight  # tie them, as SmolLM2 and Qwen3-0.6B are
    streamed = dict(iter_hf_weights(model, lora_scale=None, keep=True))
    assert "lm_head.weight" not in streamed and "model.embed_tokens.weight" in streamed
    assert set(streamed) == set(model.state_dict()) - {"lm_head.weight"}
    specs = hf_weight_specs(model, lora_scale=None)
    assert [(name, shape, dtype) for name, shape, dtype in specs] == [
        (name, tuple(tensor.shape), tensor.dtype) for name, tensor in streamed.items()]


def test_tied_lm_head_is_left_out(tmp_path):
    weights = iter([("model.embed_tokens.weight", torch.ones(4, 2)), ("lm_head.weight", torch.ones(4, 2))])
    write_hf_weights(weights, tmp_path, tied_embeddings=True)
    from safetensors.torch import load_file

    assert list(load_file(tmp_path / "model.safetensors")) == ["model.embed_tokens.weight"]
