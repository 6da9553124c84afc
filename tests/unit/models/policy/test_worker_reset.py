"""PolicyWorker.reset on a single-process gloo group: after training, the initial weights come back
exactly and the optimizer starts empty (full fine-tuning and LoRA)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nemo_distill.models.policy.config import OptimizerConfig, SchedulerConfig
from nemo_distill.models.policy.worker import PolicyWorker
from policy_spawn import MaskedNLLLoss, full_parameters, make_batch, run_ranks
from worker_scenarios import make_config


def train_reset_train(rank: int, model_dir: str, *, lora: bool) -> dict[str, Any]:
    """Train one step, reset with a new LR, record weights / optimizer, then train one step again."""
    worker = PolicyWorker(make_config(model_dir, lora=lora, lr=1e-2))
    batch = make_batch(batch_size=4, seq_len=10, seed=0)
    loss_fn = MaskedNLLLoss()
    result: dict[str, Any] = {"initial": full_parameters(worker.model)}
    result["first"] = worker.train(batch, loss_fn)
    result["trained"] = full_parameters(worker.model)
    worker.reset(OptimizerConfig(lr=5e-3), SchedulerConfig(warmup_steps=2), total_steps=4)
    result["reset"] = full_parameters(worker.model)
    result["optimizer_state_entries"] = len(worker.optimizer.state)
    result["grads"] = [name for name, p in worker.model.named_parameters() if p.grad is not None]
    result["lr_after_reset"] = worker.optimizer.param_groups[0]["lr"]
    result["again"] = worker.train(batch, loss_fn)
    result["trainable"] = [name for name, p in worker.model.named_parameters() if p.requires_grad]
    return result


def both_modes(rank: int, model_dir: str) -> dict[bool, dict[str, Any]]:
    """Full fine-tuning and LoRA in one spawned rank (one process start instead of two)."""
    return {lora: train_reset_train(rank, model_dir, lora=lora) for lora in (False, True)}


@pytest.fixture(scope="module")
def results(tiny_model_dir) -> dict[bool, dict[str, Any]]:
    return run_ranks(both_modes, 1, tiny_model_dir)[0]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_reset_restores_initial_weights_and_empties_optimizer(results, lora):
    result = results[lora]
    trainable = set(result["trainable"])
    assert trainable and (not lora or all(".lora_" in name for name in trainable))
    changed = [name for name in trainable if not torch.equal(result["trained"][name], result["initial"][name])]
    assert changed, "the training step changed no trainable weight, so the test would prove nothing"
    for name, initial in result["initial"].items():
        assert torch.equal(result["reset"][name], initial), name  # bit-exact, frozen and trainable alike
    assert result["optimizer_state_entries"] == 0 and result["grads"] == []
    # The new schedule: warmup step 0 of 2 gives lr = 5e-3 * 1/2.
    assert result["lr_after_reset"] == pytest.approx(2.5e-3)
    # Same weights and same batch: the first loss after the reset is the very first loss again.
    assert result["again"].loss == pytest.approx(result["first"].loss, abs=1e-6)
