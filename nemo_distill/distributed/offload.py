"""``cluster.offload``: whether colocated roles move memory on and off the GPU every step.

Colocated (``cluster.colocated: true``), the three roles share each GPU. ``always`` moves, every
step, the trainer's AdamW moments to CPU and back around the teacher, the teacher's weights onto the
GPU and back, and puts the generation workers to sleep after sampling. ``never`` keeps all of it
resident. ``auto`` decides once, at set-up, from the GPU memory measured then (all three roles'
weights are already loaded; the AdamW moments are not, AdamW creates them at the first step):

    resident  <=>  free - adam_moments >= AUTO_RESERVE_FRACTION * total

on the tightest rank: the reserve is left for activations, logits, the KV cache and the allocator.
On CPU every move is a no-op, so ``auto`` keeps the ``always`` call pattern (nothing is moved).
Not colocated, each role has its own GPUs and nothing moves whatever the setting.

Colocated ``overlap_generation`` (generation of step n+1 while step n is scored and trained) needs
every role resident, since the roles then run at once: ``resident_required=True`` makes ``auto``
resolve to resident (also on CPU) or fail with :class:`ResidentMemoryError` when the measured
memory does not allow it; ``always`` is refused earlier, by the config check.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

OffloadMode = Literal["auto", "always", "never"]
OFFLOAD_MODES: tuple[str, ...] = ("auto", "always", "never")
AUTO_RESERVE_FRACTION = 0.4  # of each GPU's memory kept free for activations, logits, KV cache


def fits_resident(free_bytes: int, total_bytes: int, optimizer_bytes: int, *, reserve_fraction: float = AUTO_RESERVE_FRACTION) -> bool:
    """True when ``optimizer_bytes`` more still leave ``reserve_fraction`` of ``total_bytes`` free."""
    return free_bytes - optimizer_bytes >= reserve_fraction * total_bytes


class ResidentMemoryError(RuntimeError):
    """The roles must stay resident (colocated ``overlap_generation``) but the GPU memory does not allow it."""


def resolve_offload(mode: str, *, colocated: bool, uses_gpus: bool,
                    memory: Callable[[], Sequence[dict[str, int]]] | None = None, resident_required: bool = False) -> bool:
    """Whether the colocated roles move on/off the GPU every step (``True`` = today's ``always``).

    Args:
        mode: ``cluster.offload``.
        memory: called only for ``auto`` on colocated GPUs: one dict per trainer rank with
            ``free_bytes``, ``total_bytes`` (``torch.cuda.mem_get_info``) and ``optimizer_bytes``
            (the AdamW moments that rank will hold); see ``PolicyWorker.device_memory_info``.
        resident_required: the roles run at once (colocated ``overlap_generation``), so nothing may
            move: ``always`` is a ValueError, and ``auto`` that measures too little free memory a
            :class:`ResidentMemoryError` naming the tightest rank.
    """
    if mode not in OFFLOAD_MODES:
        raise ValueError(f"cluster.offload={mode!r}: expected one of {list(OFFLOAD_MODES)}")
    if not colocated:
        return False
    if resident_required and mode == "always":
        raise ValueError("cluster.offload=always moves the roles every step, but overlap_generation runs them at once")
    if mode != "auto":
        return mode == "always"
    if not uses_gpus or memory is None:
        return not resident_required  # CPU: the moves are no-ops; keep the call pattern unless the roles overlap
    infos = list(memory())
    fits = [fits_resident(info["free_bytes"], info["total_bytes"], info["optimizer_bytes"]) for info in infos]
    if resident_required and not all(fits):
        tight = min(infos, key=lambda info: info["free_bytes"] - info["optimizer_bytes"])
        gib = 2**30
        raise ResidentMemoryError(
            f"overlap_generation on colocated GPUs keeps every role resident, but a trainer rank has "
            f"{tight['free_bytes'] / gib:.1f} GiB free of {tight['total_bytes'] / gib:.1f} GiB before its AdamW moments "
            f"({tight['optimizer_bytes'] / gib:.1f} GiB), under the {AUTO_RESERVE_FRACTION:.0%} reserve cluster.offload=auto "
            "keeps for activations and the KV cache; set cluster.offload=never to try anyway, place the roles on "
            "separate GPUs (cluster.colocated=false), or set overlap_generation=false"
        )
    return not all(fits)
