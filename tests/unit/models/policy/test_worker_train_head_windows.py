"""PolicyWorker training with ``policy.train_head_chunk_rows`` (the output embedding a window of
prediction rows at a time, each window's loss under activation checkpointing) equals training on
full logits: loss, grad norm, loss metrics and updated weights, for the SFT, GRPO and top-k
distillation losses; one CPU rank, gloo, FSDP2, fp32, no Ray. So does the default path without
windows, which skips the prompt's rows through HF's ``logits_to_keep`` (the reference here turns that
off: ``worker.keeps_logit_rows = False``). Windows, too, start at the first target row.

Two workers: a full fine-tune of a tiny Qwen3 with TIED embeddings (the head's weight is also the
input embedding), and a LoRA student (peft wrapper) with activation checkpointing. The head never
sees more than the window's rows (besides the model's own 1-row call), and a loss without
``supports_row_windows`` falls back to full logits.

Each case starts from ``worker.reset()`` right after a ``get_logprobs`` forward: this test also
caught ``reset()`` building its AdamW over FSDP2's gathered root parameters (the root unit stays
unsharded after a forward), which left the embeddings and final norm untrained.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from nemo_distill.data.batch import TokenBatch
from policy_spawn import MaskedNLLLoss, full_parameters, make_batch, run_ranks
from worker_scenarios import make_config

# The batch has 12 rows: windows of 5 leave a short last one, 64 is one window. (Windows of 1 and 3
# are in tests/unit/algorithms/test_loss_row_windows.py; here each step costs ~2 s of a shared CPU.)
WINDOWS = {"full": (5, 64), "lora": (5,)}
K = 4


def _tied_model(model_dir: str, out_dir: Path) -> str:
    """A copy of the tiny model whose lm_head IS embed_tokens (SmolLM2 / Qwen3-0.6B tie them)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    shutil.copytree(model_dir, out_dir)
    config = AutoConfig.from_pretrained(model_dir)
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    model.save_pretrained(out_dir, safe_serialization=True)
    return str(out_dir)


def _with_extras(batch: TokenBatch, extras: dict) -> TokenBatch:
    return TokenBatch(input_ids=batch.input_ids, attention_mask=batch.attention_mask, loss_mask=batch.loss_mask,
                      sample_mask=batch.sample_mask, extras=extras)


def _loss_cases(worker, batch: TokenBatch) -> dict:
    """(loss, batch) per algorithm; the GRPO extras come from this worker's own log-probs plus noise."""
    from nemo_distill.algorithms.distillation_loss import TEACHER_TOPK_INDICES, TEACHER_TOPK_LOGITS, TopkDistillationLoss
    from nemo_distill.algorithms.grpo_loss import (
        ADVANTAGES,
        KL_GATES,
        OLD_LOGPROBS,
        REFERENCE_LOGPROBS,
        TOKEN_ADVANTAGE_TERMS,
        GRPOLoss,
    )
    from nemo_distill.algorithms.sft import SFTLoss

    generator = torch.Generator().manual_seed(7)
    size, seq_len = batch.input_ids.shape
    current = worker.get_logprobs(batch)
    grpo_extras = {
        ADVANTAGES: torch.randn(size, generator=generator),
        OLD_LOGPROBS: current + 0.05 * torch.randn(size, seq_len, generator=generator),
        REFERENCE_LOGPROBS: current + 0.1 * torch.randn(size, seq_len, generator=generator),
        TOKEN_ADVANTAGE_TERMS: 0.2 * torch.randn(size, seq_len, generator=generator),
        KL_GATES: torch.tensor([1.0, 0.5, 1.0, 0.0]),
    }
    vocab = int(worker.model.config.vocab_size)
    teacher = torch.topk(torch.randn(size, seq_len, vocab, generator=generator) * 3, K, dim=-1)
    return {
        "sft": (SFTLoss(logprob_chunk_size=5), batch),
        "grpo": (GRPOLoss(loss_type="grpo", beta=0.1, temperature=0.8, token_student_tau=0.3, logprob_chunk_size=5),
                 _with_extras(batch, grpo_extras)),
        "distill": (TopkDistillationLoss(kl_type="mixed", mixed_kl_weight=0.3, temperature=0.8),
                    _with_extras(batch, {TEACHER_TOPK_LOGITS: teacher.values, TEACHER_TOPK_INDICES: teacher.indices})),
        "unsupported": (MaskedNLLLoss(), batch),
    }


def train_both_ways(rank: int, tied_dir: str, untied_dir: str, batch: TokenBatch) -> dict:
    from nemo_distill.models.policy.worker import PolicyWorker

    full_cfg = make_config(tied_dir, precision="float32", lr=1.0)
    lora_cfg = make_config(untied_dir, precision="float32", lr=1.0, lora=True)
    lora_cfg.dtensor_cfg.activation_checkpointing = True
    for cfg in (full_cfg, lora_cfg):
        # AdamW's first step is lr * g / (|g| + eps): with the usual eps = 1e-8 that is lr * sign(g), which
        # turns fp32 round-off in near-zero gradient entries into +-lr. eps = 1 (and lr = 1) makes the
        # update ~g itself, so comparing the updated weights at 1e-6 compares the gradients.
        cfg.optimizer.eps = 1.0
    result = {}
    for role, cfg in (("full", full_cfg), ("lora", lora_cfg)):
        worker = PolicyWorker(cfg)
        assert worker.cfg.dtensor_cfg.enabled and worker.lora_enabled == (role == "lora")
        head_rows: list[int] = []
        worker.model.get_output_embeddings().register_forward_hook(lambda m, args, out: head_rows.append(args[0].shape[1]))
        keeps_logit_rows = worker.keeps_logit_rows
        assert keeps_logit_rows  # Qwen3 (and through peft) takes logits_to_keep
        for name, (loss_fn, loss_batch) in _loss_cases(worker, batch).items():
            for window in ("full logits", 0, *WINDOWS[role]):
                if name == "unsupported" and role == "lora":
                    continue
                worker.reset()
                worker.keeps_logit_rows = keeps_logit_rows and window != "full logits"
                worker.cfg.train_head_chunk_rows = 0 if window == "full logits" else window
                head_rows.clear()
                metrics = worker.train(loss_batch, loss_fn)
                trained = {key: value for key, value in full_parameters(worker.model).items()
                           if key in worker._initial_trainable_state}
                result[(role, name, window)] = (metrics, trained, max(head_rows), worker.chunked_head)
    return result


def test_windowed_output_layer_trains_like_full_logits(tiny_model_dir, tmp_path):
    tied_dir = _tied_model(tiny_model_dir, tmp_path / "tied")
    batch = make_batch(batch_size=4, seq_len=12, seed=5)  # 2 micro-batches of 2, padding, a dropped sample
    result = run_ranks(train_both_ways, 1, tied_dir, tiny_model_dir, batch)[0]
    for role in ("full", "lora"):
        for name in ("sft", "grpo", "distill", "unsupported")[: 4 if role == "full" else 3]:
            reference, ref_params, ref_rows, _ = result[(role, name, "full logits")]
            assert ref_rows == 12  # the head saw the whole micro-batch
            assert reference.grad_norm > 0 and not reference.skipped
            for window in (0, *WINDOWS[role]):
                metrics, params, rows, chunked = result[(role, name, window)]
                case = (role, name, window)
                assert chunked, case  # the self-check passed
                # The batch's 3 prompt tokens leave 12 - 2 prediction rows with targets. Window 0: the head
                # sees them at once (logits_to_keep); windows: one window per head call (in forward and
                # in the backward's recompute), plus the model's own last row; a loss without
                # supports_row_windows keeps full logits.
                assert rows == (12 if name == "unsupported" else min(window or 10, 10)), case
                assert abs(metrics.loss - reference.loss) <= 1e-6 * max(1.0, abs(reference.loss)), case
                assert abs(metrics.grad_norm - reference.grad_norm) <= 1e-6 * max(1.0, reference.grad_norm), case
                assert metrics.loss_metrics.keys() == reference.loss_metrics.keys(), case
                for key, value in reference.loss_metrics.items():
                    # sums of ~20 fp32 per-token terms (e.g. log-ratios that cancel): 1e-6 per term
                    assert abs(metrics.loss_metrics[key] - value) <= 2e-5 * max(1.0, abs(value)), (case, key)
                assert params.keys() == ref_params.keys() and params, case
                for key, value in ref_params.items():
                    torch.testing.assert_close(params[key], value, rtol=1e-6, atol=1e-6, msg=lambda m: f"{case} {key}: {m}")


def test_knob_bounds_and_when_it_applies(caplog):
    """``train_head_chunk_rows`` >= 0 (ConfigError names the key); it applies only with tp = cp = 1, a model
    that passed the self-check and a loss with ``supports_row_windows``; each reason is logged once."""
    from types import SimpleNamespace

    import pytest

    from nemo_distill.algorithms.sft import SFTLoss
    from nemo_distill.config.errors import ConfigError
    from nemo_distill.config.schema import build_dataclass
    from nemo_distill.models.policy.config import PolicyConfig
    from nemo_distill.models.policy.worker import PolicyWorker

    assert PolicyConfig().train_head_chunk_rows == 0
    with pytest.raises(ConfigError, match="policy.train_head_chunk_rows"):
        build_dataclass(PolicyConfig, {"train_head_chunk_rows": -1}, "policy")

    def window_rows(loss_fn, *, tp=1, cp=1, chunked=True, rows=8, logged=None):
        fake = SimpleNamespace(cfg=SimpleNamespace(train_head_chunk_rows=rows), layout=SimpleNamespace(tp_size=tp, cp_size=cp),
                               chunked_head=chunked, _full_logits_reasons_logged=set() if logged is None else logged)
        return PolicyWorker._train_head_window_rows(fake, loss_fn)

    assert window_rows(SFTLoss()) == 8
    assert window_rows(SFTLoss(), rows=0) == 0
    assert window_rows(MaskedNLLLoss()) == 0
    assert window_rows(SFTLoss(), chunked=False) == 0
    logged: set[str] = set()
    with caplog.at_level("WARNING"):
        assert window_rows(SFTLoss(), tp=2, logged=logged) == 0
        assert window_rows(SFTLoss(), tp=2, logged=logged) == 0
    messages = [record.getMessage() for record in caplog.records if "tp=2" in record.getMessage()]
    assert len(messages) == 1 and "train_head_chunk_rows=8 ignored" in messages[0]
