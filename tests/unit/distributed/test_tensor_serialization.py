"""tensor_serialization: CPU tensors as raw bytes through Ray, the same tensor back (values, dtype, shape, grad flag)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from nemo_distill.distributed.tensor_serialization import BYTES, TORCH, tensor_from_payload, tensor_to_payload


def _round_trip(tensor: torch.Tensor) -> torch.Tensor:
    payload = pickle.loads(pickle.dumps(tensor_to_payload(tensor), protocol=5))  # what crosses a process boundary
    return tensor_from_payload(payload)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int32, torch.int64,
                                   torch.int8, torch.uint8, torch.bool, torch.complex64])
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 0, 4), (4, 5, 6)])
def test_every_dtype_and_shape_comes_back_equal(dtype, shape):
    generator = torch.Generator().manual_seed(0)
    source = (torch.randn(shape, generator=generator, dtype=torch.float64) * 100).to(dtype)
    received = _round_trip(source)
    assert tensor_to_payload(source)[0] == BYTES
    assert received.dtype == dtype and received.shape == source.shape and torch.equal(received, source)


def test_views_are_sent_as_their_own_values():
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    for view in (base.transpose(0, 2), base[1:, ::2, 3], base[2], base.expand(2, 3, 4, 5)[1]):
        payload = tensor_to_payload(view)
        assert payload[1].nbytes == view.numel() * 4  # the view's elements only, not the whole storage
        received = tensor_from_payload(payload)
        assert torch.equal(received, view) and received.is_contiguous()
    conj = torch.tensor([1 + 2j, 3 - 1j]).conj()  # a lazy conjugate bit must be applied, not dropped
    assert torch.equal(_round_trip(conj), torch.tensor([1 - 2j, 3 + 1j]))


def test_the_received_tensor_is_owned_and_writable():
    source = torch.arange(6, dtype=torch.int64)
    payload = tensor_to_payload(source)
    read_only = payload[1].copy()
    read_only.setflags(write=False)  # how Ray hands out a buffer from its shared-memory object store
    received = tensor_from_payload((payload[0], read_only, *payload[2:]))
    received.add_(10)  # in place, as the runtime does with a returned batch's sample_mask
    assert torch.equal(source, torch.arange(6)) and torch.equal(received, torch.arange(10, 16))
    assert not np.shares_memory(received.numpy(), read_only)


def test_requires_grad_survives_and_the_graph_does_not():
    leaf = torch.randn(3, requires_grad=True)
    received = _round_trip(leaf * 2)  # a non-leaf result: its graph cannot cross processes
    assert received.requires_grad and received.is_leaf and received.grad_fn is None
    assert torch.allclose(received, (leaf * 2).detach())
    assert not _round_trip(torch.ones(2)).requires_grad


def test_other_devices_and_layouts_keep_torchs_reducer():
    meta = torch.empty(2, 3, device="meta")
    payload = tensor_to_payload(meta)
    assert payload[0] == TORCH
    received = tensor_from_payload(pickle.loads(pickle.dumps(payload)))
    assert received.device.type == "meta" and received.shape == (2, 3)
    sparse = torch.eye(3).to_sparse()
    assert tensor_to_payload(sparse)[0] == TORCH
    assert torch.equal(_round_trip(sparse).to_dense(), torch.eye(3))


def test_the_environment_switch_is_checked(monkeypatch):
    from nemo_distill.distributed.tensor_serialization import SERIALIZER_ENV, register_tensor_serializer

    monkeypatch.setenv(SERIALIZER_ENV, "json")
    with pytest.raises(ValueError, match="NEMO_DISTILL_RAY_TENSORS='json'.*bytes.*pickle"):
        register_tensor_serializer()
