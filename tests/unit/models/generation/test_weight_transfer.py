"""Flat-buffer bucket layouts, packing and unpacking, transport choice, and the gloo transfer group."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from nemo_distill.models.generation.refit import choose_transport
from nemo_distill.models.generation.weight_transfer import (
    ALIGN_BYTES,
    create_transfer_group,
    iter_received_buckets,
    pack_bucket,
    plan_bucket_layouts,
    unpack_bucket,
)


def sample_weights() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(7, 5, generator=generator).to(torch.bfloat16),  # 70 bytes: forces padding
        "norm.weight": torch.randn(3, generator=generator),  # fp32, 12 bytes
        "counter": torch.tensor([3, -1], dtype=torch.int64),
        "scalar": torch.tensor(2.5, dtype=torch.float64),  # 0-d
        "big.weight": torch.randn(40, 40, generator=generator),  # 6400 bytes: larger than a bucket
    }


def specs_of(weights: dict[str, torch.Tensor]):
    return [(name, tuple(tensor.shape), tensor.dtype) for name, tensor in weights.items()]


def test_layouts_are_greedy_aligned_and_cover_every_tensor_once():
    weights = sample_weights()
    layouts = plan_bucket_layouts(specs_of(weights), bucket_bytes=1024)
    # 70 -> 256 aligned, then 12, 16 and 8 bytes fit in 1024; the 6400-byte tensor gets its own bucket
    assert [layout.names for layout in layouts] == [["embed.weight", "norm.weight", "counter", "scalar"], ["big.weight"]]
    first = layouts[0].tensors
    assert [spec.offset for spec in first] == [0, 256, 512, 768]
    assert [spec.nbytes for spec in first] == [70, 12, 16, 8]
    assert all(spec.offset % ALIGN_BYTES == 0 for layout in layouts for spec in layout.tensors)
    assert layouts[0].nbytes == 776 and layouts[1].nbytes == 6400


def test_pack_then_unpack_is_bit_exact_for_every_dtype():
    weights = sample_weights()
    for layout in plan_bucket_layouts(specs_of(weights), bucket_bytes=1024):
        buffer = torch.full((layout.nbytes + 100,), 255, dtype=torch.uint8)  # larger and dirty: only views are read
        flat = pack_bucket(layout, ((name, weights[name]) for name in reversed(layout.names)), buffer)
        assert flat.numel() == layout.nbytes
        unpacked = unpack_bucket(layout, flat)
        assert list(unpacked) == layout.names
        for name, tensor in unpacked.items():
            assert tensor.dtype == weights[name].dtype and torch.equal(tensor, weights[name])
            assert tensor.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()  # views, not copies


def test_pack_errors_name_the_tensor():
    weights = sample_weights()
    [layout, _] = plan_bucket_layouts(specs_of(weights), bucket_bytes=1024)
    buffer = torch.empty(layout.nbytes, dtype=torch.uint8)
    with pytest.raises(ValueError, match="'norm.weight' is torch.float16"):
        pack_bucket(layout, [("norm.weight", weights["norm.weight"].half())], buffer)
    with pytest.raises(ValueError, match="'big.weight' was exported but is not in the bucket layout"):
        pack_bucket(layout, [("big.weight", weights["big.weight"])], buffer)
    with pytest.raises(ValueError, match="3 tensor\\(s\\) of the bucket layout were not exported"):
        pack_bucket(layout, [("embed.weight", weights["embed.weight"])], buffer)
    with pytest.raises(ValueError, match="1-D uint8 buffer"):
        pack_bucket(layout, [], torch.empty(10, dtype=torch.uint8))
    with pytest.raises(ValueError, match="appears twice"):
        plan_bucket_layouts([("a", (1,), torch.float32), ("a", (1,), torch.float32)], 100)


@pytest.mark.parametrize(
    "requested, uses_gpus, colocated, expected",
    [
        ("auto", False, True, "broadcast"),
        ("auto", False, False, "broadcast"),
        ("auto", True, True, "cuda_ipc"),
        ("auto", True, False, "broadcast"),
        ("broadcast", False, False, "broadcast"),
        ("object_store", True, True, "object_store"),
        ("cuda_ipc", True, True, "cuda_ipc"),
    ],
)
def test_choose_transport(requested, uses_gpus, colocated, expected):
    assert choose_transport(requested, uses_gpus=uses_gpus, colocated=colocated) == expected


def test_impossible_transports_are_refused():
    with pytest.raises(ValueError, match="cuda_ipc needs every inference GPU to also be a trainer GPU"):
        choose_transport("cuda_ipc", uses_gpus=True, colocated=False)
    with pytest.raises(ValueError, match="cuda_ipc needs"):
        choose_transport("cuda_ipc", uses_gpus=False, colocated=True)
    with pytest.raises(ValueError, match="'nccl' is not one of"):
        choose_transport("nccl", uses_gpus=True, colocated=True)


def _transfer_rank(rank: int, port: int, layouts, results) -> None:
    torch.set_num_threads(1)
    group = create_transfer_group("127.0.0.1", port, rank, 3, torch.device("cpu"))
    if rank == 0:
        weights = sample_weights()
        from nemo_distill.models.generation.weight_transfer import broadcast_from_rank0

        for layout in layouts:
            buffer = torch.empty(layout.nbytes, dtype=torch.uint8)
            broadcast_from_rank0(group, pack_bucket(layout, ((n, weights[n]) for n in layout.names), buffer))
    else:
        received = {}
        for bucket in iter_received_buckets(group, layouts, torch.device("cpu")):
            received.update({name: tensor.clone() for name, tensor in bucket.items()})  # the buffer is reused
        results[rank] = received  # a synchronous call to the manager: stored before the exit below
    os._exit(0)  # skip C++ static destructors: a gloo thread alive at exit can abort a finished process


def test_gloo_transfer_group_broadcasts_every_bucket_to_every_receiver():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    layouts = plan_bucket_layouts(specs_of(sample_weights()), bucket_bytes=1024)
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_transfer_rank, args=(port, layouts, results), nprocs=3, start_method="spawn", join=True)
        received = dict(results)
    expected = sample_weights()
    for rank in (1, 2):
        assert set(received[rank]) == set(expected)
        for name, tensor in expected.items():
            assert torch.equal(received[rank][name], tensor), (rank, name)
