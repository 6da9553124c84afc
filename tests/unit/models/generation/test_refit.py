"""Weight buckets: size bounds, order, coverage; the refit hand-off between the two groups."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_distill.models.generation.interfaces import WeightUpdateStats
from nemo_distill.models.generation.refit import MIB, refit_generation_from_policy
from nemo_distill.models.generation.weight_transfer import bucket_state_dict, fetch_buckets


def named(sizes: list[int], dtype=torch.float32) -> list[tuple[str, torch.Tensor]]:
    return [(f"t{i}", torch.zeros(size, dtype=dtype)) for i, size in enumerate(sizes)]


def bucket_sizes(buckets) -> list[list[int]]:
    return [[t.numel() for t in bucket.values()] for bucket in buckets]


def test_greedy_packing_by_bytes():
    # fp32: 4 bytes per element, buckets of 40 bytes = 10 elements
    buckets = list(bucket_state_dict(named([4, 4, 2, 3, 10, 25, 1]), bucket_bytes=40))
    assert bucket_sizes(buckets) == [[4, 4, 2], [3], [10], [25], [1]]  # 25 > 10: a bucket of its own
    assert [name for bucket in buckets for name in bucket] == [f"t{i}" for i in range(7)]


def test_dtype_counts_in_bytes():
    buckets = list(bucket_state_dict(named([10, 10, 10], dtype=torch.bfloat16), bucket_bytes=40))
    assert bucket_sizes(buckets) == [[10, 10], [10]]


def test_bucket_state_dict_is_lazy():
    def tensors():
        yield "a", torch.zeros(10)
        yield "b", torch.zeros(10)
        raise RuntimeError("must not be read before the first bucket is used")

    assert list(next(bucket_state_dict(tensors(), bucket_bytes=40))) == ["a"]


def test_bucket_errors():
    with pytest.raises(ValueError, match="bucket_bytes must be >= 1, got 0"):
        list(bucket_state_dict(named([1]), 0))
    with pytest.raises(ValueError, match="tensor name 'x' appears twice"):
        list(bucket_state_dict([("x", torch.zeros(1)), ("x", torch.zeros(1))], 100))
    assert list(bucket_state_dict([], 100)) == []


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=50), max_size=30), bucket_elems=st.integers(min_value=1, max_value=60))
def test_bucket_invariants(sizes, bucket_elems):
    bucket_bytes = 4 * bucket_elems
    buckets = list(bucket_state_dict(named(sizes), bucket_bytes))
    flat = [name for bucket in buckets for name in bucket]
    assert flat == [f"t{i}" for i in range(len(sizes))]  # every tensor once, in order
    totals = [sum(4 * n for n in b) for b in bucket_sizes(buckets)]
    for total, bucket in zip(totals, bucket_sizes(buckets)):
        assert total <= bucket_bytes or len(bucket) == 1  # bounded, unless one tensor alone is larger
    for total, following in zip(totals, bucket_sizes(buckets)[1:]):
        assert total + 4 * following[0] > bucket_bytes  # greedy: the next tensor did not fit


class FakePolicyGroup:
    def __init__(self, refs):
        self.refs, self.requested = refs, []

    def export_weight_buckets(self, bucket_bytes: int):
        self.requested.append(bucket_bytes)
        return self.refs


class FakeGenerationGroup:
    def __init__(self):
        self.received = []

    def update_weights_from_refs(self, refs) -> WeightUpdateStats:
        self.received.append(list(refs))
        return WeightUpdateStats(num_buckets=len(refs), num_tensors=3, num_bytes=12)


def test_refit_hands_the_policy_refs_to_the_generation_group():
    policy, generation = FakePolicyGroup(["ref0", "ref1"]), FakeGenerationGroup()
    stats = refit_generation_from_policy(policy, generation, bucket_mb=2)
    assert policy.requested == [2 * MIB]
    assert generation.received == [["ref0", "ref1"]]
    assert stats == WeightUpdateStats(num_buckets=2, num_tensors=3, num_bytes=12)


def test_refit_errors():
    with pytest.raises(ValueError, match="refit_bucket_mb must be >= 1, got 0"):
        refit_generation_from_policy(FakePolicyGroup(["r"]), FakeGenerationGroup(), bucket_mb=0)
    with pytest.raises(RuntimeError, match="exported no weight buckets"):
        refit_generation_from_policy(FakePolicyGroup([]), FakeGenerationGroup(), bucket_mb=1)


def test_fetch_buckets_reads_refs_in_order(ray_cluster):
    import ray

    refs = [ray.put({"a": torch.ones(2)}), ray.put({"b": torch.zeros(3)})]
    fetched = fetch_buckets(refs)
    first = next(fetched)
    assert list(first) == ["a"] and torch.equal(first["a"], torch.ones(2))
    assert list(next(fetched)) == ["b"]
    assert next(fetched, None) is None


class RecordingWorkers:
    """``workers`` of a fake group: each worker answers ``call_all`` with its entry of ``answers``; calls are recorded."""

    def __init__(self, answers=()):
        self.answers, self.calls = list(answers), []

    def call_all(self, method, *args):
        self.calls.append((method, *args))
        return list(self.answers)


class DtypeGroup:
    def __init__(self, answers=()):
        self.workers = RecordingWorkers(answers)


@pytest.mark.parametrize("engine_dtypes, agreed", [
    ([torch.bfloat16, torch.bfloat16], torch.bfloat16),
    ([None, None], None),  # engines that do not say (vLLM): the policy's compute dtype
    ([torch.bfloat16, torch.float32], None),  # CPUs with and without native bf16: no single dtype fits both
])
def test_refitter_exports_in_the_engines_dtype_once(engine_dtypes, agreed):
    from nemo_distill.distributed.config import ClusterConfig
    from nemo_distill.models.generation.refit import WeightRefitter

    policy, generation = DtypeGroup(), DtypeGroup(engine_dtypes)
    refitter = WeightRefitter(policy, generation, bucket_mb=1, transport="broadcast", cluster=ClusterConfig())
    refitter._agree_on_dtype()
    refitter._agree_on_dtype()  # asked once per run: the engines' dtype never changes
    assert generation.workers.calls == [("weights_dtype",)]
    assert policy.workers.calls == ([("set_refit_dtype", agreed)] if agreed is not None else [])
