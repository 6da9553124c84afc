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
