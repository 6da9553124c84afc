"""PolicyWorkerGroup over 2 Ray CPU workers (FSDP2, gloo): dp sharding and merging against float64 HF
references, weight export through the object store, the offload call order, clear errors."""

from __future__ import annotations

import sys

import pytest
import torch

from nemo_distill.models.policy.config import PolicyConfig
from nemo_distill.models.policy.interfaces import TrainMetrics
from policy_spawn import MaskedNLLLoss, make_batch

BUCKET_BYTES = 2 * 2**20


def _logprobs_of(model, batch) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logprobs = torch.zeros(batch.input_ids.shape, dtype=logits.dtype)
    logprobs[:, 1:] = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    return logprobs * batch.attention_mask


@pytest.fixture(scope="module")
def run(ray_cluster, tiny_model_dir, tmp_path_factory):
    """One group, one sequence of calls; the tests below check what it recorded."""
    import ray
    import ray.cloudpickle

    from nemo_distill.distributed.config import ClusterConfig
    from nemo_distill.distributed.virtual_cluster import RayVirtualCluster
    from nemo_distill.models.policy.group import PolicyWorkerGroup

    ray.cloudpickle.register_pickle_by_value(sys.modules["policy_spawn"])  # the test loss travels by value
    cluster = RayVirtualCluster(ClusterConfig(cpu_slots_per_node=2))
    cfg = PolicyConfig(model_name=tiny_model_dir, train_micro_batch_size=1, logprob_batch_size=2)
    group = PolicyWorkerGroup(cluster, cfg)
    batch = make_batch(batch_size=4, seq_len=10, seed=3)
    record = {"group": group, "batch": batch, "rank_infos": group.rank_infos}
    try:
        record["logprobs_before"] = group.get_logprobs(batch)
        record["topk"] = group.get_topk_logits(batch, k=4, temperature=2.0)
        record["metrics"] = group.train(batch, MaskedNLLLoss())
        record["logprobs_after"] = group.get_logprobs(batch)
        refs = group.export_weight_buckets(BUCKET_BYTES)
        record["buckets"] = [ray.get(ref) for ref in refs]
        for call in ("offload_optimizer", "onload_to_device", "offload_to_cpu", "onload_optimizer"):
            getattr(group, call)()
        record["offload_events"] = group.get_offload_events()
        with pytest.raises(ValueError, match="2 data-parallel ranks") as error:
            group.get_logprobs(make_batch(batch_size=3, seq_len=10))
        record["indivisible_error"] = str(error.value)
        checkpoint = tmp_path_factory.mktemp("group_ckpt") / "ckpt"
        group.save_checkpoint(str(checkpoint))
        record["checkpoint"] = checkpoint
        yield record
    finally:
        group.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64).eval()


def test_ranks_form_two_data_parallel_shards(run):
    assert [(info.rank, info.dp_rank, info.dp_size, info.tp_size) for info in run["rank_infos"]] == [(0, 0, 2, 1), (1, 1, 2, 1)]
    assert len({info.pid for info in run["rank_infos"]}) == 2


def test_scores_are_merged_in_batch_order(run, hf_model):
    batch = run["batch"]
    torch.testing.assert_close(run["logprobs_before"].double(), _logprobs_of(hf_model, batch), atol=2e-5, rtol=0)
    with torch.no_grad():
        logits = hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    values, indices = torch.topk(logits / 2.0, 4, dim=-1)
    real = batch.attention_mask.bool()
    torch.testing.assert_close(run["topk"].values[real].double(), values[real], atol=2e-5, rtol=0)
    assert torch.equal(run["topk"].indices[real], indices[real])


def test_train_step_is_the_global_masked_mean(run, hf_model):
    batch = run["batch"]
    metrics = run["metrics"]
    assert isinstance(metrics, TrainMetrics)
    valid = batch.valid_target_tokens()[:, 1:].double()
    expected = -(_logprobs_of(hf_model, batch)[:, 1:] * valid).sum() / valid.sum()
    assert metrics.loss == pytest.approx(float(expected), abs=1e-5)
    assert metrics.num_valid_tokens == float(valid.sum())
    assert not torch.allclose(run["logprobs_after"], run["logprobs_before"], atol=1e-7)


def test_exported_buckets_are_bounded_and_reproduce_the_policy(run, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    buckets = run["buckets"]
    assert len(buckets) > 1
    for bucket in buckets:
        size = sum(t.numel() * t.element_size() for t in bucket.values())
        assert size <= BUCKET_BYTES or len(bucket) == 1
    weights = {name: tensor for bucket in buckets for name, tensor in bucket.items()}
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    assert set(weights) == set(model.state_dict())
    model.load_state_dict(weights)
    torch.testing.assert_close(_logprobs_of(model, run["batch"]), run["logprobs_after"], atol=1e-5, rtol=0)


def test_offload_call_order_is_recorded(run):
    assert run["offload_events"] == ["offload_optimizer", "onload_model", "offload_model", "onload_optimizer"]


def test_indivisible_batch_names_the_fix(run):
    assert "batch of 3 samples" in run["indivisible_error"] and "multiple of 2" in run["indivisible_error"]


def test_group_checkpoint_is_written(run):
    from nemo_distill.models.policy.checkpointing import is_policy_checkpoint, read_info

    assert is_policy_checkpoint(run["checkpoint"]) and read_info(run["checkpoint"]).world_size == 2
