"""CPU tensors cross Ray as their raw bytes (a numpy buffer), not through torch's pickle.

Ray pickles a ``torch.Tensor`` with torch's own reducer, which copies the storage through pickle's
in-band stream; a numpy array instead travels as a pickle-5 out-of-band buffer, copied once into the
object store. On the 2-core CI machine a teacher's top-k for 64 x 384 tokens (k = 64: fp32 values +
int32 ids, 12.6 MB) took 36 ms to fetch from an actor and 35 ms to send on to another one as
tensors, 10 and 12 ms as raw bytes (``benchmarks/ray_tensor_transfer.py``; 9x and 5x at 537 MB).

:func:`register_tensor_serializer` (called once per process: the driver in ``init_ray``, every
actor in ``WorkerHost``) makes Ray send each plain CPU tensor as ``(bytes as uint8 numpy, dtype,
shape, requires_grad)``. The receiver copies the bytes into a tensor it owns: Ray hands numpy
buffers out as read-only views of shared memory, and the library writes into received tensors in
place (e.g. a batch's ``sample_mask``), so the result is what torch's pickle gives: an independent,
writable, contiguous tensor with the same dtype, shape, values and ``requires_grad``. Tensors on
another device (a CUDA tensor, ``meta``), sparse or quantized ones, and subclasses (``Parameter``,
which pickle dispatches by exact type) keep torch's reducer.

``NEMO_DISTILL_RAY_TENSORS=pickle`` (forwarded to the workers) keeps Ray's default, torch's pickle,
everywhere: an escape hatch, and how ``benchmarks/refit.py`` runs compare the two.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

BYTES = "bytes"  # payload tag: raw bytes of a CPU strided tensor
TORCH = "torch"  # payload tag: torch's own reduce tuple
SERIALIZER_ENV = "NEMO_DISTILL_RAY_TENSORS"  # bytes (default) | pickle


def tensor_to_payload(tensor: torch.Tensor) -> tuple:
    """What Ray pickles in place of ``tensor`` (see the module docstring)."""
    if tensor.device.type != "cpu" or tensor.layout != torch.strided or tensor.is_quantized:
        return (TORCH, tensor.__reduce_ex__(5))
    data = tensor.detach().resolve_conj().resolve_neg().contiguous()
    raw = data.reshape(-1).view(torch.uint8).numpy()  # no copy for a contiguous tensor
    return (BYTES, raw, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), tensor.requires_grad)


def tensor_from_payload(payload: tuple) -> torch.Tensor:
    """The tensor :func:`tensor_to_payload` described, in memory this process owns."""
    if payload[0] == TORCH:
        rebuild, args = payload[1][:2]
        return rebuild(*args)
    _, raw, dtype_name, shape, requires_grad = payload
    dtype = getattr(torch, dtype_name)
    if raw.size == 0:  # no bytes to reinterpret (view() needs a unit stride, which an empty tensor lacks)
        tensor = torch.empty(shape, dtype=dtype)
    else:
        owned = np.array(raw, dtype=np.uint8, copy=True)  # Ray's buffer is read-only shared memory
        tensor = torch.from_numpy(owned).view(dtype).reshape(shape)
    return tensor.requires_grad_(True) if requires_grad else tensor


def register_tensor_serializer() -> None:
    """Send CPU tensors as raw bytes from this process on, unless :data:`SERIALIZER_ENV` says ``pickle``
    (idempotent; Ray must be initialised here)."""
    import ray

    choice = os.environ.get(SERIALIZER_ENV, "bytes")
    if choice not in ("bytes", "pickle"):
        raise ValueError(f"{SERIALIZER_ENV}={choice!r}: expected 'bytes' (the default) or 'pickle'")
    if choice == "bytes":
        ray.util.register_serializer(torch.Tensor, serializer=tensor_to_payload, deserializer=tensor_from_payload)


def uses_byte_serializer() -> bool:
    """Whether this process sends tensors with :func:`tensor_to_payload` (for tests and diagnostics)."""
    from ray import cloudpickle

    reducer: Any = cloudpickle.CloudPickler.dispatch.get(torch.Tensor)
    if reducer is None:
        return False
    try:
        return reducer(torch.zeros(1))[0] is tensor_from_payload
    except Exception:  # noqa: BLE001 - someone else's reducer: not ours
        return False
