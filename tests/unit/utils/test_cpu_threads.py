"""CPU worker threads: the cores split over a group's concurrent ranks, an optional limit, the env override."""

from __future__ import annotations

import os

import pytest
import torch

from nemo_distill.utils.cpu_threads import configure_cpu_threads


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    monkeypatch.delenv("NEMO_DISTILL_CPU_THREADS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_split_limit_and_override(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert configure_cpu_threads() == 8
    assert configure_cpu_threads(2) == 4  # two ranks of one group compute at once
    assert configure_cpu_threads(16) == 1  # never zero
    assert configure_cpu_threads(1, limit=1) == 1  # generation
    monkeypatch.setenv("NEMO_DISTILL_CPU_THREADS", "3")
    assert configure_cpu_threads(1, limit=1) == 3  # the user's number wins
