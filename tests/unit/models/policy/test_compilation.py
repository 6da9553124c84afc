"""compile_decoder_layers: the compiled layers give the eager worker's scores, loss and update."""

from __future__ import annotations

import dataclasses

import pytest

from nemo_distill.models.policy.config import DTensorConfig, TeacherConfig
from policy_spawn import assert_same_scores_gradients_losses, make_batch, run_ranks, scores_gradients_losses
from worker_scenarios import make_config


def score_and_train(rank: int, model_dir: str, compiled: bool) -> dict:
    from nemo_distill.models.policy.parallel import decoder_layers
    from nemo_distill.models.policy.worker import PolicyWorker

    cfg = dataclasses.replace(make_config(model_dir, precision="float32"), compile_decoder_layers=compiled)
    worker = PolicyWorker(cfg)
    # a second length: the dynamic-shape recompile
    result = scores_gradients_losses(worker, [make_batch(seq_len=12), make_batch(seq_len=17, seed=1)])
    result["compiled_layers"] = sum(hasattr(layer.forward, "_torchdynamo_orig_callable") for layer in decoder_layers(worker.model))
    worker.shutdown()
    return result


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [1, 2])  # 2: FSDP2 shards, its all-gather / reshard hooks around the compiled layers
def test_compiled_layers_match_eager(tiny_model_dir, world_size):
    eager = run_ranks(score_and_train, world_size, tiny_model_dir, False)
    compiled = run_ranks(score_and_train, world_size, tiny_model_dir, True)
    for rank in range(world_size):
        assert eager[rank]["compiled_layers"] == 0 and compiled[rank]["compiled_layers"] == 2
        assert_same_scores_gradients_losses(compiled[rank], eager[rank])


def test_compile_with_context_parallel_is_refused():
    with pytest.raises(ValueError, match="compile_decoder_layers"):
        TeacherConfig(compile_decoder_layers=True, dtensor_cfg=DTensorConfig(context_parallel_size=2))
