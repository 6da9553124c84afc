"""The distillation step's memory moves under ``cluster.offload`` (fake groups, no Ray): ``always``
moves the optimizer, the teacher and the generation weights around the teacher pass in a fixed
order and times each move as ``offload/*``; resident (``never``) moves nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nemo_distill.algorithms import distillation, runtime
from nemo_distill.algorithms.distillation_config import DistillationMasterConfig
from nemo_distill.algorithms.runtime import generation_awake
from nemo_distill.config import ConfigError, apply_overrides, load_config, validate, with_schema_defaults
from nemo_distill.utils.timer import Timer
from test_distillation import BASE_CONFIG


class Recorder:
    """Stands for a worker group: every call is appended to the shared ``events`` list."""

    def __init__(self, name: str, events: list[str]):
        self.name, self.events = name, events

    def __getattr__(self, method: str):
        return lambda *args, **kwargs: self.events.append(f"{self.name}.{method}")


def _run_two_steps(monkeypatch, offload_each_step: bool) -> tuple[list[str], list[dict]]:
    cfg = with_schema_defaults(load_config(BASE_CONFIG), DistillationMasterConfig)
    cfg = validate(cfg, DistillationMasterConfig)
    events: list[str] = []
    timings: list[dict] = []
    rt = SimpleNamespace(cfg=cfg, loop=cfg.distillation, timer=Timer(), train_loader=iter([[], []]), policy=Recorder("policy", events),
                         frozen=Recorder("teacher", events), generation=Recorder("generation", events),
                         offload_each_step=offload_each_step, environment=None, tokenizer=SimpleNamespace(pad_token_id=0))
    rollouts = SimpleNamespace(token_batch=SimpleNamespace(extras={}), response_lengths=[1], metrics={})

    def fake_steps(rt, desc):
        for step in (1, 2):
            rt.timer.reset()
            yield step

    monkeypatch.setattr(distillation, "training_steps", fake_steps)
    # sampling goes through runtime.sample_rollouts: refit when stale, then generate inside generation_awake
    monkeypatch.setattr(runtime, "refit_if_stale", lambda rt: events.append("refit"))
    monkeypatch.setattr(runtime, "generate_rollouts", lambda *a, **k: (events.append("generate"), rollouts)[1])
    monkeypatch.setattr(distillation, "teacher_topk_for_rollouts", lambda rt, r, step: (events.append("teacher_topk"), ({}, {}))[1])
    monkeypatch.setattr(distillation, "train_policy", lambda rt, batch, loss: events.append("train"))
    monkeypatch.setattr(distillation, "train_metrics", lambda rt, result: {})
    monkeypatch.setattr(distillation, "generation_throughput", lambda rt, lengths: {})
    monkeypatch.setattr(distillation, "sample_rows", lambda r: [])
    monkeypatch.setattr(distillation, "finish_step", lambda rt, step, metrics, rows: timings.append(rt.timer.metrics(prefix="t")))
    assert runtime.generation_awake is generation_awake  # the real wake/sleep logic runs
    distillation.train(rt)
    return events, timings


def test_always_moves_every_role_in_order_and_times_each_move(monkeypatch):
    events, timings = _run_two_steps(monkeypatch, offload_each_step=True)
    one_step = ["refit", "generation.wake_up", "generate", "generation.sleep",
                "policy.offload_optimizer", "teacher.onload_to_device", "teacher_topk",
                "teacher.offload_to_cpu", "policy.onload_optimizer", "train"]
    assert events == one_step * 2
    moves = {"t/offload/generation_wake_up", "t/offload/generation_sleep", "t/offload/optimizer_to_cpu",
             "t/offload/teacher_to_gpu", "t/offload/teacher_to_cpu", "t/offload/optimizer_to_gpu"}
    for timing in timings:
        assert moves <= set(timing), sorted(timing)


def test_resident_roles_move_nothing(monkeypatch):
    events, timings = _run_two_steps(monkeypatch, offload_each_step=False)
    assert events == ["refit", "generate", "teacher_topk", "train"] * 2
    assert not any("offload" in name for timing in timings for name in timing)


def test_offload_setting_is_checked_by_the_schema():
    cfg = with_schema_defaults(load_config(BASE_CONFIG), DistillationMasterConfig)
    assert validate(apply_overrides(cfg, ["cluster.offload=never"]), DistillationMasterConfig).cluster.offload == "never"
    with pytest.raises(ConfigError, match="cluster.offload"):
        validate(apply_overrides(cfg, ["cluster.offload=sometimes"]), DistillationMasterConfig)
