"""PolicyWorkerGroup: the driver's typed handle on a student or teacher worker group.

Batches are split by data-parallel rank: ranks that differ only in their tensor-parallel
coordinate get the same shard. Callers never see Ray.
"""

from __future__ import annotations

import torch

from nemo_distill.data.batch import TokenBatch
from nemo_distill.distributed.virtual_cluster import RayVirtualCluster
from nemo_distill.distributed.worker_group import RayWorkerGroup
from nemo_distill.models.policy.config import PolicyConfig, TeacherConfig
from nemo_distill.models.policy.interfaces import LossFunction, TopkLogits, TrainMetrics
from nemo_distill.models.policy.worker import PolicyWorker


class PolicyWorkerGroup:
    def __init__(self, cluster: RayVirtualCluster, cfg: PolicyConfig | TeacherConfig, *, role: str = "trainer",
                 trainable: bool = True, model_name: str | None = None, total_steps: int | None = None):
        self.cfg = cfg
        self.workers = RayWorkerGroup(cluster, role, PolicyWorker, actor_kwargs={
            "cfg": cfg, "model_name": model_name, "trainable": trainable, "total_steps": total_steps,
        })
        self.rank_info = self.workers.call_all("get_rank_info")
        self.dp_size = self.rank_info[0]["dp_size"]

    def _dp_rank(self, rank: int) -> int:
        return self.rank_info[rank]["dp_rank"]

    def _shards(self, batch: TokenBatch) -> list[TokenBatch]:
        if batch.size % self.dp_size:
            raise ValueError(f"a batch of {batch.size} samples does not split over {self.dp_size} data-parallel ranks; "
                             "make the rollout batch (num_prompts_per_step * num_generations_per_prompt) a multiple of it")
        return batch.shard(self.dp_size)

    def _gather_by_dp(self, results: list) -> list:
        """One result per data-parallel rank, in dp order (tp ranks hold copies)."""
        by_dp = {}
        for rank, result in enumerate(results):
            by_dp.setdefault(self._dp_rank(rank), result)
        return [by_dp[dp] for dp in range(self.dp_size)]

    def train(self, batch: TokenBatch, loss_fn: LossFunction) -> TrainMetrics:
        results = self.workers.call_sharded("train", self._shards(batch), shard_of_rank=self._dp_rank, loss_fn=loss_fn)
        first = results[0]
        first.tokens_per_sec = sum(r.tokens_per_sec for r in self._gather_by_dp(results))
        return first

    def get_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        results = self.workers.call_sharded("get_logprobs", self._shards(batch), shard_of_rank=self._dp_rank)
        return torch.cat(self._gather_by_dp(results))

    def get_topk_logits(self, batch: TokenBatch, k: int, temperature: float = 1.0) -> TopkLogits:
        results = self._gather_by_dp(
            self.workers.call_sharded("get_topk_logits", self._shards(batch), shard_of_rank=self._dp_rank, k=k, temperature=temperature)
        )
        seq_len = max(r.values.shape[1] for r in results)
        pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, seq_len - t.shape[1]))  # noqa: E731
        return TopkLogits(values=torch.cat([pad(r.values) for r in results]), indices=torch.cat([pad(r.indices) for r in results]))

    def save_checkpoint(self, path: str) -> None:
        self.workers.call_all("save_checkpoint", path)

    def load_checkpoint(self, path: str) -> None:
        self.workers.call_all("load_checkpoint", path)

    def export_weight_buckets(self, bucket_bytes: int) -> list:
        return [ref for refs in self.workers.call_all("export_weight_buckets", bucket_bytes) for ref in refs]

    def offload_to_cpu(self) -> None:
        self.workers.call_all("offload_to_cpu")

    def onload_to_device(self) -> None:
        self.workers.call_all("onload_to_device")

    def offload_optimizer(self) -> None:
        self.workers.call_all("offload_optimizer")

    def onload_optimizer(self) -> None:
        self.workers.call_all("onload_optimizer")

    def get_offload_events(self) -> list[str]:
        return self.workers.call_rank(0, "get_offload_events")

    def peak_memory_gib(self) -> list[float]:
        return self.workers.call_all("peak_memory_gib")

    def shutdown(self) -> None:
        self.workers.shutdown()
