"""``GenerationWorkerGroup``: rollouts spread over the ``inference`` slots, results in prompt order.

One backend worker per inference slot, each a full model replica (data parallel). A request's
prompts are split into contiguous, balanced chunks (sizes differ by at most one), one per
worker; every prompt's ``n`` samples stay on one worker, and the outputs are merged back
prompt-major with global prompt indices.
"""

from __future__ import annotations

from typing import Any

from nemo_distill.distributed.virtual_cluster import RayVirtualCluster
from nemo_distill.distributed.worker_group import RayWorkerGroup
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.hf_backend import HFGenerationWorker
from nemo_distill.models.generation.interfaces import GeneratedSample, GenerationOutput, GenerationRequest, WeightUpdateStats
from nemo_distill.models.generation.vllm_backend import VllmGenerationWorker
from nemo_distill.models.loading import TokenizerConfig

# ``policy.generation.backend`` -> worker class (both import their engines lazily, in the worker).
GENERATION_BACKENDS: dict[str, type] = {"hf": HFGenerationWorker, "vllm": VllmGenerationWorker}


def split_evenly(num_items: int, num_parts: int) -> list[tuple[int, int]]:
    """``num_parts`` contiguous ``(start, stop)`` ranges covering ``range(num_items)``, sizes within one."""
    base, extra = divmod(num_items, num_parts)
    ranges, start = [], 0
    for part in range(num_parts):
        stop = start + base + (1 if part < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


def merge_outputs(outputs: list[GenerationOutput], starts: list[int]) -> GenerationOutput:
    """Concatenate per-worker outputs, shifting each worker's local prompt indices by its ``start``."""
    samples: list[GeneratedSample] = []
    for output, start in zip(outputs, starts):
        for sample in output.samples:
            sample.prompt_index += start
            samples.append(sample)
    return GenerationOutput(samples=samples)


class GenerationWorkerGroup:
    """Typed driver handle on the generation workers (``policy.generation``)."""

    def __init__(
        self,
        cluster: RayVirtualCluster,
        cfg: GenerationConfig,
        model_name: str,
        *,
        tokenizer_cfg: TokenizerConfig | None = None,
        precision: str = "auto",
    ):
        if cfg.backend not in GENERATION_BACKENDS:
            raise ValueError(f"policy.generation.backend '{cfg.backend}' is not one of {sorted(GENERATION_BACKENDS)}")
        if cfg.backend == "vllm" and not cluster.uses_gpus:
            raise ValueError("policy.generation.backend=vllm needs GPUs (cluster.gpus_per_node > 0); use backend=hf on CPU")
        self.cfg = cfg
        self.workers = RayWorkerGroup(
            cluster,
            "inference",
            GENERATION_BACKENDS[cfg.backend],
            actor_kwargs={"model_name": model_name, "cfg": cfg, "precision": precision, "tokenizer_cfg": tokenizer_cfg},
        )

    @property
    def world_size(self) -> int:
        return self.workers.world_size

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        """All ``n`` samples of every prompt, prompt-major, prompt indices into ``request``'s prompts."""
        request.sampling.validate()  # fail on the driver before any worker starts
        ranges = split_evenly(len(request.prompt_token_ids), self.world_size)
        chunks = [GenerationRequest(request.prompt_token_ids[start:stop], request.sampling) for start, stop in ranges]
        outputs = self.workers.call_sharded("generate", chunks)
        return merge_outputs(outputs, [start for start, _ in ranges])

    def update_weights_from_refs(self, refs: list[Any]) -> WeightUpdateStats:
        """Every worker loads the buckets behind ``refs``; returns rank 0's stats (all load the same)."""
        return self.workers.call_all("update_weights_from_refs", refs)[0]

    def sleep(self) -> None:
        self.workers.call_all("sleep")

    def wake_up(self) -> None:
        self.workers.call_all("wake_up")

    def get_lifecycle_events(self) -> list[list[str]]:
        """Each worker's sleep / wake_up history (for call-order tests)."""
        return self.workers.call_all("get_lifecycle_events")

    def get_generate_calls(self) -> list[int]:
        """Each worker's generate-call counter (saved in checkpoints: it drives the per-call seed)."""
        return self.workers.call_all("get_generate_calls")

    def set_generate_calls(self, counts: list[int]) -> None:
        """Restore every worker's counter from :meth:`get_generate_calls` of the run being resumed."""
        if len(counts) != self.world_size:
            raise ValueError(f"{len(counts)} saved generate-call counters for {self.world_size} generation workers; "
                             "resume with the same number of inference slots")
        self.workers.call_sharded("set_generate_calls", list(counts))

    def peak_memory_gib(self) -> list[float]:
        return self.workers.call_all("peak_memory_gib")

    def shutdown(self) -> None:
        self.workers.shutdown()
