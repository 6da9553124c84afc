"""Ray actors for one role, wired for ``torch.distributed``, with errors that name role and rank.

Every actor is a :class:`WorkerHost` process holding one plain worker object (``PolicyWorker``,
``HFGenerationWorker``, ...). Start-up has two phases so that ``torch.distributed`` can be set up
inside the worker's constructor:

1. start the hosts (one per slot of the role); rank 0 reports its node IP and a free port;
2. construct the worker objects in all hosts *concurrently* (a constructor that calls
   ``init_process_group`` blocks until every rank has joined), with this environment:

   ================== ============================================================================
   ``RANK``           rank in the group (= index of the slot in ``cluster.slots(role)``)
   ``WORLD_SIZE``     number of workers in the group
   ``LOCAL_RANK``     index of the worker's device among those visible to it: always ``0`` on GPU
                      (Ray sets ``CUDA_VISIBLE_DEVICES`` to the slot's one GPU, so use ``cuda:0``);
                      in CPU mode the worker's index among the group's workers on its node
   ``MASTER_ADDR``    rank 0's node IP
   ``MASTER_PORT``    a port that was free on rank 0's node
   ``NEMO_DISTILL_ROLE`` the role (``trainer``, ``teacher``, ``inference``)
   ================== ============================================================================

   In CPU mode (``cluster.gpus_per_node == 0``) workers also get ``CUDA_VISIBLE_DEVICES=""``.

Calls never hang on a dead worker: results are collected with ``ray.wait`` in a poll loop and the
first failure raises at once, even while other ranks are still blocked in a collective that
the failed rank will never join. A dead process raises :class:`WorkerDiedError` (and the group
refuses further calls: its surviving ranks may be stuck); a method that raised comes back as
:class:`WorkerCallError` carrying the remote traceback, and is also an instance of the original
exception's type when possible (``except ValueError`` still works).

Calls that depend on each other across groups (the two ends of a weight broadcast) are started
with ``submit_all`` / ``submit_rank`` and collected together by :func:`wait_all`, with the same
fail-fast rule over all of them.

Typed groups (``PolicyWorkerGroup``, ``GenerationWorkerGroup``) wrap this class so that callers
never touch Ray.

Test hook: with ``NEMO_DISTILL_TEST_KILL_WORKER_AT_CALL=role:rank:method:n`` in the driver's
environment (forwarded to every worker by ``init_ray``), the worker of that role and rank SIGKILLs
itself when ``method`` is called for the ``n``-th time (e.g. ``trainer:0:train:2``: in the second
training step). The reliability tests use it to kill a worker mid-step; it is never set otherwise.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from nemo_distill.distributed.config import Role
from nemo_distill.distributed.virtual_cluster import RayVirtualCluster
from nemo_distill.utils.logging_setup import LOG_LEVEL_ENV, configure_logging

log = logging.getLogger(__name__)

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours its remote tracebacks
TEST_KILL_ENV = "NEMO_DISTILL_TEST_KILL_WORKER_AT_CALL"  # test hook, see the module docstring
POLL_INTERVAL_S = 0.5  # how often a waiting call wakes up (keeps Ctrl-C responsive)
STARTUP_TIMEOUT_S = 300.0  # a host process that is not running after this long cannot be scheduled


class WorkerDiedError(RuntimeError):
    """A worker process died (killed, OOM, crashed node) while the driver waited on it."""

    def __init__(self, role: str, rank: int, detail: str):
        self.role = role
        self.rank = rank
        super().__init__(f"{role} worker rank {rank} died: {detail}")


class WorkerCallError(RuntimeError):
    """A worker's method (or constructor) raised. ``cause`` is the original exception.

    The message names role, rank and method and ends with the remote traceback.
    """

    def __init__(self, role: str, rank: int, method: str, cause: BaseException | None, remote_traceback: str):
        self.role = role
        self.rank = rank
        self.method = method
        self.cause = cause
        cause_text = f"{type(cause).__name__}: {cause}" if cause is not None else "error"
        RuntimeError.__init__(self, f"{role} worker rank {rank} failed in {method}(): {cause_text}\n{remote_traceback}")

    def __str__(self) -> str:  # the dual classes below may inherit another __str__
        return RuntimeError.__str__(self)


_DUAL_CLASSES: dict[type, type] = {}


def _call_error(role: str, rank: int, method: str, cause: BaseException | None, remote_traceback: str) -> WorkerCallError:
    """A :class:`WorkerCallError` that is also an instance of ``type(cause)`` when Python allows it."""
    cause_type = type(cause) if cause is not None else None
    if cause_type is not None and cause_type not in _DUAL_CLASSES:
        try:
            _DUAL_CLASSES[cause_type] = type(f"WorkerCallError[{cause_type.__name__}]", (WorkerCallError, cause_type), {})
        except TypeError:  # incompatible layouts (e.g. OSError subclasses): plain WorkerCallError
            _DUAL_CLASSES[cause_type] = WorkerCallError
    error_type = _DUAL_CLASSES.get(cause_type, WorkerCallError) if cause_type is not None else WorkerCallError
    try:
        # The cause's own __new__ (not RuntimeError's): OSError and its subclasses have a
        # different C layout, and Python refuses RuntimeError.__new__ on such a dual class.
        error = (cause_type or WorkerCallError).__new__(error_type)
    except Exception:  # a Python-level __new__ that needs arguments: give up the dual type
        error_type = _DUAL_CLASSES[cause_type] = WorkerCallError
        error = WorkerCallError.__new__(WorkerCallError)
    WorkerCallError.__init__(error, role, rank, method, cause, remote_traceback)
    if isinstance(cause, OSError) and isinstance(error, OSError):
        # ``except FileNotFoundError as e: e.filename`` keeps working on the driver
        error.errno, error.strerror, error.filename, error.filename2 = cause.errno, cause.strerror, cause.filename, cause.filename2
    return error


class WorkerHost:
    """The body of every actor: sets the environment, builds one worker object, calls its methods."""

    def __init__(self, env: dict[str, str]):
        from nemo_distill.distributed.tensor_serialization import register_tensor_serializer  # imports torch

        os.environ.update(env)
        register_tensor_serializer()  # what this actor returns or passes on travels as raw bytes
        self.worker: Any = None
        self._test_kill: tuple[str, int] | None = None  # (method, n): see TEST_KILL_ENV
        self._calls: Counter[str] = Counter()

    def node_ip_and_free_port(self) -> tuple[str, int]:
        import ray

        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def construct(self, env: dict[str, str], worker_cls: type, worker_kwargs: dict[str, Any]) -> int:
        """Build the worker object with the rank environment in place; return this process's pid."""
        os.environ.update(env)
        configure_logging()
        self._test_kill = parse_test_kill(os.environ.get(TEST_KILL_ENV, ""), os.environ.get("NEMO_DISTILL_ROLE", ""),
                                          int(os.environ.get("RANK", "-1")))
        self.worker = worker_cls(**worker_kwargs)
        return os.getpid()

    def call(self, method: str, packed: tuple[tuple, dict]) -> Any:
        self._count_call(method)
        args, kwargs = packed
        return getattr(self.worker, method)(*args, **kwargs)

    def call_with_first(self, method: str, first: Any, packed: tuple[tuple, dict]) -> Any:
        self._count_call(method)
        args, kwargs = packed
        return getattr(self.worker, method)(first, *args, **kwargs)

    def _count_call(self, method: str) -> None:
        self._calls[method] += 1
        if self._test_kill == (method, self._calls[method]):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


def parse_test_kill(spec: str, role: str, rank: int) -> tuple[str, int] | None:
    """``(method, n)`` when ``spec`` (``role:rank:method:n``, see :data:`TEST_KILL_ENV`) targets this worker."""
    if not spec:
        return None
    parts = spec.split(":")
    if len(parts) != 4 or not parts[1].isdigit() or not parts[3].isdigit():
        raise ValueError(f"{TEST_KILL_ENV}={spec!r}: expected role:rank:method:n, e.g. trainer:0:train:2")
    target_role, target_rank, method, n = parts
    return (method, int(n)) if (target_role, int(target_rank)) == (role, rank) else None


def _local_ranks(node_ids: list[str]) -> list[int]:
    """Index of each worker among the workers on the same node, in rank order."""
    seen: Counter[str] = Counter()
    local = []
    for node in node_ids:
        local.append(seen[node])
        seen[node] += 1
    return local


@dataclass
class PendingCall:
    """A method started on some ranks of a group and not yet waited for (see :func:`wait_all`)."""

    group: "RayWorkerGroup"
    method: str
    refs: list[Any]
    ranks: list[int]


def wait_all(*calls: PendingCall, timeout_s: float | None = None) -> list[list[Any]]:
    """The results of every call, each in its rank order; the FIRST failure in any group raises at once.

    Waiting on calls of several groups together is what makes calls that depend on each other
    (the two ends of a broadcast) safe: a failure on one side cannot leave the driver blocked
    on the other. ``timeout_s`` raises ``TimeoutError(stuck_ranks)``.
    """
    import ray

    owner = {ref: (call, rank) for call in calls for ref, rank in zip(call.refs, call.ranks)}
    results: dict[Any, Any] = {}
    pending = list(owner)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=POLL_INTERVAL_S)
        for ref in ready:
            call, rank = owner[ref]
            results[ref] = call.group._get(ref, rank, call.method)
        if deadline is not None and pending and time.monotonic() > deadline:
            raise TimeoutError(sorted(owner[ref][1] for ref in pending))
    return [[results[ref] for ref in call.refs] for call in calls]


class RayWorkerGroup:
    """``world_size`` actors hosting ``actor_cls(**actor_kwargs)``, one per slot of ``role``.

    ``actor_cls`` is a plain class; it is pickled by reference, so it must be importable in the
    workers (everything under ``nemo_distill`` is: ``init_ray`` puts the repo on their
    ``PYTHONPATH``). ``env_vars`` are added to every worker's environment.
    """

    def __init__(
        self,
        cluster: RayVirtualCluster,
        role: Role,
        actor_cls: type,
        *,
        actor_kwargs: dict[str, Any],
        env_vars: dict[str, str] | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ):
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.role = role
        self.actor_name = actor_cls.__name__
        self._died: WorkerDiedError | None = None
        slots = cluster.slots(role)
        if not slots:
            raise ValueError(f"role '{role}' has no slots in this cluster (check cluster.{role}_gpu_ids)")
        self.world_size = len(slots)
        # the driver's log level travels explicitly: on a Slurm cluster the actors do not inherit its environment
        forwarded = {LOG_LEVEL_ENV: os.environ[LOG_LEVEL_ENV]} if LOG_LEVEL_ENV in os.environ else {}
        base_env = {**forwarded, **(env_vars or {}), "NEMO_DISTILL_ROLE": role}
        if not cluster.uses_gpus:
            # CPU mode means CPU even on a GPU machine: Ray leaves a worker that asked for no GPU
            # with every GPU visible, and torch would pick one up.
            base_env["CUDA_VISIBLE_DEVICES"] = ""
        remote_host = ray.remote(WorkerHost)
        self._actors = [
            remote_host.options(
                num_cpus=slot.num_cpus,
                num_gpus=slot.gpu_fraction,
                max_restarts=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=slot.placement_group, placement_group_bundle_index=slot.bundle_index
                ),
            ).remote(base_env)
            for slot in slots
        ]
        try:
            node_ids = self._wait([actor.node_id.remote() for actor in self._actors], "start", timeout_s=startup_timeout_s)
            master_addr, master_port = self._wait([self._actors[0].node_ip_and_free_port.remote()], "node_ip_and_free_port", ranks=[0])[0]
            local_ranks = [0] * self.world_size if cluster.uses_gpus else _local_ranks(node_ids)
            construct_refs = []
            for rank, actor in enumerate(self._actors):
                rank_env = {
                    "RANK": str(rank),
                    "WORLD_SIZE": str(self.world_size),
                    "LOCAL_RANK": str(local_ranks[rank]),
                    "MASTER_ADDR": master_addr,
                    "MASTER_PORT": str(master_port),
                }
                construct_refs.append(actor.construct.remote(rank_env, actor_cls, actor_kwargs))
            self.pids: list[int] = self._wait(construct_refs, f"{self.actor_name}.__init__")
        except BaseException:
            # Surviving ranks may be blocked in init_process_group waiting for the failed one.
            self.shutdown()
            raise
        log.info("started %d %s worker(s) of %s", self.world_size, role, self.actor_name)

    # -- waiting -------------------------------------------------------------------------------

    def _wait(self, refs: list, method: str, *, ranks: list[int] | None = None, timeout_s: float | None = None) -> list[Any]:
        """Results of ``refs`` (one per rank) in order; the first failure raises immediately."""
        import ray

        ranks = list(range(len(refs))) if ranks is None else ranks
        try:
            return wait_all(PendingCall(self, method, list(refs), ranks), timeout_s=timeout_s)[0]
        except TimeoutError as err:
            raise TimeoutError(
                f"{self.role} worker rank(s) {err.args[0]} did not start within {timeout_s:.0f} s: Ray cannot schedule them "
                f"(resources: {ray.available_resources()})"
            ) from None

    def _get(self, ref: Any, rank: int, method: str) -> Any:
        import ray
        from ray import exceptions as ray_errors

        died_types = (ray_errors.RayActorError, ray_errors.WorkerCrashedError, ray_errors.NodeDiedError, ray_errors.OutOfMemoryError)
        try:
            return ray.get(ref)
        except ray_errors.RayTaskError as err:
            # Checked first: a RayTaskError may also be an instance of its cause's type.
            cause = err.cause if isinstance(err.cause, BaseException) else None
            if isinstance(cause, died_types):  # the worker called another actor that died
                raise self._mark_died(rank, f"while running {method}(): {cause}") from err
            remote_traceback = "remote traceback:\n" + _ANSI_ESCAPE.sub("", str(err))
            raise _call_error(self.role, rank, method, cause, remote_traceback) from err
        except died_types as err:
            raise self._mark_died(rank, f"while running {method}(): {err}") from err

    def _mark_died(self, rank: int, detail: str) -> WorkerDiedError:
        self._died = WorkerDiedError(self.role, rank, detail)
        return self._died

    def _check_alive(self) -> None:
        if not self._actors:
            raise RuntimeError(f"the {self.role} worker group has been shut down")
        if self._died is not None:
            raise WorkerDiedError(
                self._died.role, self._died.rank, f"earlier, so this {self.role} group is unusable (shut it down): {self._died}"
            )

    # -- calls ---------------------------------------------------------------------------------

    def submit_all(self, method: str, *args: Any, **kwargs: Any) -> PendingCall:
        """Start ``method(*args, **kwargs)`` on every worker without waiting (collect with :func:`wait_all`).

        The arguments are stored in Ray's object store once and shared by all workers.
        """
        import ray

        self._check_alive()
        packed = ray.put((args, kwargs))
        return PendingCall(self, method, [actor.call.remote(method, packed) for actor in self._actors], list(range(self.world_size)))

    def submit_rank(self, rank: int, method: str, *args: Any, **kwargs: Any) -> PendingCall:
        """Start ``method(*args, **kwargs)`` on worker ``rank`` only, without waiting."""
        self._check_alive()
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is out of range for the {self.role} group of {self.world_size} worker(s)")
        return PendingCall(self, method, [self._actors[rank].call.remote(method, (args, kwargs))], [rank])

    def call_all(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """``method(*args, **kwargs)`` on every worker; results in rank order."""
        return wait_all(self.submit_all(method, *args, **kwargs))[0]

    def call_sharded(
        self, method: str, shards: list[Any], *, shard_of_rank: Callable[[int], int] | None = None, **kwargs: Any
    ) -> list[Any]:
        """Worker ``r`` runs ``method(shards[shard_of_rank(r)], **kwargs)``; results in rank order.

        ``shard_of_rank`` defaults to the identity (then ``len(shards)`` must equal ``world_size``);
        ranks mapped to the same shard (e.g. tensor-parallel peers) share one stored copy.
        """
        import ray

        self._check_alive()
        shard_of_rank = shard_of_rank or (lambda rank: rank)
        indices = [shard_of_rank(rank) for rank in range(self.world_size)]
        bad = [(rank, index) for rank, index in enumerate(indices) if not 0 <= index < len(shards)]
        if bad:
            raise ValueError(f"call_sharded({method!r}): shard_of_rank maps (rank, shard) {bad} outside the {len(shards)} shards given")
        shard_refs = {index: ray.put(shards[index]) for index in sorted(set(indices))}
        packed = ray.put(((), kwargs))
        refs = [actor.call_with_first.remote(method, shard_refs[indices[rank]], packed) for rank, actor in enumerate(self._actors)]
        return self._wait(refs, method)

    def call_rank(self, rank: int, method: str, *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` on worker ``rank`` only."""
        return wait_all(self.submit_rank(rank, method, *args, **kwargs))[0][0]

    def node_ip_and_free_port(self, rank: int = 0) -> tuple[str, int]:
        """An address other processes can rendezvous at on ``rank``'s node (e.g. a second process group)."""
        self._check_alive()
        return self._wait([self._actors[rank].node_ip_and_free_port.remote()], "node_ip_and_free_port", ranks=[rank])[0]

    def shutdown(self) -> None:
        """Kill every worker process (idempotent). Blocked or dead workers are fine to kill."""
        import ray

        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as err:  # already dead, or Ray is shutting down
                log.debug("killing a %s worker: %s", self.role, err)
        self._actors = []
