"""Refit's side of the policy: the trainer's weights exported to the generation workers.

:class:`WeightExportMixin` gives :class:`~nemo_distill.models.policy.worker.PolicyWorker` the three
refit transports' methods (Ray object store buckets, a CUDA IPC buffer, an NCCL/gloo broadcast
group; :mod:`nemo_distill.models.generation.refit` picks one). Every export streams full HF-named
tensors (LoRA merged, FSDP2/TP shards gathered) in the generation engine's dtype (``set_refit_dtype``;
by default the compute dtype), one tensor at a time.

The worker provides: ``model``, ``lora_scale``, ``compute_dtype``, ``device``, and the two slots
``_transfer_buffer`` (the reused packed bucket, or None) and ``_transfer_group`` (rank 0's refit
process group, or None).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from nemo_distill.models.policy import weights


class WeightExportMixin:
    """Weight export for refit; mixed into ``PolicyWorker`` (see the module docstring for what it needs)."""

    refit_dtype: torch.dtype | None = None  # the generation engine's weight dtype, when it differs from ours

    def set_refit_dtype(self, dtype: torch.dtype | None) -> None:
        """Export floating tensors in ``dtype`` (the generation engine's; None: the compute dtype)."""
        self.refit_dtype = dtype

    def _export_dtype(self, dtype: torch.dtype) -> torch.dtype:
        # Cast on export to the dtype the engine keeps (bf16 on GPU, or a bf16 CPU sampler under an fp32
        # policy): refit then moves no more bytes than the engine stores.
        return (self.refit_dtype or self.compute_dtype) if dtype.is_floating_point else dtype

    def _export_stream(self, is_writer: bool, *, device: torch.device | str = "cpu", only: set[str] | None = None):
        stream = weights.iter_hf_weights(self.model, lora_scale=self.lora_scale, keep=is_writer, device=device, only=only)
        for name, tensor in stream:
            yield name, (tensor.to(self._export_dtype(tensor.dtype)) if tensor is not None else None)

    def state_dict_for_export(self) -> dict[str, torch.Tensor]:
        """Full HF-named weights (LoRA merged, compute dtype, CPU) on rank 0; ``{}`` elsewhere. A collective."""
        is_writer = dist.get_rank() == 0
        return {name: tensor for name, tensor in self._export_stream(is_writer) if is_writer}

    def export_weight_buckets(self, bucket_bytes: int) -> list:
        """Full HF-named weights (LoRA merged) put in Ray's object store as dicts of at most ``bucket_bytes``.

        A collective: every rank gathers each tensor in turn; rank 0 puts the buckets and returns
        their refs (``list[ray.ObjectRef]``), other ranks return ``[]``.
        """
        import ray

        from nemo_distill.models.generation.weight_transfer import bucket_state_dict

        is_writer = dist.get_rank() == 0
        stream = self._export_stream(is_writer)
        if not is_writer:
            weights.drain(stream)
            return []
        return [ray.put(bucket) for bucket in bucket_state_dict(stream, bucket_bytes)]

    def weight_bucket_layouts(self, bucket_bytes: int) -> list:
        """The ``BucketLayout`` list of the exported weights (names, full shapes, export dtypes); no collective."""
        from nemo_distill.models.generation.weight_transfer import plan_bucket_layouts

        specs = weights.hf_weight_specs(self.model, lora_scale=self.lora_scale)
        return plan_bucket_layouts([(name, shape, self._export_dtype(dtype)) for name, shape, dtype in specs], bucket_bytes)

    def _pack_on_device(self, layout, is_writer: bool) -> torch.Tensor | None:
        """Gather the layout's tensors (a collective) and, on a writer, pack them into the reused device buffer."""
        from nemo_distill.models.generation.weight_transfer import pack_bucket

        stream = self._export_stream(is_writer, device=self.device, only=set(layout.names))
        if not is_writer:
            weights.drain(stream)
            return None
        if self._transfer_buffer is None or self._transfer_buffer.numel() < layout.nbytes:
            self._transfer_buffer = None  # free the old buffer before allocating a larger one
            self._transfer_buffer = torch.empty(layout.nbytes, dtype=torch.uint8, device=self.device)
        return pack_bucket(layout, stream, self._transfer_buffer)

    def pack_ipc_bucket(self, layout) -> object:
        """Every rank gathers the bucket onto its own GPU and returns an ``IpcBuffer`` of it (a collective).

        The buffer is reused by the next bucket: the caller must let the generation workers copy
        out of it first. :meth:`release_transfer_buffer` frees it.
        """
        from nemo_distill.models.generation.weight_transfer import share_cuda_buffer

        if self.device.type != "cuda":
            raise RuntimeError("refit over CUDA IPC needs the policy on a GPU; use refit_transport=broadcast or object_store on CPU")
        flat = self._pack_on_device(layout, is_writer=True)
        torch.cuda.current_stream(self.device).synchronize()  # the bytes must be in place before another process reads
        return share_cuda_buffer(flat)

    def release_transfer_buffer(self) -> None:
        self._transfer_buffer = None
        if self.device.type == "cuda":
            torch.cuda.ipc_collect()
            torch.cuda.empty_cache()

    def open_transfer_group(self, master_addr: str, master_port: int, world_size: int) -> None:
        """Rank 0 joins the refit group as its rank 0 (:func:`create_transfer_group`); other ranks do nothing."""
        from nemo_distill.models.generation.weight_transfer import create_transfer_group

        if dist.get_rank() == 0:
            self._transfer_group = create_transfer_group(master_addr, master_port, 0, world_size, self.device)

    def broadcast_weights(self, layouts: list) -> int:
        """Send every bucket of ``layouts`` to the refit group (rank 0); the other ranks only help gather.

        A collective over the policy ranks AND the refit group. Returns the bytes sent (0 off rank 0).
        """
        from nemo_distill.models.generation.weight_transfer import broadcast_from_rank0

        is_writer = dist.get_rank() == 0
        if is_writer and self._transfer_group is None:
            raise RuntimeError("broadcast_weights before open_transfer_group")
        sent = 0
        for layout in layouts:
            flat = self._pack_on_device(layout, is_writer)
            if is_writer:
                broadcast_from_rank0(self._transfer_group, flat)
                sent += layout.nbytes
        return sent
