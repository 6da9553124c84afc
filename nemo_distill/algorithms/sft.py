"""Supervised fine-tuning on prompt -> response pairs, on the shared runtime.

One step, top to bottom::

    pairs  = next(train_loader)                    # num_prompts_per_step (prompt, response) pairs
    batch  = chat-rendered prompt + response + EOS  # loss on response tokens only
    policy.train(batch, SFTLoss)                    # -log p(response token), / the step's tokens
    log; validation loss (and greedy accuracy when sft.val_generation) every val_period; checkpoint

No generation workers while training (``sft.val_generation`` starts them for accuracy checks).
Responses come from ``data.<split>.response_key`` (a file column) or a built-in task's worked answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from nemo_distill.algorithms.loss_functions import check_row_window, window_token_logprobs
from nemo_distill.algorithms.runtime import (
    Runtime,
    build_runtime,
    finish_step,
    run_algorithm,
    train_metrics,
    train_policy,
    training_steps,
)
from nemo_distill.algorithms.runtime_config import LoopConfig, RuntimeConfig, check_runtime_config
from nemo_distill.config import ConfigError
from nemo_distill.data.batch import TokenBatch
from nemo_distill.data.collate import build_token_batch
from nemo_distill.data.processors import ProcessedPrompt
from nemo_distill.models.policy.interfaces import StepCounts
from nemo_distill.utils.progress import progress_bar

SUMMARY_LABELS = {"train/loss": "train/loss (NLL per token)", "validation/loss": "validation/loss", "validation/accuracy": "validation/accuracy"}


@dataclass
class SFTConfig(LoopConfig):
    """``sft``: the loop knobs (:class:`LoopConfig`; ``num_prompts_per_step`` pairs per step) plus SFT's own."""

    val_generation: bool = False  # also measure greedy accuracy on the validation prompts (starts generation workers)


@dataclass
class SFTMasterConfig(RuntimeConfig):
    sft: SFTConfig = field(default_factory=SFTConfig)


def check_sft_config(cfg: SFTMasterConfig) -> None:
    if cfg.sft.overlap_generation:  # before the placement check: whatever the placement, SFT has nothing to overlap
        raise ConfigError("sft.overlap_generation", "SFT samples no rollouts, so there is no generation to overlap; remove it")
    check_runtime_config(cfg, samples_per_step=cfg.sft.num_prompts_per_step, samples_key="sft.num_prompts_per_step")


@dataclass
class SFTLoss:
    """Cross-entropy on target (response) tokens, normalised by the step's global target-token count.

    ``rows`` (a window of prediction rows, :func:`~.loss_functions.check_row_window`): only the
    tokens those rows predict count; the window shares over any split add up to the whole loss.
    """

    supports_row_windows: ClassVar[bool] = True  # the worker may call it per window (policy.train_head_chunk_rows)
    logprob_chunk_size: int | None = None

    def __call__(self, logits: torch.Tensor, batch: TokenBatch, *, counts: StepCounts,
                 rows: slice | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rows = check_row_window(rows, logits, batch.seq_len)
        logprobs, tokens = window_token_logprobs(logits, batch.input_ids, rows, self.logprob_chunk_size)
        mask = batch.valid_target_tokens()[:, tokens]
        nll_sum = -(logprobs * mask).sum()
        return nll_sum / counts.tokens, {"nll_sum": nll_sum.detach(), "tokens": mask.sum()}


def response_text(prompt: ProcessedPrompt) -> str:
    """The target response of a pair (``metadata["response"]``), or an error naming the record."""
    response = prompt.record.metadata.get("response")
    if not response:
        raise ConfigError(
            "data.default.response_key",
            f"record {prompt.record.record_id} has no response to train on; set data.default.response_key to the column "
            "holding it (built-in tasks provide their worked answer)",
        )
    return response


def build_sft_batch(prompts: list[ProcessedPrompt], tokenizer, *, max_total_length: int) -> TokenBatch:
    """Prompt + response + EOS per pair, right-padded; ``loss_mask`` on the response and EOS.

    A prompt longer than ``data.max_input_seq_length`` gets sample mask 0 (as in the RL loops).
    """
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    responses = [list(tokenizer(response_text(p), add_special_tokens=False)["input_ids"]) + eos for p in prompts]
    batch, _ = build_token_batch(
        [p.prompt_token_ids for p in prompts], responses, pad_token_id=tokenizer.pad_token_id,
        sample_mask=[0.0 if p.too_long else 1.0 for p in prompts], max_total_length=max_total_length,
    )
    return batch


def setup(cfg: SFTMasterConfig, config_yaml: str) -> Runtime:
    check_sft_config(cfg)
    return build_runtime(cfg, config_yaml, loop=cfg.sft, frozen=None, with_generation=cfg.sft.val_generation)


def validation_loss(rt: Runtime, step: int) -> dict[str, float]:
    """``validation/loss``: mean NLL per response token of the validation pairs (no gradient)."""
    nll, tokens = 0.0, 0.0
    batch_size = rt.loop.val_batch_size
    for start in progress_bar(range(0, len(rt.val_prompts), batch_size), desc=f"validation loss step {step}", unit="batch"):
        batch = build_sft_batch(rt.val_prompts[start : start + batch_size], rt.tokenizer,
                                max_total_length=rt.cfg.policy.max_total_sequence_length)
        mask = batch.valid_target_tokens()
        nll -= float((rt.policy.get_logprobs(batch, targets_only=True) * mask).sum())
        tokens += float(mask.sum())
    return {"validation/loss": nll / tokens} if tokens else {}


def train(rt: Runtime) -> None:
    """Steps ``start_step .. max_steps`` (``max_num_epochs`` passes at most): the SFT body."""
    cfg, timer = rt.cfg, rt.timer
    loss_fn = SFTLoss(logprob_chunk_size=cfg.policy.logprob_chunk_size)
    for step in training_steps(rt, desc="sft"):
        with timer.time("total_step_time"):
            pairs = next(rt.train_loader)
            batch = build_sft_batch(pairs, rt.tokenizer, max_total_length=cfg.policy.max_total_sequence_length)
            with timer.time("policy_training"):
                result = train_policy(rt, batch, loss_fn)
        rows = [{"problem": p.record.problem, "response": response_text(p)} for p in pairs]
        metrics: dict[str, Any] = {**train_metrics(rt, result), "train/epoch": rt.train_loader.state_dict().get("epoch", 0)}
        finish_step(rt, step, metrics, rows, validate_fn=validation_loss)


def run_sft(cfg: SFTMasterConfig, config_yaml: str) -> dict[str, Any]:
    """setup -> train -> cleanup; returns the summary."""
    return run_algorithm(lambda: setup(cfg, config_yaml), train, title="sft", summary_labels=SUMMARY_LABELS)
