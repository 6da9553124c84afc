"""PolicyWorker: one rank of a student (trainable) or teacher (frozen) model.

A plain class: it runs in any process whose environment has ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` (``RayWorkerGroup`` sets them; tests use
``torch.multiprocessing``). Ranks form a (dp, cp, tp) mesh (:mod:`.parallel`); every public method
is a collective, so all ranks of the group call it together (``PolicyWorkerGroup`` does).

Set-up order matters: load the HF model -> LoRA (peft wraps plain modules) -> activation
checkpointing -> tensor parallel (needs plain ``nn.Linear``) -> FSDP2 (wraps the TP DTensors into
2-D ones; none for a frozen model on one FSDP2 rank, ``dtensor_cfg.fsdp_units``) -> optimizer over the
sharded parameters.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule

from nemo_distill.data.batch import TokenBatch
from nemo_distill.models.loading import load_causal_lm, resolve_dtype
from nemo_distill.models.policy import checkpointing, context_parallel
from nemo_distill.models.policy.collectives import all_reduce_sum, all_reduce_sum_dict
from nemo_distill.models.policy.config import OptimizerConfig, PolicyConfig, SchedulerConfig, TeacherConfig
from nemo_distill.models.policy.compilation import compile_decoder_layers
from nemo_distill.models.policy.fused_norm import use_fused_rms_norm
from nemo_distill.models.policy.device_memory import DeviceMemoryMixin, HostRows
from nemo_distill.models.policy.optimizer import build_adamw
from nemo_distill.models.policy.grad_norm import clip_grad_norm
from nemo_distill.models.policy.head_scoring import (ChunkedHeadUnsupported, accepts_logits_to_keep, score_with_chunked_head,
                                                     score_with_shared_prefix, train_loss_with_chunked_head)
from nemo_distill.models.policy.interfaces import LossFunction, RankInfo, StepCounts, TopkLogits, TrainMetrics
from nemo_distill.models.policy.logprobs import head_token_logprobs, head_topk, token_logprobs
from nemo_distill.models.policy.lora import apply_lora, lora_scale
from nemo_distill.models.policy.lr_schedule import lr_multiplier
from nemo_distill.models.policy.micro_batches import PlannedMicroBatch, plan_micro_batches, share_prefixes_on_every_rank
from nemo_distill.models.policy.parallel import (apply_fsdp2, apply_tensor_parallel, build_mesh, resolve_fsdp_units,
                                                 sum_head_local_grads)
from nemo_distill.models.policy.vocab_parallel import chunked_topk_over_vocab_shards, gather_vocab_shards
from nemo_distill.models.policy.weight_export import WeightExportMixin
from nemo_distill.utils.cpu_threads import configure_cpu_threads

log = logging.getLogger(__name__)


def _pick_device() -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    # Under Ray each actor sees only its own GPU(s); under torchrun LOCAL_RANK picks one of the node's.
    index = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


class PolicyWorker(DeviceMemoryMixin, WeightExportMixin):
    """One rank of a policy; ``trainable=False`` makes a frozen teacher (no optimizer, eval mode, no grads).

    Args:
        cfg: the ``policy`` (trainable) or ``teacher`` section.
        model_name: overrides ``cfg.model_name`` (e.g. a context-distillation teacher = the student's name).
        trainable: build optimizer and scheduler; needs a :class:`PolicyConfig`.
        init_checkpoint: a policy checkpoint folder (see :mod:`.checkpointing`) restored at the end of set-up.
        total_steps: cosine-schedule horizon when ``cfg.scheduler.total_steps`` is None.
    """

    def __init__(self, cfg: PolicyConfig | TeacherConfig, *, model_name: str | None = None, trainable: bool = True,
                 init_checkpoint: str | None = None, total_steps: int | None = None):
        if trainable and not isinstance(cfg, PolicyConfig):
            raise TypeError(f"a trainable PolicyWorker needs a PolicyConfig (optimizer, scheduler), got {type(cfg).__name__}")
        self.cfg = cfg
        self.trainable = trainable
        self.model_name = model_name or cfg.model_name
        self.device = _pick_device()
        if self.device.type == "cpu":  # Ray gives a fractional-CPU actor 1 thread; the roles take turns
            configure_cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))))
        dtensor = cfg.dtensor_cfg
        if dtensor.context_parallel_size > 1 and self.device.type != "cuda":
            raise ValueError(
                f"dtensor_cfg.context_parallel_size={dtensor.context_parallel_size} needs CUDA GPUs: torch's ring "
                "attention has no CPU implementation; use context_parallel_size=1 on CPU"
            )
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        self.layout = build_mesh(self.device.type, dist.get_world_size(), tp_size=dtensor.tensor_parallel_size,
                                 cp_size=dtensor.context_parallel_size)
        fsdp_ranks = self.layout.dp_size * self.layout.cp_size
        if not dtensor.enabled and trainable and fsdp_ranks > 1:
            raise ValueError(
                f"dtensor_cfg.enabled=false gives every rank a full unsynchronised copy, but this trainable policy has "
                f"{fsdp_ranks} data/context-parallel ranks; set dtensor_cfg.enabled=true or use one worker per TP group"
            )

        self.compute_dtype = resolve_dtype(cfg.precision, self.device)
        # A trainable model keeps fp32 master weights and lets FSDP2 cast to bf16 for compute; a frozen
        # one is simply loaded in the compute dtype.
        load_dtype = torch.float32 if trainable else self.compute_dtype
        model = load_causal_lm(self.model_name, dtype=load_dtype, device="cpu")
        self.lora_enabled = trainable and cfg.lora.enabled
        self.lora_scale = lora_scale(cfg.lora) if self.lora_enabled else None
        if self.layout.cp_size > 1:
            context_parallel.use_causal_sdpa_without_mask(model)
        if self.lora_enabled:
            model = apply_lora(model, cfg.lora)
        if dtensor.activation_checkpointing and trainable:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not trainable:
            model.requires_grad_(False)
        if cfg.fused_rms_norm:
            use_fused_rms_norm(model)
        if cfg.compile_decoder_layers:
            compile_decoder_layers(model)
        self.vocab_sharded, self.head_local_modules = False, []
        if self.layout.tp_size > 1:
            tp_result = apply_tensor_parallel(model, self.layout.mesh["tp"])
            self.vocab_sharded, self.head_local_modules = tp_result.vocab_sharded, tp_result.head_local_modules
        if not dtensor.cpu_offload:
            model.to(self.device)
        fsdp_units = resolve_fsdp_units(dtensor.fsdp_units, trainable=trainable, fsdp_ranks=fsdp_ranks,
                                        cpu_offload=dtensor.cpu_offload,
                                        activation_checkpointing=dtensor.activation_checkpointing)
        # FSDP2 never reshards its root unit after a forward, and only backward does: with the whole model
        # as that unit, scoring would leave a full compute-dtype copy on the device until the next step.
        self.reshard_after_scoring = dtensor.enabled and fsdp_units == "model"
        if dtensor.enabled and fsdp_units != "none":
            mixed = trainable and self.compute_dtype == torch.bfloat16
            apply_fsdp2(model, self.layout.fsdp_mesh, mixed_precision=mixed, cpu_offload=dtensor.cpu_offload, units=fsdp_units)
        elif self.compute_dtype != load_dtype:
            model.to(self.compute_dtype)  # no FSDP2 to cast for compute: train in the compute dtype directly
        self.model = model
        self.model.train(trainable)
        # FSDP2 AVERAGES gradients over its mesh, but each micro-batch loss is already a share of the
        # GLOBAL per-token mean (divided by the token count of all dp ranks), so the right gradient
        # is the SUM over dp ranks; cp ranks hold disjoint sequence chunks, whose contributions also
        # add up. Scaling the loss by the FSDP mesh size turns the average into that sum, and works
        # with every backend (a custom divide factor needs NCCL's PreMulSum, which gloo lacks).
        self.grad_sum_scale = float(fsdp_ranks) if dtensor.enabled else 1.0

        self.optimizer = self.scheduler = None
        if trainable:
            self._build_optimizer(cfg.optimizer, cfg.scheduler, total_steps)
        self.offload_events: list[str] = []  # call order of offload/onload, checked by tests
        # Scoring applies the output embedding chunk by chunk (no [B, T, V] logits) unless the model
        # failed head_scoring's self-check; TP (vocab-sharded head) and CP always use full logits.
        self.chunked_head = self.layout.tp_size == 1 and self.layout.cp_size == 1
        self.head_verified = False  # head_scoring's self-check passed once: later forwards skip it (it waits for the device)
        # ... and runs a prefix all rows share once (head_scoring.score_with_shared_prefix), except with
        # compiled layers (traced without a KV cache) or after a model returned no usable cache.
        self.share_prefix = not cfg.compile_decoder_layers
        # Training without row windows still skips the prompt rows' output layer via HF's logits_to_keep.
        self.keeps_logit_rows = accepts_logits_to_keep(self.model)
        self._full_logits_reasons_logged: set[str] = set()  # why training used full logits despite train_head_chunk_rows
        self._transfer_buffer: torch.Tensor | None = None  # packed refit bucket (GPU transports), reused
        self._transfer_group = None  # rank 0's process group with the generation workers (broadcast refit)
        if init_checkpoint is not None:
            self.load_checkpoint(init_checkpoint)
        # What reset() restores: the trainable parameters as this rank holds them now (see reset).
        self._initial_trainable_state = self._snapshot_trainable_state() if trainable else None

    # ------------------------------------------------------------------ forward helpers
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [param for param in self.model.parameters() if param.requires_grad]

    def _forward_local_logits(self, planned: PlannedMicroBatch) -> torch.Tensor:
        """``[b, t, V or V/tp]`` logits over the micro-batch's full sequence; vocab-sharded when ``self.vocab_sharded``."""
        if self.layout.cp_size == 1:
            output = self.model(input_ids=planned.batch.input_ids, attention_mask=planned.model_attention_mask, use_cache=False)
            return output.logits
        return self._forward_context_parallel(planned.batch)

    def _forward_context_parallel(self, batch: TokenBatch) -> torch.Tensor:
        """CP forward: pad to 2*cp chunks, shard in place under ring attention, gather the logits back.

        No attention mask: with right padding, causal attention already keeps real tokens from seeing
        the padding after them, and torch's CP attention only supports plain causal masking.
        """
        from torch.distributed.tensor.experimental import context_parallel as ring_attention_context

        seq_len = batch.seq_len
        cp = self.layout.cp_size
        input_ids = context_parallel.pad_sequence_dim(batch.input_ids, cp, chunk_multiple=context_parallel.RING_CHUNK_MULTIPLE).clone()
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids).clone()
        buffers = [input_ids, position_ids]
        with ring_attention_context(self.layout.mesh["cp"], buffers=buffers, buffer_seq_dims=[1, 1], no_restore_buffers=set(buffers)):
            local = self.model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
        full = context_parallel.gather_load_balanced(local, self.layout.cp_group, dim=1)
        return full[:, :seq_len]

    def _score_with_chunked_head(self, planned: PlannedMicroBatch, score, *, targets_only: bool = False):
        """``score(hidden [b, t, H], head, input_ids [b, t])`` (column-local: :mod:`.head_scoring`) from the
        forward, or None when this worker must use full logits (TP/CP, or logits that are not ``head(hidden)``).
        ``targets_only``: the columns before ``planned.first_target_row`` may come back as zeros
        (``first_row`` of ``score_with_chunked_head`` and ``score_with_shared_prefix``)."""
        if not self.chunked_head:
            return None
        batch = planned.batch
        # A prefix of at least logprob_shared_prefix_min_tokens that every row shares runs once (the ranks'
        # plans agreed on it: _scoring_micro_batches).
        prefix_len = planned.shared_prefix_len if self.share_prefix else 0
        first_row = planned.first_target_row if targets_only else 0
        if prefix_len:
            try:
                return self._checking_head_once(score_with_shared_prefix, self.model, batch.input_ids, batch.attention_mask,
                                                prefix_len, score, first_row=first_row)
            except ChunkedHeadUnsupported as error:
                log.warning("scoring without a shared prefix from now on: %s", error)
                self.share_prefix = False
        try:
            return self._checking_head_once(
                score_with_chunked_head, self.model, batch.input_ids, planned.model_attention_mask, first_row=first_row,
                score=lambda hidden, head: score(hidden, head, batch.input_ids[:, first_row:]))
        except ChunkedHeadUnsupported as error:
            log.warning("scoring with full [B, T, V] logits from now on: %s", error)
            self.chunked_head = False
            return None

    def _checking_head_once(self, head_scorer, *args, **kwargs):
        """``head_scorer(*args, **kwargs)`` (a :mod:`.head_scoring` function) with its self-check on until the
        model has passed it once: the check waits for the device, and the answer cannot change."""
        result = head_scorer(*args, verify_head=not self.head_verified, **kwargs)
        self.head_verified = True
        return result

    def _forward_logits(self, planned: PlannedMicroBatch) -> torch.Tensor:
        """``[b, t, V]`` logits over the full vocabulary, identical on every rank of a tp/cp group."""
        logits = self._forward_local_logits(planned)
        if self.vocab_sharded:
            logits = gather_vocab_shards(logits, self.layout.tp_group)
        return logits

    # ------------------------------------------------------------------ training
    def train(self, batch: TokenBatch, loss_fn: LossFunction) -> TrainMetrics:
        """One optimizer step over this rank's shard, in micro-batches of ``train_micro_batch_size`` with
        gradient accumulation. Ranks of one dp group (different tp/cp coordinates) get the same shard.

        A non-finite loss or gradient norm skips the step: gradients are dropped, weights, optimizer
        and scheduler stay as they were, and ``TrainMetrics.skipped`` is set (every rank decides
        alike: the loss and the norm are global).
        """
        if not self.trainable:
            raise RuntimeError("train() called on a frozen (trainable=False) worker")
        started = time.perf_counter()
        batch = batch.to("cpu")  # planned on the host (micro_batches.py); a batch from Ray is already there
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, metric_sums, counts = self._accumulate_gradients(batch, loss_fn)
        dp_group = self.layout.dp_group
        total_loss = all_reduce_sum(loss_sum, dp_group, self.device)
        grad_norm = clip_grad_norm(self.trainable_parameters(), self.cfg.max_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        skipped = not (math.isfinite(total_loss) and math.isfinite(grad_norm))
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.step()
            self.scheduler.step()
        loss_metrics = all_reduce_sum_dict(metric_sums, dp_group, self.device)
        tokens = all_reduce_sum(float(batch.attention_mask.sum()), dp_group, self.device)
        return TrainMetrics(loss=total_loss, grad_norm=grad_norm, lr=lr, num_valid_tokens=counts.tokens, loss_metrics=loss_metrics,
                            tokens_per_sec=tokens / max(time.perf_counter() - started, 1e-9), num_sequences=counts.sequences,
                            skipped=skipped)

    def _step_counts(self, batch: TokenBatch) -> StepCounts:
        """The step's global :class:`StepCounts` (one all-reduce over the dp group)."""
        targets = batch.valid_target_tokens()[:, 1:]
        micro = self.cfg.train_micro_batch_size
        local = torch.tensor([float(targets.sum()), float((targets.sum(dim=1) > 0).sum()), float(-(-batch.size // micro))],
                             dtype=torch.float64, device=self.device)
        dist.all_reduce(local, group=self.layout.dp_group)
        tokens, sequences, micro_batches = local.tolist()
        # At least 1: an all-masked step then has loss 0 instead of 0/0.
        return StepCounts(tokens=max(tokens, 1.0), sequences=max(sequences, 1.0), micro_batches=max(int(micro_batches), 1))

    def _accumulate_gradients(self, batch: TokenBatch, loss_fn: LossFunction) -> tuple[float, dict[str, float], StepCounts]:
        """Forward/backward every micro-batch of ``batch`` (on the host) into ``.grad``.

        Returns this rank's summed loss, summed loss metrics, and the step's global counts.
        """
        counts = self._step_counts(batch)
        self.model.train()
        # Sums stay on the device until every micro-batch is queued, and the micro-batches are planned
        # on the host: a float() or an .item() per micro-batch would stop the host until the device
        # caught up, and a launch-bound step needs the host ahead.
        loss_sum, metric_sums = torch.zeros((), dtype=torch.float64, device=self.device), {}
        for planned in plan_micro_batches(batch, self.cfg.train_micro_batch_size, self.device):
            loss, metrics = self._micro_batch_loss(planned, loss_fn, counts)
            # A micro-batch without targets still runs forward/backward (its loss is 0): skipping it
            # would leave this rank out of FSDP's all-gathers / reduce-scatters and hang the others.
            (loss * self.grad_sum_scale).backward()
            loss_sum += loss.detach()
            for name, value in metrics.items():  # tensors in float64, as the float sums were (exact token counts)
                value = value.detach().double() if isinstance(value, torch.Tensor) else value
                metric_sums[name] = metric_sums.get(name, 0.0) + value
        sum_head_local_grads(self.head_local_modules, self.layout.tp_group)
        return float(loss_sum), {name: float(value) for name, value in metric_sums.items()}, counts

    def _micro_batch_loss(self, planned: PlannedMicroBatch, loss_fn: LossFunction, counts: StepCounts) -> tuple[torch.Tensor, dict]:
        """The micro-batch's loss share and metric sums, from one forward (with autograd).

        With ``train_head_chunk_rows`` (and a loss that supports row windows, tp = cp = 1, a model
        that passed head_scoring's self-check) the loss is the sum of its window shares,
        :func:`~.head_scoring.train_loss_with_chunked_head`: no ``[b, T, V]`` logits exist, in the
        forward or the backward. Otherwise ``loss_fn`` gets the logits of rows ``first_target_row() ..
        T - 1`` (HF's ``logits_to_keep``, for such a loss and model) or the full logits.
        """
        micro = planned.batch
        window_rows = self._train_head_window_rows(loss_fn)
        # Rows before the first target token (the prompt's) feed no loss: the output layer skips them.
        first_row = planned.first_target_row if self._loss_reads_row_windows(loss_fn) else 0
        if window_rows:
            try:
                return self._checking_head_once(
                    train_loss_with_chunked_head, self.model, micro.input_ids, planned.model_attention_mask, window_rows,
                    lambda logits, rows: loss_fn(logits, micro, counts=counts, rows=rows), first_row=first_row)
            except ChunkedHeadUnsupported as error:
                log.warning("training and scoring with full [B, T, V] logits from now on: %s", error)
                self.chunked_head = False
        if first_row and self.keeps_logit_rows:
            logits = self.model(input_ids=micro.input_ids, attention_mask=planned.model_attention_mask, use_cache=False,
                                logits_to_keep=micro.seq_len - first_row).logits
            loss, metrics = loss_fn(logits, micro, counts=counts, rows=slice(first_row, micro.seq_len))
        else:
            logits = self._forward_logits(planned)
            loss, metrics = loss_fn(logits, micro, counts=counts)
        # A micro-batch of one token has no prediction rows, and a loss built only from them (SFT,
        # GRPO) then does not depend on the logits: tie it to them through a zero-size slice (adds
        # exactly 0) so backward still runs through the model, as FSDP's collectives need on every rank.
        return loss + logits[:, :0].sum(), metrics

    def _loss_reads_row_windows(self, loss_fn: LossFunction) -> bool:
        """Whether ``loss_fn`` may get a window of logit rows: it declares ``supports_row_windows`` and
        this worker's logits are whole-vocabulary and whole-sequence (tp = cp = 1)."""
        return bool(getattr(loss_fn, "supports_row_windows", False)) and not self.vocab_sharded and self.layout.cp_size == 1

    def _train_head_window_rows(self, loss_fn: LossFunction) -> int:
        """``train_head_chunk_rows`` when the windowed output layer can be used for ``loss_fn``, else 0
        (the reason is logged once). ``models/`` never imports ``algorithms/``: a loss opts in with a
        ``supports_row_windows = True`` class attribute and a ``rows=`` keyword."""
        rows = getattr(self.cfg, "train_head_chunk_rows", 0)
        if not rows:
            return 0
        if self.layout.tp_size > 1 or self.layout.cp_size > 1:
            reason = (f"tensor/context parallel (tp={self.layout.tp_size}, cp={self.layout.cp_size}) gathers full "
                      "logits; train_head_chunk_rows needs tp = cp = 1")
        elif not self.chunked_head:
            reason = "the model failed head_scoring's self-check (its logits are not output_embedding(hidden))"
        elif not getattr(loss_fn, "supports_row_windows", False):
            reason = f"{type(loss_fn).__name__} does not declare supports_row_windows = True"
        else:
            return rows
        if reason not in self._full_logits_reasons_logged:
            self._full_logits_reasons_logged.add(reason)
            log.warning("policy.train_head_chunk_rows=%d ignored, training with full [B, T, V] logits: %s", rows, reason)
        return 0

    # ------------------------------------------------------------------ scoring
    def _scoring_micro_batches(self, batch: TokenBatch) -> list[PlannedMicroBatch]:
        """``logprob_batch_size`` micro-batches planned on the host, shared prefixes measured when they may be used.

        FSDP2 ranks all-gather each layer in every forward, so for each micro-batch they all take the
        two-forward shared-prefix path or none does: one vote over every plan, before the loop.
        """
        min_tokens = self.cfg.logprob_shared_prefix_min_tokens if self.chunked_head and self.share_prefix else 0
        plans = plan_micro_batches(batch, self.cfg.logprob_batch_size, self.device, shared_prefix_min_tokens=min_tokens)
        if min_tokens and self.cfg.dtensor_cfg.enabled and dist.get_world_size() > 1:
            plans = share_prefixes_on_every_rank(plans, self.device)
        return plans

    def _end_scoring(self) -> None:
        """Back to training mode; a one-unit FSDP2 model drops the compute-dtype copy its forwards gathered."""
        if self.reshard_after_scoring:
            self.model.reshard()
        self.model.train(self.trainable)

    @torch.no_grad()
    def get_logprobs(self, batch: TokenBatch, temperature: float = 1.0, *, targets_only: bool = False) -> torch.Tensor:
        """``[B, T]`` fp32 ``log p(input_ids[b, t] | input_ids[b, :t])`` under ``softmax(logits / temperature)``
        (:func:`~nemo_distill.models.policy.logprobs.token_logprobs`); 0 at ``t = 0`` and on padding.
        The fp32 log-softmax runs ``logprob_chunk_size`` rows at a time. ``targets_only``: exact on the
        ``loss_mask`` tokens; the prompt's tokens before a micro-batch's first target may be 0 (their
        rows skip the output layer)."""
        self.model.eval()
        result = HostRows((batch.size, batch.seq_len), torch.float32, self.device)
        for planned in self._scoring_micro_batches(batch):
            trimmed = planned.batch
            chunk, vocab = self.cfg.logprob_chunk_size, int(self.model.config.vocab_size)
            scores = self._score_with_chunked_head(planned, lambda hidden, head, input_ids: head_token_logprobs(
                hidden, head, input_ids, chunk, temperature=temperature, vocab_size=vocab), targets_only=targets_only)
            if scores is None:
                logits = self._forward_logits(planned)
                scores = token_logprobs(logits, trimmed.input_ids, chunk, temperature=temperature)
            logprobs = torch.where(trimmed.attention_mask.bool(), scores.float(), 0.0)
            logprobs[:, 0] = 0.0
            result.put(logprobs)
        self._end_scoring()
        return result.result()

    @torch.no_grad()
    def get_topk_logits(self, batch: TokenBatch, k: int, temperature: float = 1.0, *, targets_only: bool = False) -> TopkLogits:
        """``[B, T, k]`` largest logits divided by ``temperature`` (fp32, descending) and their global ids.

        Row ``t`` describes token ``t + 1``; rows at padding positions are zeros. ``targets_only``: exact on
        the rows that predict ``loss_mask`` tokens; rows before a micro-batch's
        :meth:`~TokenBatch.first_target_row` may be zeros (they skip the output layer). Under TP each rank
        takes the top-k of its vocabulary shard and only ``k * tp`` candidates are exchanged.
        """
        vocab_size = int(self.model.config.vocab_size)
        if not 1 <= k <= vocab_size:
            raise ValueError(f"top-k k={k} must be between 1 and the vocabulary size {vocab_size}")
        if temperature <= 0:
            raise ValueError(f"top-k temperature must be > 0, got {temperature}")
        self.model.eval()
        tp_group = self.layout.tp_group if self.vocab_sharded else None
        values = HostRows((batch.size, batch.seq_len, k), torch.float32, self.device)
        indices = HostRows((batch.size, batch.seq_len, k), torch.int32, self.device)
        for planned in self._scoring_micro_batches(batch):
            trimmed = planned.batch
            top = self._score_with_chunked_head(planned, lambda hidden, head, input_ids: head_topk(
                hidden, head, k, self.cfg.logprob_chunk_size, temperature=temperature, vocab_size=vocab_size),
                targets_only=targets_only)
            if top is None:
                top = chunked_topk_over_vocab_shards(self._forward_local_logits(planned), k, temperature,
                                                     self.cfg.logprob_chunk_size, tp_group)
            valid = trimmed.attention_mask.bool().unsqueeze(-1)
            chunk_values = torch.where(valid, top[0], 0.0)
            chunk_indices = torch.where(valid, top[1], 0)
            values.put(chunk_values)
            indices.put(chunk_indices)
        self._end_scoring()
        return TopkLogits(values=values.result(), indices=indices.result())

    # ------------------------------------------------------------------ checkpoints and weights
    def save_checkpoint(self, path: str, *, save_optimizer: bool = True) -> None:
        """Write ``path`` (layout in :mod:`.checkpointing`); a collective."""
        checkpointing.save(self, Path(path), save_optimizer=save_optimizer)

    def load_checkpoint(self, path: str) -> None:
        """Restore weights, and when trainable optimizer / scheduler / RNG, from a :meth:`save_checkpoint` folder."""
        checkpointing.load(self, Path(path))

    # ------------------------------------------------------------------ introspection
    def get_rank_info(self) -> RankInfo:
        layout = self.layout
        return RankInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), dp_rank=layout.dp_rank, dp_size=layout.dp_size,
                        cp_rank=layout.cp_rank, cp_size=layout.cp_size, tp_rank=layout.tp_rank, tp_size=layout.tp_size,
                        pid=os.getpid(), device=str(self.device))

    def ping(self) -> bool:
        return True

    # ------------------------------------------------------------------ reset to the initial weights
    def _snapshot_trainable_state(self) -> dict[str, torch.Tensor]:
        """CPU copies of this rank's LOCAL pieces of every trainable parameter.

        Frozen parameters (LoRA's base weights) never change, so only trainable ones are kept: with
        LoRA that is the adapters, with full fine-tuning every parameter. Under FSDP2 / TP a
        parameter is a DTensor and only its local shard is copied, so the memory is the rank's share.
        """
        state = {}
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                local = param.to_local() if hasattr(param, "to_local") else param
                state[name] = local.detach().to("cpu", copy=True)
        return state

    @torch.no_grad()
    def reset(self, optimizer_cfg: OptimizerConfig | None = None, scheduler_cfg: SchedulerConfig | None = None,
              total_steps: int | None = None) -> None:
        """Back to the weights this worker started with, with a fresh AdamW and LR schedule.

        Every trainable parameter's local shard is copied back in place (the DTensor wrappers,
        FSDP2's hooks and the refit plumbing stay as they are); gradients are dropped; the optimizer
        is rebuilt from ``optimizer_cfg`` (default: ``cfg.optimizer``), so its state is empty, and
        the scheduler from ``scheduler_cfg`` / ``total_steps`` (defaults: ``cfg.scheduler`` and no
        horizon). Lets one cluster train several runs from the same initial weights (the
        noisy-student study's conditions). A collective only in that every rank must call it.
        """
        if not self.trainable:
            raise RuntimeError("reset() called on a frozen (trainable=False) worker")
        # FSDP2 leaves its root unit unsharded after a forward (e.g. get_logprobs'), with the gathered
        # copies registered as the module's parameters: the copy below and the new AdamW must see the
        # sharded parameters, or the root's (embeddings, final norm, head) would neither be restored nor trained.
        for module in self.model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()
        for name, param in self.model.named_parameters():
            if name in self._initial_trainable_state:
                local = param.to_local() if hasattr(param, "to_local") else param
                local.copy_(self._initial_trainable_state[name].to(local.device))
                param.grad = None
        self._build_optimizer(optimizer_cfg or self.cfg.optimizer, scheduler_cfg or self.cfg.scheduler, total_steps)

    def _build_optimizer(self, optimizer_cfg: OptimizerConfig, scheduler_cfg: SchedulerConfig, total_steps: int | None) -> None:
        """A fresh AdamW over the trainable (local) parameters and its LR multiplier schedule."""
        self.optimizer = build_adamw(self.trainable_parameters(), optimizer_cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_multiplier(scheduler_cfg, total_steps))

    def shutdown(self) -> None:
        """Leave the process group (lets a test process or a reused actor start another group)."""
        if dist.is_initialized():
            dist.destroy_process_group()
