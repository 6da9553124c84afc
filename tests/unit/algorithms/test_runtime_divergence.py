"""Divergence in the shared runtime: lr=inf is a config error (exit 2), consecutive skipped steps stop
the run, a skipped step keeps generation fresh, and a checkpoint never carries a non-finite metric."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from nemo_distill.algorithms.runtime import TrainingDivergedError, save_checkpoint, train_metrics, train_policy
from nemo_distill.models.policy.interfaces import TrainMetrics
from nemo_distill.utils.checkpoint import CheckpointingConfig, CheckpointManager

REPO = Path(__file__).resolve().parents[3]
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("script", ["run_distillation.py", "run_grpo.py"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", ".inf"])
def test_infinite_or_nan_lr_is_a_config_error_with_exit_2(script, value):
    # no --print-config: the real entry point must stop before any data, model or Ray is touched
    result = subprocess.run([sys.executable, str(REPO / "examples" / script), f"policy.optimizer.lr={value}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.startswith("error: config key 'policy.optimizer.lr'"), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


class FakePolicy:
    """A policy group whose ``train`` reports the given losses (NaN/inf = a skipped step)."""

    def __init__(self, losses: list[float]):
        self.losses = list(losses)
        self.calls = 0

    def train(self, batch, loss_fn) -> TrainMetrics:
        loss = self.losses[self.calls]
        self.calls += 1
        return TrainMetrics(loss=loss, grad_norm=1.0, lr=1e-3, num_valid_tokens=8.0, skipped=not math.isfinite(loss))


def _fake_runtime(losses: list[float], limit: int) -> SimpleNamespace:
    return SimpleNamespace(policy=FakePolicy(losses), cfg=SimpleNamespace(policy=SimpleNamespace(max_consecutive_skipped_steps=limit)),
                           skipped_steps=0, consecutive_skipped_steps=0, generation_is_stale=False, num_trainer_workers=1,
                           policy_version=0)


def test_n_consecutive_skipped_steps_stop_the_run_naming_the_setting():
    rt = _fake_runtime([1.0, NAN, INF, NAN], limit=3)
    train_policy(rt, None, None)
    assert rt.generation_is_stale  # a real step changed the weights
    rt.generation_is_stale = False
    for expected_run in (1, 2):
        assert train_policy(rt, None, None).skipped
        assert rt.consecutive_skipped_steps == expected_run and not rt.generation_is_stale  # weights did not change
    with pytest.raises(TrainingDivergedError, match=r"3 consecutive steps .*policy\.max_consecutive_skipped_steps=3.*policy\.optimizer\.lr"):
        train_policy(rt, None, None)
    assert rt.skipped_steps == 3


def test_a_finite_step_resets_the_run_of_skips_but_not_the_total():
    rt = _fake_runtime([NAN, NAN, 1.0, NAN, NAN, 0.5], limit=3)
    results = [train_policy(rt, None, None) for _ in range(6)]
    assert [r.skipped for r in results] == [True, True, False, True, True, False]
    assert rt.consecutive_skipped_steps == 0 and rt.skipped_steps == 4
    assert train_metrics(rt, results[-1])["train/skipped_steps"] == 4.0


def test_limit_one_stops_at_the_first_skip():
    rt = _fake_runtime([NAN], limit=1)
    with pytest.raises(TrainingDivergedError):
        train_policy(rt, None, None)


class FakeCheckpointedPolicy:
    def save_checkpoint(self, path: str) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "weights.bin").write_bytes(b"\0" * 16)


def test_save_checkpoint_leaves_non_finite_metrics_out_and_stays_strict_json(tmp_path):
    checkpoints = CheckpointManager(CheckpointingConfig(enabled=True, checkpoint_dir=str(tmp_path / "ckpt"), keep_top_k=None))
    rt = SimpleNamespace(checkpoints=checkpoints, policy=FakeCheckpointedPolicy(), config_yaml="a: 1\n",
                         train_loader=SimpleNamespace(state_dict=lambda: {"epoch": 0, "position": 4}), run_dir=tmp_path / "run",
                         skipped_steps=2, generation=None, prefetch=None)
    metrics = {"train/loss": NAN, "train/grad_norm": INF, "validation/accuracy": -INF, "train/lr": 1e-3, "train/skipped_steps": 2.0}
    path = save_checkpoint(rt, 3, metrics)
    text = (path / "training_info.json").read_text()
    info = json.loads(text, parse_constant=lambda token: pytest.fail(f"non-JSON token {token}"))
    assert info["step"] == 3 and info["skipped_steps"] == 2 and info["train/lr"] == 1e-3
    assert not {"train/loss", "train/grad_norm", "validation/accuracy"} & set(info)
    assert checkpoints.latest_valid_checkpoint() == path
