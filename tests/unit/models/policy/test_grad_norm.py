"""Global gradient norm and clipping: plain tensors against torch, and DTensors (sharded and replicated
on a 2-rank mesh) against the norm of the unsharded gradient."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist

from nemo_distill.models.policy.grad_norm import clip_grad_norm, global_grad_norm
from policy_spawn import run_ranks


def _params_with_grads(*grads: torch.Tensor) -> list[torch.nn.Parameter]:
    params = []
    for grad in grads:
        param = torch.nn.Parameter(torch.zeros_like(grad))
        param.grad = grad.clone()
        params.append(param)
    return params


def test_norm_of_plain_gradients_matches_torch():
    grads = [torch.randn(4, 3), torch.randn(7)]
    expected = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]).double())
    assert global_grad_norm(_params_with_grads(*grads)) == pytest.approx(float(expected), rel=1e-12)
    assert global_grad_norm([torch.nn.Parameter(torch.zeros(2))]) == 0.0  # no gradients at all


def test_clipping_scales_to_max_norm_and_none_never_clips():
    params = _params_with_grads(torch.full((4,), 3.0))  # norm 6
    assert clip_grad_norm(params, 1.5) == pytest.approx(6.0)
    assert global_grad_norm(params) == pytest.approx(1.5, rel=1e-5)
    params = _params_with_grads(torch.full((4,), 3.0))
    assert clip_grad_norm(params, None) == pytest.approx(6.0) and global_grad_norm(params) == pytest.approx(6.0)
    params = _params_with_grads(torch.full((4,), 0.1))
    clip_grad_norm(params, 1.0)
    assert torch.equal(params[0].grad, torch.full((4,), 0.1))  # under the limit: untouched


def _dtensor_norm(rank: int) -> float:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (2,))
    torch.manual_seed(0)
    sharded_full, replicated_full, plain = torch.randn(6, 4), torch.randn(5), torch.randn(3)
    params = []
    for full, placement in ((sharded_full, Shard(0)), (replicated_full, Replicate())):
        param = torch.nn.Parameter(distribute_tensor(torch.zeros_like(full), mesh, [placement]))
        param.grad = distribute_tensor(full, mesh, [placement])
        params.append(param)
    params += _params_with_grads(plain)  # a plain tensor: a full copy on each rank
    return global_grad_norm(params)


def test_norm_of_sharded_and_replicated_dtensors_counts_each_element_once():
    torch.manual_seed(0)
    expected = math.sqrt(sum(float(t.double().pow(2).sum()) for t in (torch.randn(6, 4), torch.randn(5), torch.randn(3))))
    norms = run_ranks(_dtensor_norm, 2)
    assert norms[0] == norms[1] == pytest.approx(expected, rel=1e-6)


def test_mixed_dtypes_and_empty_shards_are_counted_in_float64():
    grads = [torch.randn(5, 3), torch.randn(4).to(torch.bfloat16), torch.zeros(0), torch.randn(2, dtype=torch.float64)]
    expected = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    assert global_grad_norm(_params_with_grads(*grads)) == pytest.approx(expected, rel=1e-12)
    params = _params_with_grads(*grads)
    clip_grad_norm(params, 0.5)
    assert global_grad_norm(params) == pytest.approx(0.5, rel=1e-2)  # bf16 rounding of the scaled entries
    assert params[1].grad.dtype == torch.bfloat16 and params[2].grad.numel() == 0


def _dtensor_clip(rank: int) -> tuple[float, float, list[float]]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (2,))
    torch.manual_seed(0)
    params = []
    for full, placement in ((torch.randn(6, 4), Shard(0)), (torch.randn(5), Replicate())):
        param = torch.nn.Parameter(distribute_tensor(torch.zeros_like(full), mesh, [placement]))
        param.grad = distribute_tensor(full, mesh, [placement])
        params.append(param)
    before = clip_grad_norm(params, 0.25)
    # the DTensor gradients themselves were scaled (through their local shards)
    return before, global_grad_norm(params), params[1].grad.full_tensor().tolist()


def test_clipping_sharded_dtensors_scales_the_gradients_themselves():
    first, second = run_ranks(_dtensor_clip, 2)
    assert first[0] == second[0] > 0.25
    assert first[1] == pytest.approx(0.25, rel=1e-5) and second[1] == pytest.approx(0.25, rel=1e-5)
    assert first[2] == second[2]  # replicated gradients clipped identically on both ranks
