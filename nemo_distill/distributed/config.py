"""``cluster:``: how many nodes and slots there are and which role runs where.

A *slot* is one GPU (or, in CPU mode, one CPU worker). Slot ids are global:
``node * slots_per_node + local_id``. Colocated: every role uses every slot (roles time-share
them). Otherwise each role names its slots, as the seed-001 flags do
(``--inference_gpu_ids 0,1 --teacher_gpu_ids 2 --trainer_gpu_ids 3``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("inference", "teacher", "trainer")
GPU_ID_FLAGS = {f"--{role}_gpu_ids": f"cluster.{role}_gpu_ids" for role in ROLES}


@dataclass
class ClusterConfig:
    num_nodes: int = 1
    gpus_per_node: int = 0  # 0 = CPU mode (slots are CPU workers, gloo instead of NCCL)
    cpu_slots_per_node: int = 1  # slots per node in CPU mode
    colocated: bool = True  # every role on every slot, time-sharing them
    inference_gpu_ids: list[int] | None = None  # global slot ids per role when not colocated
    teacher_gpu_ids: list[int] | None = None
    trainer_gpu_ids: list[int] | None = None
    ray_address: str | None = None  # None: RAY_ADDRESS or a running cluster if any, else start a local one
    num_cpus: int | None = None  # CPUs of a local cluster (None: all)
    env_vars: dict[str, str] = field(default_factory=dict)  # extra environment for every worker

    @property
    def slots_per_node(self) -> int:
        return self.gpus_per_node if self.gpus_per_node > 0 else self.cpu_slots_per_node

    @property
    def num_slots(self) -> int:
        return self.num_nodes * self.slots_per_node

    def role_slot_ids(self, role: str) -> list[int]:
        """Global slot ids the role runs on."""
        if role not in ROLES:
            raise ValueError(f"role '{role}' is not one of {ROLES}")
        if self.colocated:
            return list(range(self.num_slots))
        ids = getattr(self, f"{role}_gpu_ids")
        return list(ids) if ids is not None else []

    def __post_init__(self) -> None:
        if self.num_nodes < 1:
            raise ValueError(f"cluster.num_nodes must be >= 1, got {self.num_nodes}")
        if self.gpus_per_node < 0 or self.cpu_slots_per_node < 1:
            raise ValueError("cluster.gpus_per_node must be >= 0 and cluster.cpu_slots_per_node >= 1")
        if self.colocated:
            return
        for role in ROLES:
            ids = getattr(self, f"{role}_gpu_ids") or []
            bad = [i for i in ids if not 0 <= i < self.num_slots]
            if bad:
                raise ValueError(f"cluster.{role}_gpu_ids has ids {bad} outside 0..{self.num_slots - 1} "
                                 f"({self.num_nodes} node(s) x {self.slots_per_node} slot(s))")
            if len(set(ids)) != len(ids):
                raise ValueError(f"cluster.{role}_gpu_ids repeats an id: {ids}")
        if not self.trainer_gpu_ids:
            raise ValueError("cluster.trainer_gpu_ids may not be empty when cluster.colocated is false")
        for role in ("inference", "teacher"):
            if not getattr(self, f"{role}_gpu_ids"):
                raise ValueError(f"cluster.{role}_gpu_ids may not be empty when cluster.colocated is false")
            overlap = set(getattr(self, f"{role}_gpu_ids")) & set(self.trainer_gpu_ids)
            if overlap:
                raise ValueError(f"cluster.trainer_gpu_ids and cluster.{role}_gpu_ids share {sorted(overlap)}; "
                                 "only inference and teacher may share GPUs")


def parse_gpu_ids(text: str) -> list[int]:
    """``"0,1"`` or ``"0 1"`` -> ``[0, 1]``."""
    try:
        return [int(part) for part in text.replace(",", " ").split()]
    except ValueError as err:
        raise ValueError(f"GPU ids must be integers like '0,1', got '{text}'") from err


def apply_gpu_id_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pull the seed-001 ``--<role>_gpu_ids`` flags out of ``argv``; return (overrides, the rest).

    Values may be comma- or space-separated (``--trainer_gpu_ids 3 4``). Any such flag turns
    ``cluster.colocated`` off.
    """
    overrides, rest, position = [], [], 0
    while position < len(argv):
        item = argv[position]
        flag, _, inline = item.partition("=")
        if flag in GPU_ID_FLAGS:
            values = [inline] if inline else []
            position += 1
            while not inline and position < len(argv) and not argv[position].startswith("-") and "=" not in argv[position]:
                values.append(argv[position])
                position += 1
            ids = parse_gpu_ids(" ".join(values))
            if not ids:
                raise ValueError(f"{flag} needs at least one GPU id")
            overrides.append(f"{GPU_ID_FLAGS[flag]}=[{','.join(map(str, ids))}]")
            continue
        rest.append(item)
        position += 1
    if overrides:
        overrides.append("cluster.colocated=false")
    return overrides, rest
