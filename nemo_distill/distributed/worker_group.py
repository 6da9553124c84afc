"""Ray actors for one role, wired for torch.distributed, with errors that name role and rank.

Every actor is a :class:`WorkerHost` process: it learns its rank/world/master environment first,
then constructs the plain worker class (``PolicyWorker``, ``HFGenerationWorker``...) inside the
process. Typed groups (``PolicyWorkerGroup``, ``GenerationWorkerGroup``) wrap this class so that
callers never touch Ray.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable

from nemo_distill.distributed.virtual_cluster import RayVirtualCluster

POLL_INTERVAL_S = 0.5


class WorkerDiedError(RuntimeError):
    """A worker process died (killed, OOM, crash) during a call."""

    def __init__(self, role: str, rank: int, cause: BaseException | str):
        self.role, self.rank = role, rank
        super().__init__(f"{role} worker rank {rank} died: {cause}")


class WorkerCallError(RuntimeError):
    """A worker's method raised; the message carries role, rank and the remote traceback."""

    def __init__(self, role: str, rank: int, method: str, cause: BaseException):
        self.role, self.rank, self.method = role, rank, method
        super().__init__(f"{role} worker rank {rank} failed in {method}(): {cause}")


class WorkerHost:
    """The body of every actor: holds one worker object and calls its methods."""

    def __init__(self) -> None:
        self.worker = None

    def node_ip_and_free_port(self) -> tuple[str, int]:
        import ray

        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def start(self, env: dict[str, str], worker_cls: type, worker_kwargs: dict[str, Any]) -> int:
        os.environ.update(env)
        self.worker = worker_cls(**worker_kwargs)
        return os.getpid()

    def call(self, method: str, *args, **kwargs) -> Any:
        return getattr(self.worker, method)(*args, **kwargs)

    def pid(self) -> int:
        return os.getpid()


class RayWorkerGroup:
    """``world_size`` actors of ``actor_cls`` on the cluster's slots for ``role``.

    Each process gets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``
    (a free port on rank 0's node) and ``NEMO_DISTILL_ROLE``.
    """

    def __init__(self, cluster: RayVirtualCluster, role: str, actor_cls: type, *, actor_kwargs: dict[str, Any],
                 env_vars: dict[str, str] | None = None):
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.role = role
        slots = cluster.slots(role)
        if not slots:
            raise ValueError(f"role '{role}' has no slots in this cluster (check cluster.{role}_gpu_ids)")
        remote_host = ray.remote(WorkerHost)
        self.actors = []
        for rank, slot in enumerate(slots):
            options = dict(
                num_cpus=slot.cpu_fraction,
                num_gpus=slot.gpu_fraction,
                name=None,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=slot.placement_group, placement_group_bundle_index=slot.bundle_index
                ),
            )
            self.actors.append(remote_host.options(**options).remote())
        master_addr, master_port = self._get(self.actors[0].node_ip_and_free_port.remote(), 0, "node_ip_and_free_port")
        self.world_size = len(self.actors)
        start_refs = []
        for rank, actor in enumerate(self.actors):
            env = {
                "RANK": str(rank), "WORLD_SIZE": str(self.world_size), "LOCAL_RANK": "0",
                "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port), "NEMO_DISTILL_ROLE": role,
                **(env_vars or {}),
            }
            start_refs.append(actor.start.remote(env, actor_cls, actor_kwargs))
        self.pids = self._wait_all(start_refs, "start")

    def _get(self, ref, rank: int, method: str) -> Any:
        return self._wait_all([ref], method, ranks=[rank])[0]

    def _wait_all(self, refs: list, method: str, ranks: list[int] | None = None) -> list[Any]:
        """Results in order; the first failing worker raises at once (others may be stuck in a collective)."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

        ranks = ranks if ranks is not None else list(range(len(refs)))
        rank_of = {ref: rank for ref, rank in zip(refs, ranks)}
        results: dict[Any, Any] = {}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=POLL_INTERVAL_S)
            for ref in ready:
                try:
                    results[ref] = ray.get(ref)
                except (ActorDiedError, ActorUnavailableError, RayActorError) as err:
                    if isinstance(err, RayTaskError):
                        raise WorkerCallError(self.role, rank_of[ref], method, err) from err
                    raise WorkerDiedError(self.role, rank_of[ref], err) from err
                except RayTaskError as err:
                    raise WorkerCallError(self.role, rank_of[ref], method, err) from err
        return [results[ref] for ref in refs]

    def call_all(self, method: str, *args, **kwargs) -> list[Any]:
        """``method(*args, **kwargs)`` on every worker; results in rank order."""
        refs = [actor.call.remote(method, *args, **kwargs) for actor in self.actors]
        return self._wait_all(refs, method)

    def call_sharded(self, method: str, shards: list[Any], *, shard_of_rank: Callable[[int], int], **kwargs) -> list[Any]:
        """Worker ``r`` gets ``shards[shard_of_rank(r)]`` as first argument."""
        import ray

        shard_refs = [ray.put(shard) for shard in shards]  # one copy per shard, shared by its ranks
        refs = [actor.call.remote(method, shard_refs[shard_of_rank(rank)], **kwargs) for rank, actor in enumerate(self.actors)]
        return self._wait_all(refs, method)

    def call_rank(self, rank: int, method: str, *args, **kwargs) -> Any:
        return self._get(self.actors[rank].call.remote(method, *args, **kwargs), rank, method)

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # already dead
                pass
        self.actors = []
        time.sleep(0)  # let Ray process the kills before new actors ask for the same bundles
