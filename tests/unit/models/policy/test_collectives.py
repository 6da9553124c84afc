"""Float all-reduces on 2 gloo ranks, including the clear error when ranks report different metric names."""

from __future__ import annotations

import torch.distributed as dist

from nemo_distill.models.policy.collectives import all_reduce_sum, all_reduce_sum_dict
from policy_spawn import run_ranks


def _reductions(rank: int) -> dict:
    dist.init_process_group("gloo")
    result = {
        "sum": all_reduce_sum(0.5 + rank),
        "dict": all_reduce_sum_dict({"a": 1.0 + rank, "b": 10.0}),
        "empty": all_reduce_sum_dict({}),
    }
    try:
        all_reduce_sum_dict({"a": 1.0} if rank == 0 else {"b": 1.0})
    except RuntimeError as error:
        result["mismatch"] = str(error)
    return result


def test_sums_and_metric_name_mismatch():
    for result in run_ranks(_reductions, 2):
        assert result["sum"] == 2.0 and result["dict"] == {"a": 3.0, "b": 20.0} and result["empty"] == {}
        assert "loss metrics differ between data-parallel ranks" in result["mismatch"]
