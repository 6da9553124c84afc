"""Intra-op threads for CPU workers.

Ray caps ``OMP_NUM_THREADS`` at an actor's CPU request (1 for our fractional CPU slots). Roles run
one after another within a step, so on a CPU machine each worker may use every core while it is
busy; ``NEMO_DISTILL_CPU_THREADS`` overrides the count.
"""

from __future__ import annotations

import os

import torch


def configure_cpu_threads() -> int:
    """Set torch's intra-op threads for a CPU worker; return the count (no-op with CUDA)."""
    if torch.cuda.is_available():
        return torch.get_num_threads()
    threads = int(os.environ.get("NEMO_DISTILL_CPU_THREADS", len(os.sched_getaffinity(0))))
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()
