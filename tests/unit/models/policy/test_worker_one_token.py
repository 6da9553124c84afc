"""A train step whose micro-batch is trimmed to ONE token (no prediction rows) runs forward and backward.

SFT's and GRPO's losses are sums over prediction rows; with none, they used not to depend on the
logits and ``backward()`` raised (found with the windowed output layer, which already handled it).
"""

from __future__ import annotations

import torch

from nemo_distill.algorithms.sft import SFTLoss
from nemo_distill.data.batch import TokenBatch
from policy_spawn import run_ranks
from worker_scenarios import make_config


def one_token_step(rank: int, model_dir: str) -> dict:
    from nemo_distill.models.policy.worker import PolicyWorker

    worker = PolicyWorker(make_config(model_dir, micro_batch_size=2, precision="float32"))
    # Two sequences of one real token each (the rest padding): trim_padding leaves T = 1.
    input_ids = torch.tensor([[5, 0, 0], [7, 0, 0]])
    attention_mask = torch.tensor([[1, 0, 0], [1, 0, 0]])
    batch = TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=attention_mask.clone(),
                       sample_mask=torch.ones(2))
    metrics = worker.train(batch, SFTLoss())
    return {"loss": metrics.loss, "grad_norm": metrics.grad_norm, "skipped": metrics.skipped}


def test_one_token_micro_batch_trains_with_loss_zero(tiny_model_dir):
    result = run_ranks(one_token_step, 1, tiny_model_dir)[0]
    assert result["loss"] == 0.0 and not result["skipped"]
    assert result["grad_norm"] == 0.0  # the tie adds exactly zero: no gradient anywhere
