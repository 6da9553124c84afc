"""Wire formats of weight refit: bucket layouts, flat byte buffers, CUDA IPC handles, a transfer group.

A refit bucket travels as ONE flat ``uint8`` buffer: the tensors of the bucket laid end to end at
aligned byte offsets. Both sides agree on the :class:`BucketLayout` (names, shapes, dtypes,
offsets) before any byte moves, so the receiver can pre-allocate and read views without copies.

Object store (any device): :func:`bucket_state_dict` groups ``{name: tensor}`` dicts that Ray
stores and every generation worker fetches (:func:`fetch_buckets`).

Two GPU transports use flat buffers (``refit.py`` picks the transport):

* CUDA IPC (colocated: the policy rank and the generation worker share a GPU): the policy rank
  packs the bucket into a buffer on its GPU and hands out an IPC handle (a few hundred bytes,
  through Ray); the generation worker maps the same memory and copies straight into its weights.
  GPUs are matched by UUID, so different ``CUDA_VISIBLE_DEVICES`` orders on the two sides work.
* Broadcast (non-colocated): policy rank 0 and every generation worker form a separate process
  group (NCCL on GPU, gloo on CPU) outside both worker groups' own; rank 0 broadcasts each
  packed bucket.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch

ALIGN_BYTES = 256  # offsets of tensors in a flat buffer: keeps every view aligned for any dtype and vector loads
TRANSFER_GROUP_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class TensorSpec:
    """One tensor's place in a flat bucket buffer (``offset`` and ``nbytes`` in bytes)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    offset: int
    nbytes: int


@dataclass(frozen=True)
class BucketLayout:
    """The tensors of one bucket, in order, and the bucket's buffer size in bytes."""

    tensors: tuple[TensorSpec, ...]
    nbytes: int

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.tensors]


def tensor_nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def greedy_buckets(items: Iterable[tuple[str, Any]], nbytes_of: Callable[[Any], int], bucket_bytes: int) -> Iterator[list[tuple[str, Any]]]:
    """Group ``(name, item)`` pairs, in order, into lists of at most ``bucket_bytes`` (by ``nbytes_of``).

    Greedy: a bucket is closed when the next item would overflow it. An item larger than
    ``bucket_bytes`` gets a bucket of its own (tensors are never split). Lazy: only the current
    bucket is held, so a generator of gathered tensors stays bounded too.
    """
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    bucket: list[tuple[str, Any]] = []
    size = 0
    seen: set[str] = set()
    for name, item in items:
        if name in seen:
            raise ValueError(f"tensor name '{name}' appears twice in the weights to bucket")
        seen.add(name)
        nbytes = nbytes_of(item)
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, item))
        size += nbytes
    if bucket:
        yield bucket


def bucket_state_dict(named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> Iterator[dict[str, torch.Tensor]]:
    """``{name: tensor}`` dicts of at most ``bucket_bytes`` bytes, in order (see :func:`greedy_buckets`)."""
    for bucket in greedy_buckets(named_tensors, tensor_nbytes, bucket_bytes):
        yield dict(bucket)


def fetch_buckets(refs: list[Any]) -> Iterator[dict[str, torch.Tensor]]:
    """Yield the buckets behind Ray object ``refs`` one at a time (the caller drops each before the next)."""
    import ray

    for ref in refs:
        yield ray.get(ref)


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN_BYTES) * ALIGN_BYTES


def plan_bucket_layouts(specs: Iterable[tuple[str, tuple[int, ...], torch.dtype]], bucket_bytes: int) -> list[BucketLayout]:
    """Group ``(name, shape, dtype)`` in order into layouts of at most ``bucket_bytes`` (sizes rounded up
    to :data:`ALIGN_BYTES`), grouped like :func:`bucket_state_dict`."""
    def aligned_nbytes(spec: tuple[tuple[int, ...], torch.dtype]) -> int:
        return _aligned(torch.Size(spec[0]).numel() * spec[1].itemsize)

    layouts = []
    named = ((name, (tuple(shape), dtype)) for name, shape, dtype in specs)
    for bucket in greedy_buckets(named, aligned_nbytes, bucket_bytes):
        tensors, offset = [], 0
        for name, (shape, dtype) in bucket:
            nbytes = torch.Size(shape).numel() * dtype.itemsize
            tensors.append(TensorSpec(name, shape, dtype, offset, nbytes))
            offset = _aligned(offset + nbytes)
        layouts.append(BucketLayout(tuple(tensors), tensors[-1].offset + tensors[-1].nbytes))
    return layouts


def pack_bucket(layout: BucketLayout, named_tensors: Iterable[tuple[str, torch.Tensor]], out: torch.Tensor) -> torch.Tensor:
    """Copy ``(name, tensor)`` pairs, as they arrive, into ``out`` at the layout's offsets.

    ``out`` is a 1-D ``uint8`` buffer of at least ``layout.nbytes``; the stream may be lazy (only
    one gathered tensor is alive at a time). Returns the ``[layout.nbytes]`` prefix of ``out``.
    Raises ``ValueError`` naming a tensor the layout lacks, one whose shape or dtype differs, or
    one the stream did not provide.
    """
    if out.dtype != torch.uint8 or out.dim() != 1 or out.numel() < layout.nbytes:
        raise ValueError(f"pack_bucket needs a 1-D uint8 buffer of >= {layout.nbytes} bytes, got {out.dtype} {tuple(out.shape)}")
    specs = {spec.name: spec for spec in layout.tensors}
    packed: set[str] = set()
    for name, tensor in named_tensors:
        spec = specs.get(name)
        if spec is None:
            raise ValueError(f"refit: '{name}' was exported but is not in the bucket layout")
        if tuple(tensor.shape) != spec.shape or tensor.dtype != spec.dtype:
            raise ValueError(f"refit: '{name}' is {tensor.dtype} {tuple(tensor.shape)}, the layout says {spec.dtype} {spec.shape}")
        out[spec.offset : spec.offset + spec.nbytes].copy_(tensor.contiguous().view(-1).view(torch.uint8))
        packed.add(name)
    missing = [name for name in specs if name not in packed]
    if missing:
        raise ValueError(f"refit: {len(missing)} tensor(s) of the bucket layout were not exported, e.g. {missing[:3]}")
    return out[: layout.nbytes]


def unpack_bucket(layout: BucketLayout, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views into ``flat`` (no copies), one per tensor of the layout, with their shapes and dtypes."""
    if flat.numel() < layout.nbytes:
        raise ValueError(f"unpack_bucket: the buffer has {flat.numel()} bytes, the layout needs {layout.nbytes}")
    return {
        spec.name: flat[spec.offset : spec.offset + spec.nbytes].view(spec.dtype).view(spec.shape) for spec in layout.tensors
    }


# ---------------------------------------------------------------------------------------- CUDA IPC


def device_uuid(device: torch.device) -> str:
    """The physical identity of a CUDA device (the same in every process, whatever CUDA_VISIBLE_DEVICES says)."""
    return str(torch.cuda.get_device_properties(device).uuid)


@dataclass(frozen=True)
class IpcBuffer:
    """A CUDA buffer another process on the same GPU can open (``rebuild_args`` come from torch's reducer)."""

    device_uuid: str
    rebuild_args: tuple


_STORAGE_DEVICE_ARG = 6  # index of the device ordinal in the args of torch's rebuild_cuda_tensor


def share_cuda_buffer(buffer: torch.Tensor) -> IpcBuffer:
    """An IPC handle of ``buffer`` (a CUDA tensor that must stay alive until every opener is done)."""
    from torch.multiprocessing.reductions import reduce_tensor

    rebuild_fn, args = reduce_tensor(buffer)
    if rebuild_fn.__name__ != "rebuild_cuda_tensor":
        raise RuntimeError(f"expected a CUDA tensor to share, got one rebuilt by {rebuild_fn.__name__}")
    return IpcBuffer(device_uuid=device_uuid(buffer.device), rebuild_args=tuple(args))


def local_device_index(uuid: str) -> int | None:
    """This process's ordinal of the CUDA device with ``uuid``, or None when it cannot see it."""
    for index in range(torch.cuda.device_count()):
        if device_uuid(torch.device("cuda", index)) == uuid:
            return index
    return None


def open_cuda_buffer(handle: IpcBuffer) -> torch.Tensor:
    """Map the buffer behind ``handle`` into this process (same memory, no copy)."""
    from torch.multiprocessing.reductions import rebuild_cuda_tensor

    index = local_device_index(handle.device_uuid)
    if index is None:
        raise RuntimeError(f"refit over CUDA IPC: this process cannot see GPU {handle.device_uuid}")
    args = list(handle.rebuild_args)
    args[_STORAGE_DEVICE_ARG] = index  # the sender's ordinal may name another GPU here
    return rebuild_cuda_tensor(*args)


def pick_handle_for_device(handles: list[IpcBuffer], device: torch.device) -> IpcBuffer:
    """The handle that lives on ``device``; raises naming the GPUs when no policy rank shares it."""
    uuid = device_uuid(device)
    for handle in handles:
        if handle.device_uuid == uuid:
            return handle
    raise RuntimeError(
        f"refit over CUDA IPC: no policy rank runs on this generation worker's GPU {uuid} (policy GPUs: "
        f"{sorted({h.device_uuid for h in handles})}); use policy.generation.refit_transport=broadcast when "
        "generation and training run on different GPUs"
    )


# ---------------------------------------------------------------------------------------- transfer group


def create_transfer_group(master_addr: str, master_port: int, rank: int, world_size: int, device: torch.device) -> Any:
    """A process group of its own (not the default one): NCCL for CUDA ``device``, else gloo.

    Rank 0 hosts the rendezvous store at ``master_addr:master_port``. Built directly from a
    ``TCPStore`` so it can span processes that already belong to other (default) groups.
    """
    import torch.distributed as dist

    store = dist.TCPStore(master_addr, master_port, world_size, is_master=rank == 0, timeout=TRANSFER_GROUP_TIMEOUT)
    store = dist.PrefixStore("nemo_distill_refit", store)
    if device.type == "cuda":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = TRANSFER_GROUP_TIMEOUT
        return dist.ProcessGroupNCCL(store, rank, world_size, options)
    return dist.ProcessGroupGloo(store, rank, world_size, TRANSFER_GROUP_TIMEOUT)


def broadcast_from_rank0(group: Any, buffer: torch.Tensor) -> None:
    """Rank 0's ``buffer`` into every rank's ``buffer`` (same size and device type on all ranks)."""
    import torch.distributed as dist

    options = dist.BroadcastOptions()
    options.rootRank = 0
    options.rootTensor = 0
    group.broadcast([buffer], options).wait()


def iter_received_buckets(group: Any, layouts: list[BucketLayout], device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """Receive the broadcast of every layout in turn; each yielded bucket is views into one reused buffer.

    The caller must be done with a bucket before asking for the next (``update_weights`` is).
    """
    if not layouts:
        return
    buffer = torch.empty(max(layout.nbytes for layout in layouts), dtype=torch.uint8, device=device)
    for layout in layouts:
        flat = buffer[: layout.nbytes]
        broadcast_from_rank0(group, flat)
        yield unpack_bucket(layout, flat)


# ---------------------------------------------------------------------------------------- receiving end


class WeightReceiver:
    """The refit endpoints of a generation worker (mixed into every backend).

    Needs ``self.device`` and ``self.update_weights(buckets) -> WeightUpdateStats``; every transport
    ends in ``update_weights``, so name and shape checks are the backend's, whatever the transport.
    """

    device: torch.device
    _transfer_group: Any = None

    def weights_dtype(self) -> torch.dtype | None:
        """The floating dtype this engine keeps its weights in (refit sends that), or None when it does not say."""
        return getattr(self, "dtype", None)

    def update_weights_from_refs(self, refs: list[Any]) -> Any:
        """``update_weights`` from Ray object refs of buckets, fetched one at a time."""
        return self.update_weights(fetch_buckets(refs))

    def load_ipc_bucket(self, layout: BucketLayout, handles: list[IpcBuffer]) -> Any:
        """Copy one bucket out of the policy rank's GPU buffer on this worker's GPU (see :class:`IpcBuffer`)."""
        flat = open_cuda_buffer(pick_handle_for_device(handles, self.device))
        stats = self.update_weights([unpack_bucket(layout, flat)], strict=False)
        # The policy reuses its buffer for the next bucket as soon as this call returns.
        torch.cuda.current_stream(self.device).synchronize()
        del flat
        return stats

    def open_transfer_group(self, master_addr: str, master_port: int, rank: int, world_size: int) -> None:
        """Join the refit group as ``rank`` (1 .. world_size-1; the policy's rank 0 is its rank 0)."""
        self._transfer_group = create_transfer_group(master_addr, master_port, rank, world_size, self.device)

    def receive_weights_broadcast(self, layouts: list[BucketLayout]) -> Any:
        """Receive and load every bucket the policy's rank 0 broadcasts."""
        if self._transfer_group is None:
            raise RuntimeError("receive_weights_broadcast before open_transfer_group")
        return self.update_weights(iter_received_buckets(self._transfer_group, layouts, self.device))
