"""Weight refit: the current policy weights into the generation workers, in bounded buckets.

On CPU (and by default) buckets travel through Ray's object store: rank 0 of the policy puts
each bucket (a dict of HF-named tensors of at most ``bucket_bytes``) and every generation worker
fetches and loads them one at a time, so its extra peak memory is about one bucket.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch


def bucket_state_dict(named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> Iterator[dict[str, torch.Tensor]]:
    """Group tensors into dicts of at most ``bucket_bytes`` (a larger single tensor gets a bucket of its own)."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    bucket: dict[str, torch.Tensor] = {}
    size = 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = {}, 0
        bucket[name] = tensor
        size += nbytes
    if bucket:
        yield bucket


def refit_generation_from_policy(policy_group, generation_group, bucket_mb: int) -> int:
    """Copy the policy's weights into every generation worker; return the number of tensors moved."""
    refs = policy_group.export_weight_buckets(bucket_mb * 2**20)
    loaded = generation_group.update_weights_from_refs(refs)
    del refs
    return loaded
