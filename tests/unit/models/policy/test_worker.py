"""PolicyWorker on CPU ranks (gloo, no Ray): one worker against float64 HF references, FSDP2 over 2
workers and tensor parallel over 2 workers against one worker, a frozen teacher."""

from __future__ import annotations

import pytest
import torch

from policy_spawn import make_batch, run_ranks, target_prediction_rows
from worker_scenarios import teacher_and_checkpointed_student, train_and_score

STEPS = 5
K = 7
TEMPERATURE = 0.7
RUN = dict(steps=STEPS, k=K, temperature=TEMPERATURE)


@pytest.fixture(scope="module")
def batch():
    return make_batch(batch_size=4, seq_len=12, seed=0)


@pytest.fixture(scope="module")
def hf_logits(tiny_model_dir, batch) -> torch.Tensor:
    """``[B, T, V]`` float64 logits of the plain HF model (the brute-force reference)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64).eval()
    with torch.no_grad():
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


@pytest.fixture(scope="module")
def single(tiny_model_dir, batch):
    """The reference run: one worker, micro-batches of 2."""
    return run_ranks(train_and_score, 1, tiny_model_dir, batch, tp=1, micro_batch_size=2, **RUN)[0]


@pytest.fixture(scope="module")
def fsdp_pair(tiny_model_dir, batch):
    """Two FSDP2 data-parallel workers, micro-batches of 1 (so accumulation differs from the reference)."""
    return run_ranks(train_and_score, 2, tiny_model_dir, batch, tp=1, micro_batch_size=1, **RUN)


@pytest.fixture(scope="module")
def tp_pair(tiny_model_dir, batch):
    """Two tensor-parallel workers (one data-parallel rank), micro-batches of 2."""
    return run_ranks(train_and_score, 2, tiny_model_dir, batch, tp=2, micro_batch_size=2, **RUN)


def _reference_logprobs(hf_logits: torch.Tensor, batch) -> torch.Tensor:
    logprobs = torch.log_softmax(hf_logits[:, :-1], dim=-1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    expected = torch.zeros(batch.input_ids.shape, dtype=torch.float64)
    expected[:, 1:] = logprobs * batch.attention_mask[:, 1:]
    return expected


def test_logprobs_match_float64_hf_model(single, hf_logits, batch):
    logprobs = single["logprobs_initial"]
    assert logprobs.dtype == torch.float32 and logprobs.shape == batch.input_ids.shape
    torch.testing.assert_close(logprobs.double(), _reference_logprobs(hf_logits, batch), atol=2e-5, rtol=0)
    assert torch.all(logprobs[:, 0] == 0) and torch.all(logprobs[batch.attention_mask == 0] == 0)


def test_targets_only_scoring_is_exact_on_targets_and_skips_the_prompt(single, hf_logits, batch):
    """``targets_only=True``: log-probs exact on the loss_mask tokens, top-k on the rows predicting them;
    the 3-token prompt's rows before a micro-batch's first target row (row 2) skip the output layer."""
    targets = batch.loss_mask.bool()
    logprobs = single["logprobs_targets"]
    torch.testing.assert_close(logprobs[targets].double(), _reference_logprobs(hf_logits, batch)[targets], atol=2e-5, rtol=0)
    needed = target_prediction_rows(batch)
    topk = single["topk_targets"]
    expected_values, expected_indices = torch.topk(hf_logits / TEMPERATURE, K, dim=-1)
    torch.testing.assert_close(topk.values[needed].double(), expected_values[needed], atol=2e-5, rtol=0)
    assert torch.equal(topk.indices[needed], expected_indices[needed])
    # Micro-batches of 3: samples 0-2 share one whose first target row is 2; sample 3 (no targets) is
    # alone in the other, which scores every row.
    assert not topk.values[:3, :2].any() and not topk.indices[:3, :2].any()
    assert not logprobs[:3, :2].any()  # column 2 (hidden row 1) is not a target either: may be 0 too
    assert torch.equal(topk.values[3], single["topk"].values[3]) and torch.equal(logprobs[3], single["logprobs_initial"][3])


def test_topk_matches_float64_hf_model(single, hf_logits, batch):
    topk = single["topk"]
    assert topk.values.shape == (4, 12, K) and topk.indices.dtype == torch.int32  # half the bytes to the trainer
    expected_values, expected_indices = torch.topk(hf_logits / TEMPERATURE, K, dim=-1)
    real = batch.attention_mask.bool()
    torch.testing.assert_close(topk.values[real].double(), expected_values[real], atol=2e-5, rtol=0)
    assert torch.equal(topk.indices[real], expected_indices[real])
    assert torch.all(topk.values[~real] == 0) and torch.all(topk.indices[~real] == 0)
    assert torch.all(topk.values[..., :-1] >= topk.values[..., 1:])  # descending


def test_first_step_loss_is_masked_token_mean(single, hf_logits, batch):
    valid = batch.valid_target_tokens()[:, 1:].double()
    expected = -(_reference_logprobs(hf_logits, batch)[:, 1:] * valid).sum() / valid.sum()
    first = single["metrics"][0]
    assert first.loss == pytest.approx(float(expected), abs=1e-5)
    assert first.num_valid_tokens == float(valid.sum()) == 2 * 9 - 4  # samples 0 and 1 only
    assert first.loss_metrics["targets"] == first.num_valid_tokens
    assert first.lr == pytest.approx(1e-3) and first.grad_norm > 0 and first.tokens_per_sec > 0
    losses = [m.loss for m in single["metrics"]]
    assert losses[-1] < losses[0]  # it learns


def test_export_holds_hf_named_full_weights(single, tiny_model_dir):
    from safetensors.torch import load_file

    original = load_file(f"{tiny_model_dir}/model.safetensors")
    exported = single["export"]
    assert set(exported) == set(original)
    for name, tensor in original.items():
        assert torch.equal(exported[name], tensor), name


def test_fsdp2_two_workers_match_one(single, fsdp_pair):
    first, second = fsdp_pair
    assert first["rank_info"].dp_size == 2 and second["rank_info"].dp_rank == 1
    for step, (expected, got, got_other_rank) in enumerate(zip(single["metrics"], first["metrics"], second["metrics"])):
        assert got.loss == pytest.approx(expected.loss, abs=1e-5), step
        assert got.loss == got_other_rank.loss and got.grad_norm == got_other_rank.grad_norm
        assert got.grad_norm == pytest.approx(expected.grad_norm, rel=1e-4), step
        assert got.num_valid_tokens == expected.num_valid_tokens
        assert got.loss_metrics == pytest.approx(expected.loss_metrics, rel=1e-5)
    for name, grad in single["grads"].items():
        torch.testing.assert_close(first["grads"][name], grad, rtol=1e-4, atol=1e-7, msg=name)
    torch.testing.assert_close(first["logprobs_final"], single["logprobs_final"], atol=1e-4, rtol=0)
    assert not torch.allclose(first["logprobs_final"], first["logprobs_initial"], atol=1e-3)  # training moved it
    assert first["export"].keys() == single["export"].keys() and second["export"] == {}


def test_tensor_parallel_matches_single_worker(single, tp_pair):
    for result in tp_pair:
        assert result["rank_info"].tp_size == 2 and result["rank_info"].dp_size == 1
        torch.testing.assert_close(result["logprobs_initial"], single["logprobs_initial"], atol=1e-5, rtol=0)
        torch.testing.assert_close(result["topk"].values, single["topk"].values, atol=1e-5, rtol=0)
        assert torch.equal(result["topk"].indices, single["topk"].indices)
        # Every gradient, including Qwen3's q_norm / k_norm that only see their rank's heads.
        for name, grad in single["grads"].items():
            torch.testing.assert_close(result["grads"][name], grad, rtol=1e-4, atol=1e-7, msg=name)
        assert result["metrics"][0].loss == pytest.approx(single["metrics"][0].loss, abs=1e-5)
        assert result["metrics"][0].grad_norm == pytest.approx(single["metrics"][0].grad_norm, rel=1e-5)
        torch.testing.assert_close(result["logprobs_after_one_step"], single["logprobs_after_one_step"], atol=1e-4, rtol=0)


def test_frozen_teacher_and_activation_checkpointing(tiny_model_dir, batch, single):
    (result,) = run_ranks(teacher_and_checkpointed_student, 1, tiny_model_dir, batch, K)
    assert result["trainable"] == [] and result["optimizer"] is None
    torch.testing.assert_close(result["logprobs"], single["logprobs_initial"], atol=1e-6, rtol=0)
    torch.testing.assert_close(result["topk"].values, single["topk"].values * TEMPERATURE, atol=1e-5, rtol=0)  # k at T=1
    for name, grad in single["grads"].items():  # recomputing activations changes no gradient
        torch.testing.assert_close(result["checkpointed_grads"][name], grad, rtol=1e-5, atol=1e-8, msg=name)


def test_configuration_errors_come_before_any_process_group():
    from nemo_distill.models.policy.config import DTensorConfig, PolicyConfig, TeacherConfig
    from nemo_distill.models.policy.worker import PolicyWorker

    with pytest.raises(TypeError, match="needs a PolicyConfig"):
        PolicyWorker(TeacherConfig(), trainable=True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="context_parallel_size=2 needs CUDA"):
            PolicyWorker(PolicyConfig(dtensor_cfg=DTensorConfig(context_parallel_size=2)))
