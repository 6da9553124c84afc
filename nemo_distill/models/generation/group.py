"""GenerationWorkerGroup: rollouts spread over the ``inference`` slots, results in prompt order."""

from __future__ import annotations

from nemo_distill.distributed.virtual_cluster import RayVirtualCluster
from nemo_distill.distributed.worker_group import RayWorkerGroup
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.interfaces import GenerationOutput, GenerationRequest
from nemo_distill.models.loading import TokenizerConfig


def backend_class(backend: str) -> type:
    if backend == "hf":
        from nemo_distill.models.generation.hf_backend import HFGenerationWorker

        return HFGenerationWorker
    if backend == "vllm":
        from nemo_distill.models.generation.vllm_backend import VllmGenerationWorker

        return VllmGenerationWorker
    raise ValueError(f"policy.generation.backend '{backend}' is not one of ['hf', 'vllm']")


class GenerationWorkerGroup:
    def __init__(self, cluster: RayVirtualCluster, cfg: GenerationConfig, model_name: str, *,
                 tokenizer_cfg: TokenizerConfig | None = None, precision: str = "auto"):
        self.cfg = cfg
        self.workers = RayWorkerGroup(cluster, "inference", backend_class(cfg.backend), actor_kwargs={
            "model_name": model_name, "cfg": cfg, "precision": precision, "tokenizer_cfg": tokenizer_cfg,
        })

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        """Prompts split into contiguous chunks, one per worker; samples merged back prompt-major."""
        num_workers = self.workers.world_size
        prompts = request.prompt_token_ids
        per_worker = -(-len(prompts) // num_workers)
        starts = list(range(0, len(prompts), per_worker))
        chunks = [GenerationRequest(prompts[start : start + per_worker], request.sampling) for start in starts]
        chunks += [GenerationRequest([], request.sampling)] * (num_workers - len(chunks))
        results = self.workers.call_sharded("generate", chunks, shard_of_rank=lambda rank: rank)
        samples = []
        for start, result in zip(starts, results):
            for sample in result.samples:
                sample.prompt_index += start
                samples.append(sample)
        return GenerationOutput(samples=samples)

    def update_weights_from_refs(self, refs: list) -> int:
        return self.workers.call_all("update_weights_from_refs", refs)[0]

    def sleep(self) -> None:
        self.workers.call_all("sleep")

    def wake_up(self) -> None:
        self.workers.call_all("wake_up")

    def peak_memory_gib(self) -> list[float]:
        return self.workers.call_all("peak_memory_gib")

    def shutdown(self) -> None:
        self.workers.shutdown()
