"""``cluster``: how many machines and slots there are, and which role runs on which slot.

A *slot* is one GPU (``gpus_per_node > 0``) or, in CPU mode (``gpus_per_node == 0``), one CPU
worker place. Slots are numbered globally: ``slot_id = node_index * slots_per_node + local_id``.

* ``colocated: true`` (default): the three roles (``inference``, ``teacher``, ``trainer``)
  time-share every slot, as in NeMo-RL's colocated mode.
* ``colocated: false``: each role gets the slots listed in ``<role>_gpu_ids``; inference and
  teacher may share slots, the trainer has its own. This is what seed 001's launcher flags
  ``--inference_gpu_ids 0,1 --teacher_gpu_ids 2 --trainer_gpu_ids 3`` mean;
  :func:`apply_gpu_id_flags` turns those flags into config overrides.

The ids name slots (placement-group bundles), not physical device numbers: Ray decides which
physical GPU backs each slot and exposes it to the worker as ``cuda:0``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from nemo_distill.config.errors import ConfigError

Role = Literal["inference", "teacher", "trainer"]  # what a worker group does; each role has its own slots
ROLES: tuple[str, ...] = ("inference", "teacher", "trainer")


@dataclass
class ClusterConfig:
    """``cluster``: nodes, slots per node, the role -> slot placement, and (``offload``) whether
    colocated roles move memory off the GPU every step."""

    num_nodes: int = field(default=1, metadata={"ge": 1})  # machines in the Ray cluster used by this run
    gpus_per_node: int = field(default=0, metadata={"ge": 0})  # 0 = CPU mode: every slot is a CPU worker
    cpu_slots_per_node: int = field(default=1, metadata={"ge": 1})  # slots per node in CPU mode (ignored on GPU)
    colocated: bool = True  # all roles time-share every slot; false: place roles with the *_gpu_ids lists
    inference_gpu_ids: list[int] | None = None  # global slot ids of the generation workers (colocated: false)
    teacher_gpu_ids: list[int] | None = None  # global slot ids of the teacher workers (colocated: false)
    trainer_gpu_ids: list[int] | None = None  # global slot ids of the trainer; required when colocated is false
    ray_address: str | None = None  # None: RAY_ADDRESS, else a private local cluster; "auto": a running cluster on this machine
    num_cpus: int | None = field(default=None, metadata={"ge": 1})  # CPUs of a locally started cluster (None: all)
    env_vars: dict[str, str] = field(default_factory=dict)  # extra environment variables for every worker
    inference_dp: int | None = field(default=None, metadata={"ge": 1})  # seed-001 --inference.parallel.dp: checked, inferred when null
    # colocated only. always: every step move the trainer's AdamW moments and the teacher's weights
    # on/off the GPU and sleep/wake generation; never: all resident; auto: decided once at set-up from
    # measured free GPU memory (nemo_distill.distributed.offload). On CPU the moves are no-ops.
    offload: Literal["auto", "always", "never"] = "auto"

    def __post_init__(self) -> None:
        self.check_placement()

    @property
    def slots_per_node(self) -> int:
        """GPUs per node on GPU clusters, ``cpu_slots_per_node`` in CPU mode."""
        return self.gpus_per_node if self.gpus_per_node > 0 else self.cpu_slots_per_node

    @property
    def total_slots(self) -> int:
        return self.num_nodes * self.slots_per_node

    @property
    def uses_gpus(self) -> bool:
        return self.gpus_per_node > 0

    def role_slot_ids(self, role: Role) -> list[int]:
        """Global slot ids ``role`` runs on, in rank order (validated).

        Colocated: every slot. Otherwise the role's ``<role>_gpu_ids``; an unset inference or
        teacher list means "every slot the trainer does not use".
        """
        if role not in ROLES:
            raise ValueError(f"unknown role '{role}'; expected one of {list(ROLES)}")
        self.check_placement()
        if self.colocated:
            return list(range(self.total_slots))
        ids = getattr(self, f"{role}_gpu_ids")
        if ids is None:  # only inference/teacher can get here: the trainer list is required
            trainer = set(self.trainer_gpu_ids or [])
            return [slot for slot in range(self.total_slots) if slot not in trainer]
        return list(ids)

    def check_placement(self) -> None:
        """Raise ``ValueError`` naming the ``cluster.*`` key when the role placement is impossible."""
        total = self.total_slots
        size = (
            f"num_nodes={self.num_nodes} x gpus_per_node={self.gpus_per_node}"
            if self.uses_gpus
            else f"num_nodes={self.num_nodes} x cpu_slots_per_node={self.cpu_slots_per_node} (CPU mode: gpus_per_node=0)"
        )
        given = {role: getattr(self, f"{role}_gpu_ids") for role in ROLES}
        if self.colocated:
            explicit = [f"cluster.{role}_gpu_ids" for role, ids in given.items() if ids is not None]
            if explicit:
                raise ValueError(
                    f"{', '.join(explicit)} set while cluster.colocated is true (colocated roles share every slot); "
                    "set cluster.colocated=false to place roles on explicit slots, or drop the id lists"
                )
            return
        for role, ids in given.items():
            if ids is None:
                continue
            key = f"cluster.{role}_gpu_ids"
            bad = [slot for slot in ids if not 0 <= slot < total]
            if bad:
                hint = "" if self.uses_gpus else "; on a GPU cluster set cluster.gpus_per_node"
                raise ValueError(f"{key}={ids} has ids {bad} out of range: the cluster has {total} slots (0..{total - 1}) from {size}{hint}")
            if len(set(ids)) != len(ids):
                raise ValueError(f"{key}={ids} lists a slot more than once")
        if not given["trainer"]:
            raise ValueError("cluster.trainer_gpu_ids must list at least one slot when cluster.colocated is false")
        trainer = set(given["trainer"])
        for role in ("inference", "teacher"):
            ids = given[role]
            overlap = sorted(trainer & set(ids or []))
            if overlap:
                raise ValueError(
                    f"cluster.trainer_gpu_ids={given['trainer']} overlaps cluster.{role}_gpu_ids={ids} on slots {overlap}; "
                    "the trainer needs its own slots when cluster.colocated is false (inference and teacher may share)"
                )
            if ids is None and len(trainer) == total:
                raise ValueError(
                    f"cluster.{role}_gpu_ids is unset and cluster.trainer_gpu_ids={given['trainer']} takes all {total} slots; "
                    f"list the {role} slots explicitly or add slots"
                )


def parse_gpu_ids(text: str, *, key: str = "gpu ids") -> list[int]:
    """``"0,1"`` / ``"0 1"`` / ``"[0, 1]"`` -> ``[0, 1]``; ``ConfigError`` naming ``key`` otherwise."""
    body = text.strip().removeprefix("[").removesuffix("]")
    parts = [part for part in re.split(r"[,\s]+", body) if part]
    if not parts or not all(part.isdigit() for part in parts):
        raise ConfigError(key, f"expected comma- or space-separated non-negative integers like '0,1', got {text!r}")
    return [int(part) for part in parts]


def apply_gpu_id_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """Turn seed 001's placement flags into config overrides.

    ``--inference_gpu_ids 0,1 --teacher_gpu_ids 2 --trainer_gpu_ids 3`` (also ``--x_gpu_ids 0 1``,
    ``--x_gpu_ids=0,1`` and ``--x-gpu-ids``) -> ``(["cluster.inference_gpu_ids=[0,1]", ...,
    "cluster.colocated=false"], rest_of_argv)``. ``--inference.parallel.dp N`` becomes
    ``cluster.inference_dp=N``, checked against the inference slots. Arguments that are not these
    flags are returned untouched, in order. These are the placement rows of the seed-flag table
    (:data:`nemo_distill.config.seed_flags.SEED_FLAGS`); ``parse_command_line`` translates all of it.
    """
    from nemo_distill.config.seed_flags import PLACEMENT_ROWS, translate_seed_flags  # lazy: seed_flags imports this module

    return translate_seed_flags(argv, rows=PLACEMENT_ROWS, unknown="keep")
