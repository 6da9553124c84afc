"""Weight refit: the current policy weights into every generation worker, in bounded buckets.

How the weights travel (CPU and GPU alike): every policy rank gathers the full tensors of its
DTensor shards (a collective), rank 0 groups them with :func:`bucket_state_dict` and puts each
bucket (a ``dict`` of HF-named tensors of at most ``bucket_bytes``) into Ray's object store, and
returns the refs. The driver hands the same refs to every generation worker, which fetches and
loads them one at a time (:func:`fetch_buckets`), so a worker's extra peak memory is about one
bucket. The object store holds the whole model while the refit runs and frees it when the refs
are dropped.

Not implemented: colocated CUDA IPC handles (zero-copy on one GPU) and NCCL broadcast between
non-colocated GPUs; both would replace only the transport, not this interface.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Iterator

import torch

from nemo_distill.models.generation.interfaces import WeightUpdateStats

log = logging.getLogger(__name__)

MIB = 2**20


def tensor_nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def bucket_state_dict(named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> Iterator[dict[str, torch.Tensor]]:
    """Group ``(name, tensor)`` pairs, in order, into dicts of at most ``bucket_bytes`` bytes.

    Greedy: a bucket is closed when the next tensor would overflow it. A single tensor larger
    than ``bucket_bytes`` gets a bucket of its own (tensors are never split). Lazy: only the
    current bucket is held, so a generator of gathered tensors stays bounded too.
    """
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    bucket: dict[str, torch.Tensor] = {}
    size = 0
    for name, tensor in named_tensors:
        if name in bucket:
            raise ValueError(f"tensor name '{name}' appears twice in the weights to bucket")
        nbytes = tensor_nbytes(tensor)
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = {}, 0
        bucket[name] = tensor
        size += nbytes
    if bucket:
        yield bucket


def fetch_buckets(refs: list[Any]) -> Iterator[dict[str, torch.Tensor]]:
    """Yield the buckets behind Ray object ``refs`` one at a time (the caller drops each before the next)."""
    import ray

    for ref in refs:
        yield ray.get(ref)


def refit_generation_from_policy(policy_group: Any, generation_group: Any, bucket_mb: int) -> WeightUpdateStats:
    """Copy the policy's current weights into every generation worker.

    ``policy_group.export_weight_buckets(bucket_bytes) -> list[ObjectRef]`` (``PolicyWorkerGroup``)
    and ``generation_group.update_weights_from_refs(refs) -> WeightUpdateStats``
    (``GenerationWorkerGroup``). Returns what each generation worker loaded.
    """
    if bucket_mb < 1:
        raise ValueError(f"policy.generation.refit_bucket_mb must be >= 1, got {bucket_mb}")
    started = time.perf_counter()
    refs = policy_group.export_weight_buckets(bucket_mb * MIB)
    if not refs:
        raise RuntimeError("the policy exported no weight buckets (export_weight_buckets returned no refs)")
    stats = generation_group.update_weights_from_refs(refs)
    del refs  # the object store frees the buckets once no one holds a ref
    log.info(
        "refit: %d tensors (%.1f MiB) in %d bucket(s) in %.2f s",
        stats.num_tensors, stats.num_bytes / MIB, stats.num_buckets, time.perf_counter() - started,
    )
    return stats
