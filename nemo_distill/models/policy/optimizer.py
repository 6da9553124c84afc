"""The trainer's AdamW: one place that builds it from ``policy.optimizer`` (worker start and ``reset``).

``implementation`` picks the kernel. The training step is launch-bound for small models (the
profile in docs/performance.md: more CPU time launching kernels than GPU time running them), and
the default multi-tensor AdamW still launches a handful of kernels per parameter group; the fused
kernel updates every parameter in one launch. ``auto`` uses it when the parameters live on a GPU
(FSDP2 shards are DTensors there, which the fused kernel takes) and the multi-tensor path elsewhere
(CPU-offloaded shards, the CPU demo), where it is the long-tested default.
"""

from __future__ import annotations

import torch

from nemo_distill.models.policy.config import OptimizerConfig


def resolve_implementation(requested: str, parameters: list[torch.nn.Parameter]) -> str:
    """``fused`` / ``foreach`` / ``for_loop`` for ``requested`` (``auto`` decided by the parameters' device)."""
    if requested != "auto":
        return requested
    on_gpu = bool(parameters) and all(param.device.type == "cuda" for param in parameters)
    return "fused" if on_gpu else "foreach"


def build_adamw(parameters: list[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.AdamW:
    """AdamW over ``parameters`` with ``cfg``'s hyper-parameters and kernel (see :func:`resolve_implementation`).

    The kernel changes only how the update is computed, not its value or the optimizer's state
    dict, so a checkpoint written with one loads with any other.
    """
    implementation = resolve_implementation(cfg.implementation, parameters)
    kernel = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False, "fused": False}}[implementation]
    return torch.optim.AdamW(parameters, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, **kernel)
