"""Placement groups per node, and the slots each role runs on.

``RayVirtualCluster`` reserves one ``STRICT_PACK`` placement group per node with one bundle per
slot: ``{"GPU": 1, "CPU": GPU_BUNDLE_CPUS}`` on GPU clusters, ``{"CPU": CPU_BUNDLE_CPUS}`` in CPU
mode. A CPU-mode bundle asks for a fraction of a core on purpose: CPU workers mostly wait on each
other, and a 2-core laptop must host the trainer, teacher and generation workers of several slots.

A slot used by ``k`` roles (colocated: all three) hands each role's worker ``1/k`` of the bundle
(``Slot.gpu_fraction``, ``Slot.num_cpus``): the roles time-share the device, which is what
colocated mode means; Ray only needs the requests to fit in the bundle.

On GPU every node has exactly ``gpus_per_node`` GPUs, so each placement group lands on its own
node; in CPU mode Ray may pack several groups onto one machine, which only matters for speed.
Either way ``cluster.num_nodes`` larger than the number of live Ray nodes is refused before any
placement group or worker starts (:func:`check_node_count`): it is a config mistake, not a wait.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from nemo_distill.config.errors import ConfigError
from nemo_distill.distributed.config import ROLES, ClusterConfig, Role

log = logging.getLogger(__name__)

GPU_BUNDLE_CPUS = 1.0  # host CPU reserved next to each GPU (tokenisation, data movement)
CPU_BUNDLE_CPUS = 0.3  # a CPU-mode slot: 0.1 core for each of the three roles when colocated
PLACEMENT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Slot:
    """Where one worker of a role goes, and what it asks Ray for."""

    placement_group: Any  # ray.util.placement_group.PlacementGroup of the slot's node
    bundle_index: int  # index of the slot's bundle in that placement group (= local slot id)
    node_index: int  # which node (placement group) of the virtual cluster
    slot_id: int  # global: node_index * slots_per_node + bundle_index
    gpu_fraction: float  # GPU to request: 1 / (roles sharing the slot); 0.0 in CPU mode
    num_cpus: float  # CPU to request: the bundle's CPUs / (roles sharing the slot)


def role_sharing_counts(cfg: ClusterConfig) -> dict[int, int]:
    """``{slot_id: number of roles placed on it}`` (0 for unused slots)."""
    counts = dict.fromkeys(range(cfg.total_slots), 0)
    for role in ROLES:
        for slot_id in cfg.role_slot_ids(role):
            counts[slot_id] += 1
    return counts


def plan_slots(cfg: ClusterConfig, placement_groups: list[Any]) -> dict[str, list[Slot]]:
    """The slots of every role, in rank order, on the given per-node placement groups.

    Pure (no Ray calls): tests pass stand-ins for the placement groups.
    """
    if len(placement_groups) != cfg.num_nodes:
        raise ValueError(f"expected {cfg.num_nodes} placement groups (one per node), got {len(placement_groups)}")
    bundle_cpus = GPU_BUNDLE_CPUS if cfg.uses_gpus else CPU_BUNDLE_CPUS
    sharing = role_sharing_counts(cfg)
    plan: dict[str, list[Slot]] = {}
    for role in ROLES:
        slots = []
        for slot_id in cfg.role_slot_ids(role):
            node_index, bundle_index = divmod(slot_id, cfg.slots_per_node)
            share = 1.0 / sharing[slot_id]
            slots.append(
                Slot(
                    placement_group=placement_groups[node_index],
                    bundle_index=bundle_index,
                    node_index=node_index,
                    slot_id=slot_id,
                    gpu_fraction=share if cfg.uses_gpus else 0.0,
                    num_cpus=bundle_cpus * share,
                )
            )
        plan[role] = slots
    return plan


def check_node_count(cfg: ClusterConfig, nodes: list[dict[str, Any]]) -> None:
    """``ConfigError`` on ``cluster.num_nodes`` when the Ray cluster has fewer live nodes (``ray.nodes()``).

    On GPU a node counts only if it has ``gpus_per_node`` GPUs.
    """
    alive = [node for node in nodes if node.get("Alive", node.get("alive", False))]
    if cfg.uses_gpus:
        alive = [node for node in alive if node.get("Resources", {}).get("GPU", 0) >= cfg.gpus_per_node]
    if len(alive) < cfg.num_nodes:
        what = f"node(s) with {cfg.gpus_per_node} GPU(s)" if cfg.uses_gpus else "node(s)"
        raise ConfigError(
            "cluster.num_nodes",
            f"is {cfg.num_nodes} but the Ray cluster has {len(alive)} live {what}; set cluster.num_nodes={max(len(alive), 1)} "
            "or start the run on more machines (e.g. sbatch -N<nodes> ray_bare.sub)",
        )


class RayVirtualCluster:
    """The run's share of the Ray cluster: ``num_nodes`` placement groups of ``slots_per_node`` bundles.

    Needs :func:`~nemo_distill.distributed.ray_init.init_ray` first. Raises ``ValueError`` naming
    the ``cluster.*`` key for an impossible placement, and ``RuntimeError`` listing the Ray
    cluster's resources when the reservation cannot be satisfied.
    """

    def __init__(self, cfg: ClusterConfig, *, placement_timeout_s: float = PLACEMENT_TIMEOUT_S):
        import ray
        from ray.util.placement_group import placement_group

        cfg.check_placement()
        self.cfg = cfg
        bundle = {"GPU": 1, "CPU": GPU_BUNDLE_CPUS} if cfg.uses_gpus else {"CPU": CPU_BUNDLE_CPUS}
        self._check_capacity(bundle, ray.cluster_resources())
        check_node_count(cfg, ray.nodes())
        self.placement_groups: list[Any] = [
            placement_group([dict(bundle) for _ in range(cfg.slots_per_node)], strategy="STRICT_PACK")
            for _ in range(cfg.num_nodes)
        ]
        ready, _ = ray.wait([pg.ready() for pg in self.placement_groups], num_returns=cfg.num_nodes, timeout=placement_timeout_s)
        if len(ready) != cfg.num_nodes:
            self.shutdown()
            raise RuntimeError(
                f"Ray could not reserve {cfg.num_nodes} node(s) x {cfg.slots_per_node} slot(s) of {bundle} within "
                f"{placement_timeout_s:.0f} s; available: {ray.available_resources()}. Another run may hold them, or "
                "cluster.num_nodes / cluster.gpus_per_node do not match the cluster"
            )
        self._slots = plan_slots(cfg, self.placement_groups)
        log.info("virtual cluster: %s", self.describe())

    def _check_capacity(self, bundle: dict[str, float], resources: dict[str, float]) -> None:
        """Fail at once (instead of waiting for the timeout) when the cluster is too small in total."""
        for resource, per_slot in bundle.items():
            needed = per_slot * self.cfg.total_slots
            have = resources.get(resource, 0.0)
            if have + 1e-9 < needed:
                raise RuntimeError(
                    f"the run needs {needed:g} {resource} ({self.cfg.num_nodes} node(s) x {self.cfg.slots_per_node} slot(s) x "
                    f"{per_slot:g}) but the Ray cluster has {have:g}; check cluster.num_nodes / cluster.gpus_per_node / "
                    f"cluster.cpu_slots_per_node (Ray cluster resources: {resources})"
                )

    @property
    def uses_gpus(self) -> bool:
        return self.cfg.uses_gpus

    def slots(self, role: Role) -> list[Slot]:
        """The slots ``role``'s workers run on; rank ``r`` of a worker group uses ``slots(role)[r]``."""
        if role not in self._slots:
            raise ValueError(f"unknown role '{role}'; expected one of {list(ROLES)}")
        return list(self._slots[role])

    def num_slots(self, role: Role) -> int:
        return len(self.slots(role))

    def describe(self) -> str:
        """One line per role: ``trainer: slots [3] (gpu 1.0 each)``."""
        unit = "gpu" if self.uses_gpus else "cpu"
        parts = []
        for role, slots in self._slots.items():
            share = slots[0].gpu_fraction if self.uses_gpus else slots[0].num_cpus
            parts.append(f"{role}: slots {[s.slot_id for s in slots]} ({unit} {share:.3g} each)")
        return "; ".join(parts)

    def shutdown(self) -> None:
        """Release the placement groups (workers on them must be shut down first)."""
        from ray.util.placement_group import remove_placement_group

        for pg in self.placement_groups:
            try:
                remove_placement_group(pg)
            except Exception as err:  # the cluster may already be gone at interpreter exit
                log.debug("could not remove placement group %s: %s", pg, err)
        self.placement_groups = []
