"""Checkpoint round trip on 2 FSDP2 ranks: a fresh worker restored from the checkpoint gives identical
log-probs and an identical next step (so optimizer moments, LR schedule and weights all came back),
and the ``model/`` folder loads with plain ``from_pretrained``."""

from __future__ import annotations

import json
import os
import pickle
import random

import numpy as np
import pytest
import torch

from nemo_distill.models.policy.checkpointing import (
    UnsafeCheckpointFileError,
    is_policy_checkpoint,
    load_rng_state,
    load_scheduler_state,
    read_info,
    save_rng_state,
    save_scheduler_state,
)
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
    assert json.loads((path / "extra" / "scheduler.json").read_text())["last_epoch"] == 2  # plain JSON, no pickle
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


class _RunsCodeWhenUnpickled:
    """What an attacker would drop into checkpoint_dir: unpickling it calls ``os.system``-like code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_round_trips_as_plain_tensors(tmp_path):
    file = tmp_path / "rng_rank_0.pt"
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.randn()  # cached gaussians are part of the state too
    save_rng_state(file)
    expected = _draws()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    load_rng_state(file)
    assert _draws() == expected
    torch.load(file, weights_only=True)  # nothing in it needs unpickling of code


def test_scheduler_state_round_trips_as_json(tmp_path):
    def build():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))

    optimizer, scheduler = build()
    for _ in range(3):
        optimizer.step(), scheduler.step()
    save_scheduler_state(scheduler, tmp_path / "scheduler.json")
    fresh_optimizer, fresh = build()
    load_scheduler_state(fresh, tmp_path)
    assert fresh.last_epoch == 3 and fresh.get_last_lr() == scheduler.get_last_lr() == [0.25]
    fresh_optimizer.step(), fresh.step(), optimizer.step(), scheduler.step()
    assert fresh.get_last_lr() == scheduler.get_last_lr() == [0.2]


@pytest.mark.parametrize("name", ["rng_rank_0.pt", "scheduler.pt"])
def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path, name):
    marker = tmp_path / "code_ran"
    (tmp_path / name).write_bytes(pickle.dumps({"python_state": _RunsCodeWhenUnpickled(str(marker))}))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(UnsafeCheckpointFileError, match=f"refusing to load .*{name}"):
        load_rng_state(tmp_path / name) if name.startswith("rng") else load_scheduler_state(scheduler, tmp_path)
    assert not marker.exists()
