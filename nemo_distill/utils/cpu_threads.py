"""Intra-op threads for CPU workers.

Ray caps ``OMP_NUM_THREADS`` at an actor's CPU request (1 for our fractional CPU slots). Roles run
one after another within a step, so on a CPU machine each worker may use every core while it is
busy, shared only with the other ranks of its own group (they run at the same time);
``NEMO_DISTILL_CPU_THREADS`` overrides the count. ``PolicyWorker`` and ``HFGenerationWorker`` call
:func:`configure_cpu_threads` when they start on CPU (measured in docs/performance.md, CPU section).
"""

from __future__ import annotations

import os

import torch


def configure_cpu_threads(concurrent_workers: int = 1, *, limit: int | None = None) -> int:
    """Set torch's intra-op threads for a CPU worker; return the count (no-op with CUDA).

    ``concurrent_workers``: processes of the same group on this machine that compute at the same
    time (the ranks of one policy): the cores are split between them. ``limit``: at most this many
    (generation: decoding is thousands of small ops, each a barrier for all threads, and one
    descheduled thread on a busy machine stalls them all: measured 7.5 s -> 52-59 s per demo step).
    """
    if torch.cuda.is_available():
        return torch.get_num_threads()
    default = len(os.sched_getaffinity(0)) // max(1, concurrent_workers)
    default = min(default, limit) if limit else default
    threads = int(os.environ.get("NEMO_DISTILL_CPU_THREADS", default))
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()
