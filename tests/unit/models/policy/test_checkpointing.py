"""Checkpoint round trip on 2 FSDP2 ranks: a fresh worker restored from the checkpoint gives identical
log-probs and an identical next step (so optimizer moments, LR schedule and weights all came back),
and the ``model/`` folder loads with plain ``from_pretrained``."""

from __future__ import annotations

import json

import pytest
import torch

from nemo_distill.models.policy.checkpointing import is_policy_checkpoint, read_info
from policy_spawn import make_batch, run_ranks
from worker_scenarios import checkpoint_round_trip


@pytest.fixture(scope="module")
def batch():
    return make_batch(batch_size=4, seq_len=12, seed=1)


@pytest.fixture(scope="module")
def round_trip(tiny_model_dir, batch, tmp_path_factory):
    path = tmp_path_factory.mktemp("policy_ckpt") / "step_2"
    results = run_ranks(checkpoint_round_trip, 2, tiny_model_dir, batch, str(path))
    return path, results


def test_fresh_worker_continues_identically(round_trip):
    _, results = round_trip
    for result in results:
        assert torch.equal(result["fresh_logprobs"], result["logprobs_saved"])
        assert torch.equal(result["reloaded_logprobs"], result["logprobs_saved"])
        saved_step, fresh_step = result["third_step"], result["fresh_third_step"]
        assert fresh_step.loss == saved_step.loss
        assert fresh_step.grad_norm == saved_step.grad_norm
        assert fresh_step.lr == saved_step.lr == pytest.approx(1e-3 * 3 / 4)  # warmup step 3 of 4: scheduler restored
        assert torch.equal(result["fresh_logprobs_after_third"], result["logprobs_after_third"])  # Adam moments restored
        # The optimizer's param groups carry the 3rd step's lr; only a restored scheduler gets the 4th right.
        assert result["fresh_fourth_step"].lr == result["fourth_step"].lr == pytest.approx(1e-3)
        assert result["fresh_fourth_step"].loss == result["fourth_step"].loss


def test_checkpoint_layout(round_trip):
    path, _ = round_trip
    assert is_policy_checkpoint(path)
    info = read_info(path)
    assert info.world_size == 2 and info.has_optimizer and not info.lora
    assert (path / "extra" / "scheduler.pt").is_file()
    assert sorted(p.name for p in (path / "extra").glob("rng_rank_*.pt")) == ["rng_rank_0.pt", "rng_rank_1.pt"]
    assert not (path / "adapter").exists()
    assert json.loads((path / "model" / "config.json").read_text())["model_type"] == "qwen3"


def test_model_folder_loads_with_from_pretrained(round_trip, batch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, results = round_trip
    model = AutoModelForCausalLM.from_pretrained(path / "model", dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logprobs = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    expected = results[0]["logprobs_saved"][:, 1:]
    torch.testing.assert_close(logprobs * batch.attention_mask[:, 1:], expected, atol=1e-5, rtol=0)
    tokenizer = AutoTokenizer.from_pretrained(path / "model")
    assert tokenizer.decode(tokenizer("hello world")["input_ids"]) == "hello world"


def test_offload_calls_are_recorded_in_order(round_trip):
    _, results = round_trip
    assert results[0]["offload_events"] == ["offload_optimizer", "offload_model", "onload_model", "onload_optimizer"]


def test_loading_a_folder_that_is_not_a_checkpoint_names_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="policy_info.json"):
        read_info(tmp_path)
