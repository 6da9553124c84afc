"""GPU variants of the worker equivalence tests (NCCL): FSDP2 over 2 GPUs, tensor parallel 2 and context
parallel 2 against one GPU, in fp32 (tight) and bf16 (loose). Run on a 2-GPU machine with
``pytest -m gpu tests/unit/models/policy/test_worker_gpu.py``. The model is built here from a config
(no tokenizer needed), so the file also runs where the embedded SmolLM2 package is absent."""

from __future__ import annotations

import pytest
import torch

from policy_spawn import make_batch, run_ranks
from worker_scenarios import train_and_score

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs"),
]

VOCAB = 4096
RUN = dict(steps=3, k=5, temperature=1.0)


@pytest.fixture(scope="module")
def gpu_model_dir(tmp_path_factory) -> str:
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, max_position_embeddings=512, tie_word_embeddings=False)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gpu_tiny_qwen3")
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def batch():
    return make_batch(batch_size=4, seq_len=13, seed=0, vocab_size=VOCAB)  # 13: CP pads to 16


def _run(model_dir, batch, world_size, **kwargs):
    return run_ranks(train_and_score, world_size, model_dir, batch, **RUN, **kwargs)


@pytest.fixture(scope="module")
def single_fp32(gpu_model_dir, batch):
    return _run(gpu_model_dir, batch, 1, tp=1, micro_batch_size=2, precision="float32")[0]


def _assert_equivalent(single, result, *, atol=1e-4, grad_rtol=1e-3):
    torch.testing.assert_close(result["logprobs_initial"], single["logprobs_initial"], atol=atol, rtol=0)
    torch.testing.assert_close(result["topk"].values, single["topk"].values, atol=atol, rtol=0)
    for name, grad in single["grads"].items():
        torch.testing.assert_close(result["grads"][name], grad, rtol=grad_rtol, atol=1e-6, msg=name)
    for expected, got in zip(single["metrics"], result["metrics"]):
        assert got.loss == pytest.approx(expected.loss, abs=atol)
        assert got.grad_norm == pytest.approx(expected.grad_norm, rel=grad_rtol)
    torch.testing.assert_close(result["logprobs_final"], single["logprobs_final"], atol=10 * atol, rtol=0)


def test_fsdp2_two_gpus_match_one(gpu_model_dir, batch, single_fp32):
    for result in _run(gpu_model_dir, batch, 2, tp=1, micro_batch_size=1, precision="float32"):
        assert result["rank_info"].device.startswith("cuda")
        _assert_equivalent(single_fp32, result)


def test_tensor_parallel_two_gpus_matches_one(gpu_model_dir, batch, single_fp32):
    for result in _run(gpu_model_dir, batch, 2, tp=2, micro_batch_size=2, precision="float32"):
        _assert_equivalent(single_fp32, result)
        assert torch.equal(result["topk"].indices, single_fp32["topk"].indices)


def test_context_parallel_two_gpus_matches_one(gpu_model_dir, batch, single_fp32):
    for result in _run(gpu_model_dir, batch, 2, tp=1, cp=2, micro_batch_size=2, precision="float32"):
        assert result["rank_info"].cp_size == 2 and result["rank_info"].dp_size == 1
        _assert_equivalent(single_fp32, result)


def test_bf16_fsdp2_and_tensor_parallel_stay_close(gpu_model_dir, batch):
    (single,) = _run(gpu_model_dir, batch, 1, tp=1, micro_batch_size=2, precision="bfloat16")
    for layout in (dict(tp=1, micro_batch_size=1), dict(tp=2, micro_batch_size=2)):
        for result in _run(gpu_model_dir, batch, 2, precision="bfloat16", **layout):
            torch.testing.assert_close(result["logprobs_initial"], single["logprobs_initial"], atol=5e-2, rtol=0)
            for expected, got in zip(single["metrics"], result["metrics"]):
                assert got.loss == pytest.approx(expected.loss, rel=2e-2)


def test_offload_between_steps_and_checkpoint_round_trip(gpu_model_dir, batch, tmp_path):
    from worker_scenarios import offload_and_checkpoint_on_gpu

    for rank, result in enumerate(run_ranks(offload_and_checkpoint_on_gpu, 2, gpu_model_dir, batch, str(tmp_path / "ckpt"))):
        # Everything this rank holds of weights and AdamW moments left the GPU (NCCL / FSDP buffers stay).
        assert result["state_bytes"] > 0
        assert result["allocated_before"] - result["allocated_offloaded"] >= 0.95 * result["state_bytes"]
        assert result["second"].loss < result["first"].loss  # training still works after onload
        torch.testing.assert_close(result["fresh_logprobs"], result["logprobs"], atol=0, rtol=0)
        assert (len(result["export_names"]) > 0) == (rank == 0)
