"""compile_decoder_layers: the compiled layers give the eager worker's scores, loss and update."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nemo_distill.models.policy.config import DTensorConfig, TeacherConfig
from policy_spawn import MaskedNLLLoss, full_gradients, make_batch, run_ranks
from worker_scenarios import make_config


def score_and_train(rank: int, model_dir: str, compiled: bool) -> dict:
    from nemo_distill.models.policy.parallel import decoder_layers
    from nemo_distill.models.policy.worker import PolicyWorker

    cfg = dataclasses.replace(make_config(model_dir, precision="float32"), compile_decoder_layers=compiled)
    worker = PolicyWorker(cfg)
    batch = make_batch(seq_len=12)
    longer = make_batch(seq_len=17, seed=1)  # a second length: the dynamic-shape recompile
    result = {"compiled_layers": sum(hasattr(layer.forward, "_torchdynamo_orig_callable") for layer in decoder_layers(worker.model))}
    result["logprobs"] = worker.get_logprobs(batch)
    worker._accumulate_gradients(batch.to(worker.device), MaskedNLLLoss())
    result["grads"] = full_gradients(worker.model)
    worker.optimizer.zero_grad(set_to_none=True)
    result["losses"] = [worker.train(batch, MaskedNLLLoss()).loss, worker.train(longer, MaskedNLLLoss()).loss]
    result["logprobs_longer"] = worker.get_logprobs(longer)
    worker.shutdown()
    return result


@pytest.mark.slow
def test_compiled_layers_match_eager(tiny_model_dir):
    eager = run_ranks(score_and_train, 1, tiny_model_dir, False)[0]
    compiled = run_ranks(score_and_train, 1, tiny_model_dir, True)[0]
    assert eager["compiled_layers"] == 0 and compiled["compiled_layers"] == 2
    torch.testing.assert_close(compiled["logprobs"], eager["logprobs"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled["logprobs_longer"], eager["logprobs_longer"], rtol=1e-5, atol=1e-5)
    assert compiled["losses"] == pytest.approx(eager["losses"], rel=1e-5)
    # Gradients, not parameters after AdamW: Adam divides by sqrt(v), so a rounding-level gradient
    # difference on a near-zero entry becomes an lr-sized parameter difference.
    assert compiled["grads"].keys() == eager["grads"].keys() and len(eager["grads"]) > 0
    for name, value in eager["grads"].items():
        torch.testing.assert_close(compiled["grads"][name], value, rtol=1e-4, atol=1e-7)


def test_compile_with_context_parallel_is_refused():
    with pytest.raises(ValueError, match="compile_decoder_layers"):
        TeacherConfig(compile_decoder_layers=True, dtensor_cfg=DTensorConfig(context_parallel_size=2))
