"""End to end: train a real policy group, refit a real generation group, compare log-probs.

CPU (in CI): 2 FSDP2 trainer ranks and 2 generation workers on separate slots, refit by
``broadcast`` (a gloo group of its own) and by ``object_store``. GPU (``-m gpu``): ``cuda_ipc``
with trainer and generation on the same GPU, and ``broadcast`` over NCCL where 2 GPUs exist.

After a train step and a refit, the log-probs the generation engine reports for its own sampled
tokens must equal the policy's log-probs of the same tokens: tolerance 2e-4 (fp32 both sides;
the engine decodes with a KV cache, the policy runs one full forward, so the sums differ in
order). Before the refit they must NOT match: the step changed the weights.
"""

from __future__ import annotations

import sys

import pytest
import torch

from nemo_distill.data.collate import build_token_batch
from nemo_distill.distributed.config import ClusterConfig
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.interfaces import GenerationRequest, SamplingParams
from nemo_distill.models.generation.refit import WeightRefitter
from nemo_distill.models.policy.config import OptimizerConfig, PolicyConfig

LOGPROB_TOLERANCE = 2e-4
PROMPTS = [[1, 17, 300, 42], [5, 6, 7], [900, 901, 902, 903, 904], [11, 12]]
SAMPLING = SamplingParams(temperature=1.0, max_new_tokens=6, n=1, seed=3)


class ResponseNLLLoss:
    """Mean -log p of the response tokens over all ranks (what the train step minimises)."""

    def __call__(self, logits: torch.Tensor, batch, *, counts) -> tuple[torch.Tensor, dict[str, float]]:
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
        mask = batch.valid_target_tokens()[:, 1:]
        return -(logprobs * mask).sum() / counts.tokens, {}


def max_logprob_gap(policy, generation, pad_token_id: int) -> float:
    """Sample with the generation group, score the same tokens with the policy: the largest |difference|."""
    output = generation.generate(GenerationRequest(PROMPTS, SAMPLING))
    responses = [sample.response_token_ids for sample in output.samples]
    batch, prompt_lengths = build_token_batch(PROMPTS, responses, pad_token_id=pad_token_id)
    policy_logprobs = policy.get_logprobs(batch)
    gap = 0.0
    for row, (sample, start) in enumerate(zip(output.samples, prompt_lengths)):
        scored = policy_logprobs[row, start : start + len(sample.response_token_ids)]
        gap = max(gap, (scored - torch.tensor(sample.response_logprobs)).abs().max().item())
    return gap


def run_refits(cluster_cfg: ClusterConfig, model_dir: str, transports: list[str]) -> dict[str, float]:
    """One train step before each refit; the gap before the first refit and after each one."""
    import ray.cloudpickle

    from nemo_distill.distributed.virtual_cluster import RayVirtualCluster
    from nemo_distill.models.generation.group import GenerationWorkerGroup
    from nemo_distill.models.policy.group import PolicyWorkerGroup

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test loss travels by value
    cluster = RayVirtualCluster(cluster_cfg)
    policy = generation = None
    gaps: dict[str, float] = {}
    try:
        policy_cfg = PolicyConfig(model_name=model_dir, precision="float32", train_global_batch_size=4,
                                  train_micro_batch_size=2, optimizer=OptimizerConfig(lr=3e-3))
        policy = PolicyWorkerGroup(cluster, policy_cfg)
        generation = GenerationWorkerGroup(cluster, GenerationConfig(), model_dir, precision="float32")
        train_batch, _ = build_token_batch(PROMPTS, [[20, 21, 22, 23]] * len(PROMPTS), pad_token_id=0)
        for index, transport in enumerate(transports):
            policy.train(train_batch, ResponseNLLLoss())
            if index == 0:
                gaps["stale"] = max_logprob_gap(policy, generation, pad_token_id=0)
            refitter = WeightRefitter(policy, generation, bucket_mb=1, transport=transport, cluster=cluster_cfg)
            refitter.refit()
            refitter.refit()  # a second refit reuses the layouts and, for broadcast, the open group
            gaps[f"{index}:{transport}"] = max_logprob_gap(policy, generation, pad_token_id=0)
    finally:
        for group in (generation, policy):
            if group is not None:
                group.shutdown()
        cluster.shutdown()
    return gaps


def check_gaps(gaps: dict[str, float]) -> None:
    assert gaps.pop("stale") > 10 * LOGPROB_TOLERANCE, "the train step did not change the weights: the test proves nothing"
    for name, gap in gaps.items():
        assert gap < LOGPROB_TOLERANCE, f"after refit by {name}: generation and policy log-probs differ by {gap:.2e}"


def test_cpu_broadcast_and_object_store_refits_match_the_policy(ray_cluster, tiny_model_dir):
    cluster_cfg = ClusterConfig(cpu_slots_per_node=4, colocated=False, trainer_gpu_ids=[0, 1], inference_gpu_ids=[2, 3],
                                teacher_gpu_ids=[2])
    check_gaps(run_refits(cluster_cfg, tiny_model_dir, ["broadcast", "object_store"]))


@pytest.mark.gpu
def test_gpu_cuda_ipc_refit_on_a_shared_gpu(ray_cluster, tiny_model_dir):
    if torch.cuda.device_count() < 1:
        pytest.skip("needs a GPU")
    check_gaps(run_refits(ClusterConfig(gpus_per_node=1), tiny_model_dir, ["cuda_ipc", "object_store"]))


@pytest.mark.gpu
def test_gpu_nccl_broadcast_refit_to_another_gpu(ray_cluster, tiny_model_dir):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    cluster_cfg = ClusterConfig(gpus_per_node=2, colocated=False, trainer_gpu_ids=[0], inference_gpu_ids=[1], teacher_gpu_ids=[1])
    check_gaps(run_refits(cluster_cfg, tiny_model_dir, ["broadcast", "object_store"]))
