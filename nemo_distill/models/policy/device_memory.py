"""Colocation's side of the policy: moving weights and AdamW moments off the GPU and back, and the
memory figures ``cluster.offload: auto`` decides from.

:class:`DeviceMemoryMixin` gives :class:`~nemo_distill.models.policy.worker.PolicyWorker` its offload /
onload methods (no-ops on CPU, recorded in ``offload_events`` for the call-order tests) and
``device_memory_info``. The worker provides: ``model``, ``optimizer`` (or None), ``device``, ``cfg``
(its ``dtensor_cfg.cpu_offload``), ``offload_events`` and ``trainable_parameters()``.
"""

from __future__ import annotations

import torch

OFFLOAD_EVENTS = ("offload_model", "onload_model", "offload_optimizer", "onload_optimizer")


class HostRows:
    """A ``[B, T, ...]`` result filled a micro-batch of rows at a time by device -> host copies.

    On a GPU the buffer is pinned and every :meth:`put` is an asynchronous copy on the current
    stream, so the host keeps launching the next micro-batch while the last one's rows travel;
    :meth:`result` waits once for all of them. (A ``.cpu()`` per micro-batch would instead stop the
    host until the device is idle, and stage each copy through pageable memory.) Columns a
    micro-batch does not cover (it was trimmed to its longest row) are zero.
    """

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
        self.device = device
        self.buffer = torch.empty(shape, dtype=dtype, pin_memory=device.type == "cuda")  # every row is written
        self.next_row = 0

    def put(self, rows: torch.Tensor) -> None:
        """Append ``[b, t <= T, ...]`` rows (on ``device``, any dtype: converted there first)."""
        count, width = rows.shape[0], rows.shape[1]
        if self.next_row + count > self.buffer.shape[0] or width > self.buffer.shape[1]:
            raise ValueError(f"rows of shape {tuple(rows.shape)} do not fit at row {self.next_row} of a "
                             f"{tuple(self.buffer.shape)} result")
        rows = rows.to(self.buffer.dtype)
        if width < self.buffer.shape[1]:
            # Whole rows, zero-padded on the device: their destination is contiguous. A copy into the
            # strided [:, :width] slice would be staged through pageable memory and block the host.
            padding = [0, 0] * (rows.dim() - 2) + [0, self.buffer.shape[1] - width]
            rows = torch.nn.functional.pad(rows, padding)
        self.buffer[self.next_row:self.next_row + count].copy_(rows.contiguous(), non_blocking=self.device.type == "cuda")
        self.next_row += count

    def result(self) -> torch.Tensor:
        """The filled buffer, once every copy has landed; every row must have been put."""
        if self.next_row != self.buffer.shape[0]:
            raise ValueError(f"{self.next_row} of {self.buffer.shape[0]} rows were put")
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return self.buffer


class DeviceMemoryMixin:
    """Offload / onload and memory figures; mixed into ``PolicyWorker`` (see the module docstring)."""

    def _move_optimizer_state(self, device: torch.device | str) -> None:
        for state in self.optimizer.state.values():
            for name, value in state.items():
                if isinstance(value, torch.Tensor) and name != "step":
                    state[name] = value.to(device, non_blocking=True)

    def offload_to_cpu(self) -> None:
        """Move the (sharded) weights to CPU memory so a colocated role can use the GPU (no-op on CPU)."""
        self.offload_events.append("offload_model")
        if self.device.type == "cuda" and not self.cfg.dtensor_cfg.cpu_offload:
            self.model.to("cpu")
            torch.cuda.empty_cache()

    def onload_to_device(self) -> None:
        self.offload_events.append("onload_model")
        if self.device.type == "cuda" and not self.cfg.dtensor_cfg.cpu_offload:
            self.model.to(self.device)

    def offload_optimizer(self) -> None:
        """Move AdamW moments to CPU memory (e.g. while the teacher scores on the same GPU; no-op on CPU)."""
        self.offload_events.append("offload_optimizer")
        if self.optimizer is not None and self.device.type == "cuda":
            self._move_optimizer_state("cpu")
            torch.cuda.empty_cache()

    def onload_optimizer(self) -> None:
        self.offload_events.append("onload_optimizer")
        if self.optimizer is not None and self.device.type == "cuda" and not self.cfg.dtensor_cfg.cpu_offload:
            self._move_optimizer_state(self.device)

    def device_memory_info(self) -> dict[str, int]:
        """``free_bytes`` / ``total_bytes`` of this rank's GPU (0 on CPU) and ``optimizer_bytes``: the AdamW
        moments (two per trainable element, in the parameter's dtype) this rank holds once training starts."""
        local = [param.to_local() if hasattr(param, "to_local") else param for param in self.trainable_parameters()]
        optimizer_bytes = 2 * sum(t.numel() * t.element_size() for t in local) if self.optimizer is not None else 0
        free, total = torch.cuda.mem_get_info(self.device) if self.device.type == "cuda" else (0, 0)
        return {"free_bytes": int(free), "total_bytes": int(total), "optimizer_bytes": int(optimizer_bytes)}

    def get_offload_events(self) -> list[str]:
        """Offload/onload calls so far, in order (each one of :data:`OFFLOAD_EVENTS`)."""
        return list(self.offload_events)

    def peak_memory_gib(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else 0.0
