"""LoRA on 2 FSDP2 ranks: only adapters train; the saved adapter reloads with peft and scores like the
worker; the merged ``model/`` folder and the weight export equal W + (alpha/r) B A."""

from __future__ import annotations

import json

import pytest
import torch

from nemo_distill.models.policy import lora
from nemo_distill.models.policy.config import LoraConfig
from policy_spawn import make_batch, run_ranks
from worker_scenarios import lora_train_and_save


@pytest.fixture(scope="module")
def batch():
    return make_batch(batch_size=4, seq_len=10, seed=2)


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, batch, tmp_path_factory):
    path = tmp_path_factory.mktemp("lora_ckpt")
    return path, run_ranks(lora_train_and_save, 2, tiny_model_dir, batch, str(path))


def _logprobs(model, batch) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1) * batch.attention_mask[:, 1:]


def test_only_adapter_weights_change(lora_run):
    _, (result, _) = lora_run
    assert result["trainable"] and all(lora.is_adapter_key(name) for name in result["trainable"])
    # "all-linear": the 7 projections of each of the 2 layers, never lm_head.
    assert len(result["trainable"]) == 2 * 7 * 2 and not any("lm_head" in name for name in result["trainable"])
    before, after = result["params_before"], result["params_after"]
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(lora.is_adapter_key(name) for name in changed)
    assert any(".lora_B." in name for name in changed)  # B starts at zero and must have moved


def test_saved_adapter_reloads_with_peft(lora_run, tiny_model_dir, batch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path, (result, _) = lora_run
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, path / "adapter").eval()
    torch.testing.assert_close(_logprobs(model, batch), result["logprobs"][:, 1:], atol=1e-5, rtol=0)
    assert json.loads((path / "adapter" / lora.BASE_MODEL_FILE).read_text())["base_model"] == tiny_model_dir


def test_merged_model_folder_and_export(lora_run, batch):
    from transformers import AutoModelForCausalLM

    path, (result, other_rank) = lora_run
    merged = AutoModelForCausalLM.from_pretrained(path / "model", dtype=torch.float32).eval()
    torch.testing.assert_close(_logprobs(merged, batch), result["logprobs"][:, 1:], atol=1e-5, rtol=0)
    export = result["export"]
    assert other_rank["export"] == {}
    assert set(export) == set(merged.state_dict())
    after = result["params_after"]
    stem = "base_model.model.model.layers.0.self_attn.q_proj"
    expected = after[f"{stem}.base_layer.weight"] + 2.0 * after[f"{stem}.lora_B.default.weight"] @ after[f"{stem}.lora_A.default.weight"]
    torch.testing.assert_close(export["model.layers.0.self_attn.q_proj.weight"], expected, atol=1e-6, rtol=0)


def test_name_mapping_and_merge_formula():
    assert lora.hf_name("base_model.model.model.layers.3.mlp.up_proj.base_layer.weight") == "model.layers.3.mlp.up_proj.weight"
    assert lora.hf_name("base_model.model.lm_head.weight") == "lm_head.weight"
    assert lora.adapter_keys_of("x.q_proj.base_layer.weight") == ("x.q_proj.lora_A.default.weight", "x.q_proj.lora_B.default.weight")
    assert lora.adapter_keys_of("x.q_proj.base_layer.bias") is None
    assert lora.is_adapter_key("x.q_proj.lora_A.default.weight") and not lora.is_adapter_key("x.q_proj.base_layer.weight")
    weight, lora_a, lora_b = torch.randn(5, 3), torch.randn(2, 3), torch.randn(5, 2)
    torch.testing.assert_close(lora.merge(weight, lora_a, lora_b, 4.0), weight + 4.0 * lora_b @ lora_a)
    assert lora.lora_scale(LoraConfig(rank=8, alpha=32)) == 4.0


def test_lora_config_rejects_empty_target_list():
    with pytest.raises(ValueError, match="lora.target_modules"):
        LoraConfig(target_modules=[])
