"""dtensor_cfg.fsdp_units: one FSDP2 unit per layer, one for the whole model, or none for a frozen model on one rank."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nemo_distill.models.policy.config import DTensorConfig, TeacherConfig
from nemo_distill.models.policy.parallel import resolve_fsdp_units
from policy_spawn import assert_same_scores_gradients_losses, make_batch, run_ranks, scores_gradients_losses
from worker_scenarios import make_config


@pytest.mark.parametrize("units, trainable, ranks, cpu_offload, checkpointing, expected", [
    ("auto", True, 1, False, False, "model"),
    ("auto", True, 1, False, True, "layers"),  # activation checkpointing asks for memory
    ("auto", True, 2, False, False, "layers"),
    ("auto", True, 1, True, False, "layers"),
    ("auto", False, 1, False, False, "none"),  # frozen, one rank: nothing to shard or cast
    ("auto", False, 1, True, False, "layers"),  # FSDP2's offload policy brings the weights to the device
    ("auto", False, 4, False, False, "layers"),
    ("layers", True, 1, False, False, "layers"),
    ("model", False, 4, False, True, "model"),
])
def test_auto_units(units, trainable, ranks, cpu_offload, checkpointing, expected):
    assert resolve_fsdp_units(units, trainable=trainable, fsdp_ranks=ranks, cpu_offload=cpu_offload,
                              activation_checkpointing=checkpointing) == expected


def test_unknown_units_are_refused():
    from nemo_distill.config.errors import ConfigError
    from nemo_distill.config.schema import build_dataclass

    with pytest.raises(ConfigError, match="fsdp_units"):
        build_dataclass(DTensorConfig, {"fsdp_units": "blocks"}, "policy.dtensor_cfg")


def _fsdp_units(model) -> int:
    from torch.distributed.fsdp import FSDPModule

    return sum(isinstance(module, FSDPModule) for module in model.modules())


def student_scores(rank: int, model_dir: str, units: str) -> dict:
    from nemo_distill.models.policy.worker import PolicyWorker

    cfg = make_config(model_dir, precision="float32")
    worker = PolicyWorker(dataclasses.replace(cfg, dtensor_cfg=dataclasses.replace(cfg.dtensor_cfg, fsdp_units=units)))
    result = scores_gradients_losses(worker, [make_batch(seq_len=12), make_batch(seq_len=17, seed=1)])
    result["fsdp_units"] = _fsdp_units(worker.model)
    worker.shutdown()
    return result


def teacher_topk(rank: int, model_dir: str, units: str) -> dict:
    from nemo_distill.models.policy.worker import PolicyWorker

    worker = PolicyWorker(TeacherConfig(model_name=model_dir, precision="float32", logprob_batch_size=3,
                                        dtensor_cfg=DTensorConfig(fsdp_units=units)), trainable=False)
    batch = make_batch(seq_len=12)
    top = worker.get_topk_logits(batch, 4)
    result = {"values": top.values, "indices": top.indices, "logprobs": worker.get_logprobs(batch),
              "fsdp_units": _fsdp_units(worker.model),
              "plain_weights": all(not hasattr(param, "to_local") for param in worker.model.parameters())}
    worker.shutdown()
    return result


@pytest.mark.slow
def test_one_unit_trains_like_one_per_layer(tiny_model_dir):
    layers = run_ranks(student_scores, 1, tiny_model_dir, "layers")[0]
    model = run_ranks(student_scores, 1, tiny_model_dir, "auto")[0]
    assert layers["fsdp_units"] == 3 and model["fsdp_units"] == 1  # the tiny model's 2 layers + the root; the root alone
    assert_same_scores_gradients_losses(model, layers)


@pytest.mark.slow
def test_a_frozen_model_on_one_rank_skips_fsdp_and_scores_alike(tiny_model_dir):
    layers = run_ranks(teacher_topk, 1, tiny_model_dir, "layers")[0]
    plain = run_ranks(teacher_topk, 1, tiny_model_dir, "auto")[0]
    assert layers["fsdp_units"] == 3 and not layers["plain_weights"]
    assert plain["fsdp_units"] == 0 and plain["plain_weights"]
    torch.testing.assert_close(plain["values"], layers["values"], rtol=1e-5, atol=1e-5)
    assert torch.equal(plain["indices"], layers["indices"])
    torch.testing.assert_close(plain["logprobs"], layers["logprobs"], rtol=1e-5, atol=1e-5)


def verify_flags_and_sharding(rank: int, model_dir: str) -> dict:
    """What a one-unit student does around scoring: the head self-check's flag per forward, and whether its
    parameters are the sharded DTensors again after each scoring call (the gathered copy dropped)."""
    from torch.distributed.tensor import DTensor

    from nemo_distill.models.policy import head_scoring
    from nemo_distill.models.policy.worker import PolicyWorker
    from policy_spawn import MaskedNLLLoss

    flags = []
    forward_with_head_hook = head_scoring._forward_with_head_hook

    def recording(*args, verify_head=True, **kwargs):
        flags.append(verify_head)
        return forward_with_head_hook(*args, verify_head=verify_head, **kwargs)

    head_scoring._forward_with_head_hook = recording
    worker = PolicyWorker(make_config(model_dir, precision="float32"))  # 2 micro-batches of logprob_batch_size 3
    batch = make_batch(batch_size=4, seq_len=12)
    sharded = []
    for score in (lambda: worker.get_logprobs(batch), lambda: worker.get_topk_logits(batch, 3)):
        score()
        sharded.append(all(isinstance(param, DTensor) for param in worker.model.parameters()))
    loss = worker.train(batch, MaskedNLLLoss()).loss
    worker.shutdown()
    return {"flags": flags, "sharded_after_scoring": sharded, "verified": worker.head_verified, "loss": loss}


@pytest.mark.slow
def test_the_head_check_runs_once_and_one_unit_drops_its_copy_after_scoring(tiny_model_dir):
    result = run_ranks(verify_flags_and_sharding, 1, tiny_model_dir)[0]
    assert result["flags"] == [True, False, False, False] and result["verified"]  # 2 scoring calls x 2 micro-batches
    assert result["sharded_after_scoring"] == [True, True]
    assert torch.isfinite(torch.tensor(result["loss"]))
