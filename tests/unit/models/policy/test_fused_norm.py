"""fused_rms_norm: F.rms_norm in place of HF's RMSNorm forward, against HF's and a float64 reference."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

from nemo_distill.models.policy.fused_norm import use_fused_rms_norm
from policy_spawn import assert_same_scores_gradients_losses, make_batch, run_ranks, scores_gradients_losses
from worker_scenarios import make_config


def float64_rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The formula by hand, in float64."""
    hidden, weight = hidden.double(), weight.double()
    return weight * hidden / torch.sqrt(hidden.pow(2).mean(-1, keepdim=True) + eps)


def norm_pair(dim: int, dtype: torch.dtype, seed: int = 0) -> tuple[Qwen3RMSNorm, Qwen3RMSNorm]:
    """Two identical Qwen3RMSNorm modules with a random weight, the second one switched."""
    torch.manual_seed(seed)
    hf, fused = Qwen3RMSNorm(dim, eps=1e-6), Qwen3RMSNorm(dim, eps=1e-6)
    with torch.no_grad():
        hf.weight.copy_(1 + 0.5 * torch.randn(dim))
        fused.weight.copy_(hf.weight)
    hf.to(dtype), fused.to(dtype)
    assert use_fused_rms_norm(fused) == 1
    return hf, fused


def test_float32_matches_hf_and_float64_with_gradients():
    hf, fused = norm_pair(64, torch.float32)
    hidden = (3 * torch.randn(2, 5, 64)).requires_grad_(True)
    hidden_fused = hidden.detach().clone().requires_grad_(True)
    out_hf, out_fused = hf(hidden), fused(hidden_fused)
    torch.testing.assert_close(out_fused, out_hf, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out_fused.double(), float64_rms_norm(hidden.detach(), hf.weight.detach(), 1e-6), rtol=1e-5, atol=1e-6)
    upstream = torch.randn_like(out_hf)
    (out_hf * upstream).sum().backward()
    (out_fused * upstream).sum().backward()
    torch.testing.assert_close(hidden_fused.grad, hidden.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.weight.grad, hf.weight.grad, rtol=1e-5, atol=1e-5)


def test_bfloat16_is_at_least_as_close_to_float64_as_hf():
    hf, fused = norm_pair(256, torch.bfloat16, seed=1)
    hidden = (4 * torch.randn(8, 16, 256)).to(torch.bfloat16)
    reference = float64_rms_norm(hidden, hf.weight.detach(), 1e-6)
    with torch.no_grad():
        out_hf, out_fused = hf(hidden), fused(hidden)
    assert out_fused.dtype == torch.bfloat16 and out_fused.shape == hidden.shape
    error_hf = (out_hf.double() - reference).abs().mean().item()
    error_fused = (out_fused.double() - reference).abs().mean().item()
    assert error_fused <= error_hf * 1.01
    # the two differ by about one bf16 rounding step of the output, nowhere more than two
    step = reference.abs() * 2.0**-7
    assert ((out_fused.double() - out_hf.double()).abs() <= 2 * step + 1e-6).all()


def test_mismatched_weight_dtype_falls_back_to_hf():
    hf, fused = norm_pair(32, torch.float32, seed=2)
    hidden = torch.randn(3, 32).to(torch.bfloat16)  # HF promotes to the weight's float32
    out_hf, out_fused = hf(hidden), fused(hidden)
    assert out_fused.dtype == out_hf.dtype == torch.float32
    torch.testing.assert_close(out_fused, out_hf, rtol=0, atol=0)


def test_only_standard_norms_are_switched_once(tiny_model_dir):
    from nemo_distill.models.loading import load_causal_lm

    model = load_causal_lm(tiny_model_dir, dtype=torch.float32, device="cpu")
    layers = model.config.num_hidden_layers
    expected = layers * 2 + 1 + (layers * 2 if model.config.model_type == "qwen3" else 0)  # + q_norm, k_norm

    class GemmaRMSNorm(nn.Module):  # a "1 + weight" norm: not the standard formula, so left alone
        def __init__(self):
            super().__init__()
            self.weight, self.variance_epsilon = nn.Parameter(torch.zeros(4)), 1e-6

    model.extra_norm = GemmaRMSNorm()
    before = dict(model.extra_norm.__dict__)
    assert use_fused_rms_norm(model) == expected
    assert use_fused_rms_norm(model) == expected  # again: nothing wrapped twice
    norm = model.model.norm
    assert norm.forward.__func__.__name__ == "_fused_forward" and norm._hf_forward.__func__.__name__ == "forward"
    assert "forward" not in model.extra_norm.__dict__ and model.extra_norm.__dict__.keys() == before.keys()


def score_and_train(rank: int, model_dir: str, fused: bool) -> dict:
    from nemo_distill.models.policy.worker import PolicyWorker

    worker = PolicyWorker(dataclasses.replace(make_config(model_dir, precision="float32"), fused_rms_norm=fused))
    result = scores_gradients_losses(worker, [make_batch(seq_len=12)])
    result["switched"] = sum(hasattr(module, "_hf_forward") for module in worker.model.modules())
    worker.shutdown()
    return result


@pytest.mark.slow
def test_worker_with_fused_norms_matches_hf(tiny_model_dir):
    hf = run_ranks(score_and_train, 1, tiny_model_dir, False)[0]
    fused = run_ranks(score_and_train, 1, tiny_model_dir, True)[0]
    assert hf["switched"] == 0 and fused["switched"] > 0
    assert_same_scores_gradients_losses(fused, hf)
