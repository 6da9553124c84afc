"""GenerationWorkerGroup over 2 CPU workers: prompt order, refit through the object store, lifecycle."""

from __future__ import annotations

import pytest

from nemo_distill.distributed.config import ClusterConfig
from nemo_distill.distributed.virtual_cluster import RayVirtualCluster
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.group import GenerationWorkerGroup, merge_outputs, split_evenly
from nemo_distill.models.generation.hf_backend import HFGenerationWorker
from nemo_distill.models.generation.interfaces import GeneratedSample, GenerationOutput, GenerationRequest, SamplingParams
from nemo_distill.models.generation.refit import refit_generation_from_policy
from nemo_distill.models.generation.weight_transfer import bucket_state_dict

PROMPT_TEXTS = ["Hello", "The capital of France is", "Once upon a time there", "1 2 3", "Why"]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=5, n=2)


@pytest.mark.parametrize(
    "num_items, num_parts, expected",
    [(5, 2, [(0, 3), (3, 5)]), (4, 2, [(0, 2), (2, 4)]), (1, 3, [(0, 1), (1, 1), (1, 1)]), (0, 2, [(0, 0), (0, 0)])],
)
def test_split_evenly(num_items, num_parts, expected):
    assert split_evenly(num_items, num_parts) == expected


def test_merge_outputs_shifts_prompt_indices():
    def sample(index):
        return GeneratedSample(index, [index], [0.0], str(index), "length")

    merged = merge_outputs([GenerationOutput([sample(0), sample(0), sample(1)]), GenerationOutput([]), GenerationOutput([sample(0)])], [0, 2, 2])
    assert [s.prompt_index for s in merged.samples] == [0, 0, 1, 2]


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    cluster = RayVirtualCluster(ClusterConfig(cpu_slots_per_node=2))
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def group(cluster, tiny_model_dir):
    group = GenerationWorkerGroup(cluster, GenerationConfig(), tiny_model_dir, precision="float32")
    yield group
    group.shutdown()


@pytest.fixture(scope="module")
def local_worker(tiny_model_dir) -> HFGenerationWorker:
    return HFGenerationWorker(tiny_model_dir, GenerationConfig(), precision="float32")


@pytest.fixture(scope="module")
def prompts(local_worker) -> list[list[int]]:
    return [local_worker.tokenizer.encode(text) for text in PROMPT_TEXTS]


def as_tuples(output: GenerationOutput) -> list[tuple[int, list[int], str]]:
    return [(s.prompt_index, s.response_token_ids, s.finish_reason) for s in output.samples]


def test_group_returns_prompts_in_order(group, local_worker, prompts):
    assert group.world_size == 2
    output = group.generate(GenerationRequest(prompts, GREEDY))
    assert [s.prompt_index for s in output.samples] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # each prompt's greedy answer is the single worker's answer for it, whichever worker ran it
    for index, prompt in enumerate(prompts):
        [expected] = local_worker.generate(GenerationRequest([prompt], GREEDY.greedy())).samples
        for sample in output.samples[2 * index : 2 * index + 2]:
            assert sample.response_token_ids == expected.response_token_ids
            assert sample.response_logprobs == pytest.approx(expected.response_logprobs, abs=1e-4)


def test_fewer_prompts_than_workers(group, prompts):
    output = group.generate(GenerationRequest(prompts[:1], SamplingParams(temperature=1.0, max_new_tokens=3, n=3, seed=1)))
    assert [s.prompt_index for s in output.samples] == [0, 0, 0]
    assert group.generate(GenerationRequest([], GREEDY)).samples == []


def test_invalid_sampling_fails_on_the_driver(group, prompts):
    with pytest.raises(ValueError, match="n=0 must be >= 1"):
        group.generate(GenerationRequest(prompts, SamplingParams(n=0)))


class DriverPolicyGroup:
    """Stands in for PolicyWorkerGroup: puts HF-named buckets of a model's weights in the object store."""

    def __init__(self, model_dir: str):
        from nemo_distill.models.loading import load_causal_lm

        self.state = load_causal_lm(model_dir).state_dict()

    def export_weight_buckets(self, bucket_bytes: int) -> list:
        import ray

        return [ray.put(bucket) for bucket in bucket_state_dict(self.state.items(), bucket_bytes)]


def test_refit_loads_new_weights_into_every_worker(group, prompts, tmp_path_factory, tiny_model_dir):
    from nemo_distill.models.tiny import build_tiny_model

    other_dir = build_tiny_model(tmp_path_factory.mktemp("tiny_refit"), seed=2)
    expected = HFGenerationWorker(other_dir, GenerationConfig(), precision="float32").generate(GenerationRequest(prompts, GREEDY))
    before = group.generate(GenerationRequest(prompts, GREEDY))
    assert as_tuples(before) != as_tuples(expected)

    stats = refit_generation_from_policy(DriverPolicyGroup(other_dir), group, bucket_mb=1)
    assert stats.num_buckets > 1 and stats.num_tensors == len(DriverPolicyGroup(other_dir).state)
    assert as_tuples(group.generate(GenerationRequest(prompts, GREEDY))) == as_tuples(expected)

    refit_generation_from_policy(DriverPolicyGroup(tiny_model_dir), group, bucket_mb=64)  # back, for later tests
    assert as_tuples(group.generate(GenerationRequest(prompts, GREEDY))) == as_tuples(before)


def test_sleep_wake_reach_every_worker(group, prompts):
    group.sleep()
    group.wake_up()
    events = group.get_lifecycle_events()
    assert len(events) == 2 and all(worker_events[-2:] == ["sleep", "wake_up"] for worker_events in events)
    assert group.peak_memory_gib() == [0.0, 0.0]  # CPU


def test_vllm_backend_needs_gpus(cluster, tiny_model_dir):
    with pytest.raises(ValueError, match="backend=vllm needs GPUs"):
        GenerationWorkerGroup(cluster, GenerationConfig(backend="vllm"), tiny_model_dir)


@pytest.mark.gpu
def test_gpu_colocated_group_matches_a_local_worker(ray_cluster, tiny_model_dir):
    import torch

    if torch.cuda.device_count() < 1:
        pytest.skip("needs a CUDA GPU")
    num_gpus = min(torch.cuda.device_count(), 2)
    cluster = RayVirtualCluster(ClusterConfig(gpus_per_node=num_gpus))  # colocated: 1/3 GPU per role
    try:
        group = GenerationWorkerGroup(cluster, GenerationConfig(), tiny_model_dir, precision="float32")
        try:
            local = HFGenerationWorker(tiny_model_dir, GenerationConfig(), precision="float32")
            prompts = [local.tokenizer.encode(text) for text in PROMPT_TEXTS]
            expected = [local.generate(GenerationRequest([p], GREEDY)).samples for p in prompts]
            group.sleep()
            group.wake_up()
            output = group.generate(GenerationRequest(prompts, GREEDY))
            assert [s.response_token_ids for s in output.samples] == [s.response_token_ids for samples in expected for s in samples]
            assert all(memory > 0 for memory in group.peak_memory_gib())
        finally:
            group.shutdown()
    finally:
        cluster.shutdown()
