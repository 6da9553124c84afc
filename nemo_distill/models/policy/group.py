"""PolicyWorkerGroup: the driver's typed handle on a student or teacher worker group.

How each method distributes (go-to-definition lands here, not in a Ray proxy):

=====================  ==========================================  ======================================
method                 input                                       output
=====================  ==========================================  ======================================
train                  batch split in dp shards (same shard for    rank 0's TrainMetrics (already reduced
                       ranks differing only in tp/cp)              over dp inside the workers)
get_logprobs           same sharding                               dp shards concatenated -> [B, T]
get_topk_logits        same sharding                               dp shards concatenated -> [B, T, K]
save/load_checkpoint   same path to every rank (a collective)      -
export_weight_buckets  every rank (a collective)                   rank 0's object refs
offload / onload       every rank                                  -
reset                  every rank                                  -
=====================  ==========================================  ======================================
"""

from __future__ import annotations

import torch

from nemo_distill.data.batch import TokenBatch
from nemo_distill.distributed.virtual_cluster import RayVirtualCluster
from nemo_distill.distributed.worker_group import RayWorkerGroup
from nemo_distill.models.policy.config import PolicyConfig, TeacherConfig
from nemo_distill.models.policy.interfaces import LossFunction, RankInfo, TopkLogits, TrainMetrics
from nemo_distill.models.policy.worker import PolicyWorker


class PolicyWorkerGroup:
    """One :class:`PolicyWorker` per cluster slot of ``role``; the slots form the (dp, cp, tp) mesh.

    Args:
        cluster: the Ray virtual cluster.
        cfg: ``policy`` (trainable) or ``teacher`` section.
        role: which slots to use: "trainer" for the student, "teacher" for a teacher.
        trainable: False builds frozen scorers (no optimizer).
        model_name: overrides ``cfg.model_name``.
        init_checkpoint: a policy checkpoint folder every worker restores at start.
        total_steps: cosine horizon when ``cfg.scheduler.total_steps`` is None.
    """

    def __init__(self, cluster: RayVirtualCluster, cfg: PolicyConfig | TeacherConfig, *, role: str = "trainer",
                 trainable: bool = True, model_name: str | None = None, init_checkpoint: str | None = None,
                 total_steps: int | None = None):
        self.cfg = cfg
        self.role = role
        self.workers = RayWorkerGroup(cluster, role, PolicyWorker, actor_kwargs={
            "cfg": cfg, "model_name": model_name, "trainable": trainable,
            "init_checkpoint": init_checkpoint, "total_steps": total_steps,
        })
        self.rank_infos: list[RankInfo] = self.workers.call_all("get_rank_info")
        self.dp_size = self.rank_infos[0].dp_size
        # One reporting rank per dp shard: the tp/cp copies of a shard return the same result.
        self._reporting_rank_of_dp = {}
        for info in self.rank_infos:
            self._reporting_rank_of_dp.setdefault(info.dp_rank, info.rank)

    @property
    def world_size(self) -> int:
        return len(self.rank_infos)

    def _dp_rank(self, rank: int) -> int:
        return self.rank_infos[rank].dp_rank

    def _shards(self, batch: TokenBatch) -> list[TokenBatch]:
        if batch.size % self.dp_size:
            raise ValueError(
                f"a batch of {batch.size} samples does not split evenly over the {self.role} group's {self.dp_size} "
                f"data-parallel ranks; make the batch size (e.g. num_prompts_per_step * num_generations_per_prompt) "
                f"a multiple of {self.dp_size}"
            )
        return batch.shard(self.dp_size)

    def _per_dp_shard(self, results: list) -> list:
        """Results of the reporting rank of dp shards 0, 1, ... in order."""
        return [results[self._reporting_rank_of_dp[dp_rank]] for dp_rank in range(self.dp_size)]

    def train(self, batch: TokenBatch, loss_fn: LossFunction) -> TrainMetrics:
        """One optimizer step on ``batch`` (all samples of the step, split over dp ranks)."""
        results = self.workers.call_sharded("train", self._shards(batch), shard_of_rank=self._dp_rank, loss_fn=loss_fn)
        return results[0]

    def get_logprobs(self, batch: TokenBatch, temperature: float = 1.0, *, targets_only: bool = False) -> torch.Tensor:
        """``[B, T]`` fp32 log-probs of each token given its prefix under softmax(logits / temperature)
        (0 at t=0 and on padding; ``targets_only``: exact on ``loss_mask`` tokens, the prompt's may be 0)."""
        results = self.workers.call_sharded("get_logprobs", self._shards(batch), shard_of_rank=self._dp_rank,
                                            temperature=temperature, targets_only=targets_only)
        return torch.cat(self._per_dp_shard(results))

    def get_topk_logits(self, batch: TokenBatch, k: int, temperature: float = 1.0, *, targets_only: bool = False) -> TopkLogits:
        """``[B, T, k]`` top-k logits / temperature and global ids (row t describes token t + 1;
        ``targets_only``: exact on the rows that predict ``loss_mask`` tokens, the prompt's may be zeros)."""
        results = self._per_dp_shard(self.workers.call_sharded(
            "get_topk_logits", self._shards(batch), shard_of_rank=self._dp_rank, k=k, temperature=temperature,
            targets_only=targets_only))
        return TopkLogits(values=torch.cat([r.values for r in results]), indices=torch.cat([r.indices for r in results]))

    def save_checkpoint(self, path: str, *, save_optimizer: bool = True) -> None:
        self.workers.call_all("save_checkpoint", path, save_optimizer=save_optimizer)

    def load_checkpoint(self, path: str) -> None:
        self.workers.call_all("load_checkpoint", path)

    def export_weight_buckets(self, bucket_bytes: int) -> list:
        """``list[ray.ObjectRef]``, each a ``dict[str, Tensor]`` of HF-named full weights (LoRA merged)."""
        return self.workers.call_all("export_weight_buckets", bucket_bytes)[0]

    def offload_to_cpu(self) -> None:
        self.workers.call_all("offload_to_cpu")

    def onload_to_device(self) -> None:
        self.workers.call_all("onload_to_device")

    def offload_optimizer(self) -> None:
        self.workers.call_all("offload_optimizer")

    def onload_optimizer(self) -> None:
        self.workers.call_all("onload_optimizer")

    def get_offload_events(self) -> list[str]:
        """Rank 0's offload/onload call order (every rank receives the same calls)."""
        return self.workers.call_rank(0, "get_offload_events")

    def peak_memory_gib(self) -> list[float]:
        return self.workers.call_all("peak_memory_gib")

    def reset(self, optimizer_cfg=None, scheduler_cfg=None, total_steps: int | None = None) -> None:
        """Every worker back to its initial weights with a fresh optimizer and schedule (:meth:`PolicyWorker.reset`)."""
        self.workers.call_all("reset", optimizer_cfg=optimizer_cfg, scheduler_cfg=scheduler_cfg, total_steps=total_steps)

    def shutdown(self) -> None:
        self.workers.shutdown()
