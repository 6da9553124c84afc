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
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

OffloadMode = Literal["auto", "always", "never"]
OFFLOAD_MODES: tuple[str, ...] = ("auto", "always", "never")
AUTO_RESERVE_FRACTION = 0.4  # of each GPU's memory kept free for activations, logits, KV cache


def fits_resident(free_bytes: int, total_bytes: int, optimizer_bytes: int, *, reserve_fraction: float = AUTO_RESERVE_FRACTION) -> bool:
    """True when ``optimizer_bytes`` more still leave ``reserve_fraction`` of ``total_bytes`` free."""
    return free_bytes - optimizer_bytes >= reserve_fraction * total_bytes


def resolve_offload(mode: str, *, colocated: bool, uses_gpus: bool,
                    memory: Callable[[], Sequence[dict[str, int]]] | None = None) -> bool:
    """Whether the colocated roles move on/off the GPU every step (``True`` = today's ``always``).

    Args:
        mode: ``cluster.offload``.
        memory: called only for ``auto`` on colocated GPUs: one dict per trainer rank with
            ``free_bytes``, ``total_bytes`` (``torch.cuda.mem_get_info``) and ``optimizer_bytes``
            (the AdamW moments that rank will hold); see ``PolicyWorker.device_memory_info``.
    """
    if mode not in OFFLOAD_MODES:
        raise ValueError(f"cluster.offload={mode!r}: expected one of {list(OFFLOAD_MODES)}")
    if not colocated:
        return False
    if mode != "auto":
        return mode == "always"
    if not uses_gpus or memory is None:
        return True  # CPU: the moves are no-ops; keep the call pattern
    return not all(fits_resident(info["free_bytes"], info["total_bytes"], info["optimizer_bytes"]) for info in memory())
