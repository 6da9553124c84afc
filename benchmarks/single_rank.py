"""The environment of a one-rank ``torch.distributed`` job on this host, for benchmarks that build a
``PolicyWorker`` (or call ``init_process_group``) outside Ray."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def single_rank_env() -> dict[str, str]:
    """``RANK`` / ``WORLD_SIZE`` / ``LOCAL_*`` / ``MASTER_*`` of rank 0 of 1, on a free local port."""
    return {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
