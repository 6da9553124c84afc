"""Weight refit: the current policy weights into every generation worker, in bounded buckets.

Every transport streams the full (unsharded) HF-named weights, LoRA merged and cast to the
compute dtype: each policy rank all-gathers one tensor at a time (a collective), and the tensors
are grouped into buckets of at most ``policy.generation.refit_bucket_mb``, so the extra peak
memory on either side is about one bucket. ``policy.generation.refit_transport`` picks how a
bucket travels (wire formats in :mod:`.weight_transfer`):

============== ===================================================== ==============================
transport      how a bucket moves                                    when ``auto`` picks it
============== ===================================================== ==============================
cuda_ipc       every policy rank packs the bucket into a buffer on   GPU, every inference slot is
               its GPU; the generation worker on the same GPU maps   also a trainer slot
               it via a CUDA IPC handle and copies (no host trip)    (colocated)
broadcast      policy rank 0 packs on its device and broadcasts to   every other case: separate
               all generation workers over a group of their own      inference GPUs, and CPU
               (NCCL on GPU, gloo on CPU)                            clusters
object_store   rank 0 gathers to CPU, ``ray.put`` per bucket; every  only when asked for (needs no
               generation worker fetches and loads one at a time     ports beyond Ray's own)
============== ===================================================== ==============================
"""

from __future__ import annotations

import logging
import time
from typing import Any

from nemo_distill.distributed.config import ClusterConfig
from nemo_distill.distributed.worker_group import wait_all
from nemo_distill.models.generation.interfaces import WeightUpdateStats

log = logging.getLogger(__name__)

MIB = 2**20
TRANSPORTS = ("object_store", "cuda_ipc", "broadcast")


def choose_transport(requested: str, *, uses_gpus: bool, colocated: bool) -> str:
    """The transport ``requested`` means on this cluster (``auto`` resolved); raises for an impossible one.

    ``colocated`` (``cluster.colocated``) is exactly "every inference GPU is also a trainer GPU": without
    it the placement check forbids any overlap between trainer and inference slots.
    """
    if requested == "auto":
        # CPU: a gloo broadcast moved SmolLM2-135M's weights 3x faster than the object store (benchmarks/refit.py).
        return "cuda_ipc" if uses_gpus and colocated else "broadcast"
    if requested not in TRANSPORTS:
        raise ValueError(f"policy.generation.refit_transport '{requested}' is not one of {['auto', *TRANSPORTS]}")
    if requested == "cuda_ipc" and not (uses_gpus and colocated):
        raise ValueError(
            "policy.generation.refit_transport=cuda_ipc needs every inference GPU to also be a trainer GPU "
            "(colocated on GPUs); use broadcast or object_store"
        )
    return requested


def refit_generation_from_policy(policy_group: Any, generation_group: Any, bucket_mb: int) -> WeightUpdateStats:
    """Object-store refit: ``policy_group.export_weight_buckets(bucket_bytes) -> list[ObjectRef]`` and
    ``generation_group.update_weights_from_refs(refs) -> WeightUpdateStats`` (rank 0's)."""
    _check_bucket_mb(bucket_mb)
    refs = policy_group.export_weight_buckets(bucket_mb * MIB)
    if not refs:
        raise RuntimeError("the policy exported no weight buckets (export_weight_buckets returned no refs)")
    stats = generation_group.update_weights_from_refs(refs)
    del refs  # the object store frees the buckets once no one holds a ref
    return stats


def _check_bucket_mb(bucket_mb: int) -> None:
    if bucket_mb < 1:
        raise ValueError(f"policy.generation.refit_bucket_mb must be >= 1, got {bucket_mb}")


class WeightRefitter:
    """Moves the policy's weights into the generation workers with one transport, chosen once.

    Args:
        policy: a ``PolicyWorkerGroup`` (the student).
        generation: a ``GenerationWorkerGroup``.
        bucket_mb: ``policy.generation.refit_bucket_mb``.
        transport: ``policy.generation.refit_transport`` (``auto`` resolved with :func:`choose_transport`).
        cluster: the run's ``cluster`` section (GPUs or CPU slots, and where inference sits).
    """

    def __init__(self, policy: Any, generation: Any, *, bucket_mb: int, transport: str = "auto", cluster: ClusterConfig):
        _check_bucket_mb(bucket_mb)
        self.policy, self.generation = policy, generation
        self.bucket_mb = bucket_mb
        self.transport = choose_transport(transport, uses_gpus=cluster.uses_gpus,
                                          colocated=cluster.colocated)
        self._layouts: list | None = None  # the weights' names and shapes never change during a run
        self._group_open = False
        self._dtype_agreed = False

    def _agree_on_dtype(self) -> None:
        """Once: the policy exports in the generation engines' weight dtype (a bf16 CPU sampler under an fp32
        policy gets half the bytes). Engines that do not say, or differ (bf16 on one CPU, fp32 on another
        without native bf16), get the policy's compute dtype."""
        if not self._dtype_agreed:
            dtypes = set(self.generation.workers.call_all("weights_dtype"))
            if len(dtypes) == 1 and None not in dtypes:
                self.policy.workers.call_all("set_refit_dtype", dtypes.pop())
            self._dtype_agreed = True

    def refit(self) -> WeightUpdateStats:
        started = time.perf_counter()
        self._agree_on_dtype()
        if self.transport == "object_store":
            stats = refit_generation_from_policy(self.policy, self.generation, self.bucket_mb)
        else:
            if self._layouts is None:
                self._layouts = self.policy.workers.call_rank(0, "weight_bucket_layouts", self.bucket_mb * MIB)
                # A name the generation model lacks (or one it would miss) fails here, before any byte moves.
                self.generation.workers.call_all("check_weight_names", [n for layout in self._layouts for n in layout.names])
            stats = self._refit_cuda_ipc() if self.transport == "cuda_ipc" else self._refit_broadcast()
        log.debug("refit (%s): %d tensors (%.1f MiB) in %d bucket(s) in %.2f s", self.transport, stats.num_tensors,
                 stats.num_bytes / MIB, stats.num_buckets, time.perf_counter() - started)
        return stats

    def _refit_cuda_ipc(self) -> WeightUpdateStats:
        total = WeightUpdateStats(num_buckets=0, num_tensors=0, num_bytes=0)
        try:
            for layout in self._layouts:
                handles = self.policy.workers.call_all("pack_ipc_bucket", layout)
                stats = self.generation.workers.call_all("load_ipc_bucket", layout, handles)[0]
                total.num_buckets += 1
                total.num_tensors += stats.num_tensors
                total.num_bytes += stats.num_bytes
        finally:
            self.policy.workers.call_all("release_transfer_buffer")
        return total

    def _open_transfer_group(self) -> None:
        address, port = self.policy.workers.node_ip_and_free_port(0)
        world_size = 1 + self.generation.world_size
        wait_all(
            self.policy.workers.submit_all("open_transfer_group", address, port, world_size),
            *[self.generation.workers.submit_rank(rank, "open_transfer_group", address, port, 1 + rank, world_size)
              for rank in range(self.generation.world_size)],
        )
        self._group_open = True

    def _refit_broadcast(self) -> WeightUpdateStats:
        if not self._group_open:
            self._open_transfer_group()
        _, received = wait_all(
            self.policy.workers.submit_all("broadcast_weights", self._layouts),
            self.generation.workers.submit_all("receive_weights_broadcast", self._layouts),
        )
        self.policy.workers.call_all("release_transfer_buffer")
        return received[0]
