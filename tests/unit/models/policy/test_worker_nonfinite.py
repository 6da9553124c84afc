"""A non-finite loss or gradient skips the optimizer step: weights, optimizer and scheduler unchanged,
``TrainMetrics.skipped`` set; the next finite step trains as if the bad one never happened (one
CPU rank, gloo, no Ray)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from policy_spawn import MaskedNLLLoss, full_parameters, make_batch, run_ranks
from worker_scenarios import make_config


@dataclass
class ScaledLoss:
    """``MaskedNLLLoss`` times ``scale``: NaN or inf makes the loss (and every gradient) non-finite."""

    scale: float

    def __call__(self, logits, batch, *, counts):
        loss, metrics = MaskedNLLLoss()(logits, batch, counts=counts)
        return loss * self.scale, metrics


def skip_then_train(rank: int, model_dir: str, batch, bad_scales: list[float]) -> dict:
    """One good step, then one step per bad scale, then one good step; parameters after each."""
    from nemo_distill.models.policy.worker import PolicyWorker

    worker = PolicyWorker(make_config(model_dir, micro_batch_size=2, warmup_steps=2))
    result = {"metrics": [worker.train(batch, MaskedNLLLoss())], "params": [full_parameters(worker.model)]}
    result["adam_steps"] = [_adam_steps(worker)]
    for scale in bad_scales:
        result["metrics"].append(worker.train(batch, ScaledLoss(scale)))
        result["params"].append(full_parameters(worker.model))
        result["adam_steps"].append(_adam_steps(worker))
    result["grads_after_skips"] = [p.grad for p in worker.model.parameters() if p.grad is not None]
    result["metrics"].append(worker.train(batch, MaskedNLLLoss()))
    result["params"].append(full_parameters(worker.model))
    # the reference: a fresh worker (same process group) that never saw the bad steps
    reference = PolicyWorker(make_config(model_dir, micro_batch_size=2, warmup_steps=2))
    metrics = [reference.train(batch, MaskedNLLLoss()) for _ in range(2)]
    result["reference"] = {"metrics": metrics, "params": full_parameters(reference.model)}
    return result


def _adam_steps(worker) -> list[float]:
    return sorted({float(state["step"]) for state in worker.optimizer.state.values() if "step" in state})


def test_non_finite_loss_skips_the_step_and_leaves_everything_unchanged(tiny_model_dir):
    batch = make_batch(batch_size=4, seq_len=12, seed=0)
    bad = [float("nan"), float("inf")]
    result = run_ranks(skip_then_train, 1, tiny_model_dir, batch, bad)[0]
    reference = result["reference"]

    first, *skipped, last = result["metrics"]
    assert not first.skipped and math.isfinite(first.loss)
    for metrics in skipped:
        assert metrics.skipped
        assert not (math.isfinite(metrics.loss) and math.isfinite(metrics.grad_norm))
        assert metrics.lr == last.lr  # the schedule did not move
    assert not last.skipped
    # weights bit-identical across the skipped steps, optimizer state not advanced, gradients dropped
    for params in result["params"][1:-1]:
        for name, value in result["params"][0].items():
            assert torch.equal(params[name], value), name
    assert result["adam_steps"] == [[1.0]] * (1 + len(bad))
    assert result["grads_after_skips"] == []
    # the step after the skips is the second step of a run that never saw them (same lr, same update)
    assert last.lr == reference["metrics"][1].lr
    assert last.loss == reference["metrics"][1].loss
    for name, value in reference["params"].items():
        assert torch.equal(result["params"][-1][name], value), name
