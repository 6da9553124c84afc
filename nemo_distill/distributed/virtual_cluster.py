"""Placement groups per node and the slots each role runs on."""

from __future__ import annotations

from dataclasses import dataclass

from nemo_distill.distributed.config import ROLES, ClusterConfig

# A CPU-mode slot reserves this much CPU per role so a 2-core machine can host every role's workers.
CPU_SLOT_SHARE = 0.1


@dataclass
class Slot:
    placement_group: object  # ray.util.placement_group.PlacementGroup
    bundle_index: int
    node_index: int
    slot_id: int  # global: node_index * slots_per_node + local index
    gpu_fraction: float  # GPU to request: 1 / (roles sharing this slot); 0 in CPU mode
    cpu_fraction: float


class RayVirtualCluster:
    """One STRICT_PACK placement group per node, ``slots_per_node`` bundles each."""

    def __init__(self, cfg: ClusterConfig, *, ready_timeout_s: float = 120.0):
        import ray
        from ray.util.placement_group import placement_group

        self.cfg = cfg
        gpu_mode = cfg.gpus_per_node > 0
        bundle = {"GPU": 1, "CPU": 1} if gpu_mode else {"CPU": CPU_SLOT_SHARE * len(ROLES)}
        self.placement_groups = [
            placement_group([dict(bundle) for _ in range(cfg.slots_per_node)], strategy="STRICT_PACK", name=f"nemo_distill_node{n}")
            for n in range(cfg.num_nodes)
        ]
        ready = [pg.ready() for pg in self.placement_groups]
        done, _ = ray.wait(ready, num_returns=len(ready), timeout=ready_timeout_s)
        if len(done) != len(ready):
            self.shutdown()
            raise RuntimeError(
                f"Ray could not reserve {cfg.num_nodes} node(s) x {cfg.slots_per_node} slot(s) of {bundle} within "
                f"{ready_timeout_s:.0f}s; cluster resources: {ray.cluster_resources()} (check cluster.num_nodes, cluster.gpus_per_node)"
            )
        sharing = {slot: sum(slot in cfg.role_slot_ids(role) for role in ROLES) for slot in range(cfg.num_slots)}
        self._slots = {}
        for role in ROLES:
            slots = []
            for slot_id in cfg.role_slot_ids(role):
                node, local = divmod(slot_id, cfg.slots_per_node)
                share = max(sharing[slot_id], 1)
                slots.append(Slot(self.placement_groups[node], local, node, slot_id,
                                  gpu_fraction=(1.0 / share) if gpu_mode else 0.0,
                                  cpu_fraction=(1.0 / share) if gpu_mode else CPU_SLOT_SHARE))
            self._slots[role] = slots

    def slots(self, role: str) -> list[Slot]:
        if role not in self._slots:
            raise ValueError(f"role '{role}' is not one of {ROLES}")
        return list(self._slots[role])

    def num_slots(self, role: str) -> int:
        return len(self.slots(role))

    @property
    def uses_gpus(self) -> bool:
        return self.cfg.gpus_per_node > 0

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for pg in self.placement_groups:
            try:
                remove_placement_group(pg)
            except Exception:  # already gone with the cluster
                pass
        self.placement_groups = []
