"""Atomic step_N checkpoints: latest detection, crash leftovers, re-saves, top-k pruning."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from nemo_distill.utils.checkpoint import (
    MANIFEST,
    TRAINING_INFO,
    CheckpointingConfig,
    CheckpointManager,
    CorruptCheckpointError,
    NonFiniteCheckpointError,
)


def _manager(tmp_path, **overrides) -> CheckpointManager:
    return CheckpointManager(CheckpointingConfig(**{"enabled": True, "checkpoint_dir": str(tmp_path / "ckpt"), **overrides}))


def _save(manager: CheckpointManager, step: int, **info) -> None:
    tmp_dir = manager.start(step)
    (tmp_dir / "weights.bin").write_bytes(bytes([step % 256]) * 8)
    manager.finalize(step, tmp_dir, {"step": step, **info})


def _steps(manager: CheckpointManager) -> list[int]:
    return [step for step, _ in manager.complete_checkpoints()]


def test_config_defaults_and_checks():
    cfg = CheckpointingConfig()
    assert (cfg.enabled, cfg.checkpoint_dir, cfg.save_period, cfg.keep_top_k, cfg.metric_name, cfg.higher_is_better, cfg.on_corrupt) == (
        False, "results/checkpoints", 10, 3, None, True, "fallback"
    )
    with pytest.raises(ValueError, match="save_period must be >= 1"):
        CheckpointingConfig(save_period=0)
    with pytest.raises(ValueError, match="keep_top_k must be >= 1 or null"):
        CheckpointingConfig(keep_top_k=0)


def test_should_save_every_period_and_at_the_end(tmp_path):
    manager = _manager(tmp_path, save_period=3)
    assert [s for s in range(1, 11) if manager.should_save(s, is_last=(s == 10))] == [3, 6, 9, 10]


def test_finalize_writes_info_and_renames_atomically(tmp_path):
    manager = _manager(tmp_path, keep_top_k=None)
    assert manager.latest_checkpoint() is None  # no directory yet
    tmp_dir = manager.start(4)
    assert tmp_dir.name == "tmp_step_4" and tmp_dir.is_dir() and not any(tmp_dir.iterdir())
    (tmp_dir / "weights.bin").write_bytes(b"w")
    assert manager.latest_checkpoint() is None  # not finished: invisible to resume
    final = manager.finalize(4, tmp_dir, {"step": 4, "dataloader": {"epoch": 0}})
    assert final == tmp_path / "ckpt" / "step_4"
    assert not tmp_dir.exists()
    assert (final / "weights.bin").read_bytes() == b"w"
    assert manager.load_training_info(final) == {"step": 4, "dataloader": {"epoch": 0}}
    assert manager.latest_checkpoint() == final


def test_latest_uses_the_step_number_not_names_or_mtimes(tmp_path):
    manager = _manager(tmp_path, keep_top_k=None)
    for step in (2, 10, 9):  # step_10 sorts before step_9 as text
        _save(manager, step)
    root = tmp_path / "ckpt"
    (root / "tmp_step_50").mkdir()  # crash leftover, even with an info file
    (root / "tmp_step_50" / TRAINING_INFO).write_text("{}")
    (root / "step_40").mkdir()  # a step dir without training_info.json is incomplete
    (root / "notes.txt").write_text("x")
    assert manager.latest_checkpoint() == root / "step_10"
    assert _steps(manager) == [2, 9, 10]


def test_stale_temp_dirs_are_cleaned_on_the_next_start(tmp_path):
    manager = _manager(tmp_path)
    root = tmp_path / "ckpt"
    stale = root / "tmp_step_7"
    stale.mkdir(parents=True)
    (stale / "half.bin").write_bytes(b"half")
    (root / "tmp_step_3").mkdir()
    fresh = manager.start(7)
    assert fresh == stale and not any(fresh.iterdir())
    assert not (root / "tmp_step_3").exists()


def test_resaving_a_step_replaces_it(tmp_path):
    manager = _manager(tmp_path)
    _save(manager, 5, tag="old")
    _save(manager, 5, tag="new")
    root = tmp_path / "ckpt"
    assert manager.load_training_info(root / "step_5")["tag"] == "new"
    assert sorted(p.name for p in root.iterdir()) == ["step_5"]


def test_interrupted_swap_restores_the_old_checkpoint(tmp_path):
    manager = _manager(tmp_path)
    _save(manager, 5, tag="old")
    root = tmp_path / "ckpt"
    # Simulate a crash between the two renames of a re-save: old moved aside, new not in place yet.
    os.replace(root / "step_5", root / "old_step_5")
    (root / "tmp_step_5").mkdir()
    assert manager.latest_checkpoint() == root / "step_5"
    assert manager.load_training_info(root / "step_5")["tag"] == "old"
    assert not (root / "old_step_5").exists()


def test_finished_swap_leftover_aside_copy_is_deleted(tmp_path):
    manager = _manager(tmp_path)
    _save(manager, 5, tag="new")
    root = tmp_path / "ckpt"
    (root / "old_step_5").mkdir()
    (root / "old_step_5" / TRAINING_INFO).write_text(json.dumps({"tag": "old"}))
    manager.start(6)
    assert not (root / "old_step_5").exists()
    assert manager.load_training_info(root / "step_5")["tag"] == "new"


def test_keep_most_recent_without_a_metric(tmp_path):
    manager = _manager(tmp_path, keep_top_k=2)
    for step in range(1, 6):
        _save(manager, step)
    assert _steps(manager) == [4, 5]


def test_keep_all_when_top_k_is_none(tmp_path):
    manager = _manager(tmp_path, keep_top_k=None, metric_name="validation/accuracy")
    for step in range(1, 6):
        _save(manager, step, **{"validation/accuracy": 0.1 * step})
    assert _steps(manager) == [1, 2, 3, 4, 5]


# accuracy per step: best are 2 (0.9) and 4 (0.8); step 6 is the latest and always kept.
ACCURACY = {1: 0.5, 2: 0.9, 3: 0.1, 4: 0.8, 5: 0.3, 6: 0.2}


@pytest.mark.parametrize("higher_is_better, expected", [(True, [2, 4, 6]), (False, [3, 5, 6])])
def test_top_k_by_metric_in_both_directions(tmp_path, higher_is_better, expected):
    manager = _manager(tmp_path, keep_top_k=3, metric_name="validation/accuracy", higher_is_better=higher_is_better)
    for step, accuracy in ACCURACY.items():
        _save(manager, step, **{"validation/accuracy": accuracy})
    assert _steps(manager) == expected


def test_pruning_after_each_save_matches_a_brute_force_reference(tmp_path):
    """After every save, the kept set is: the latest + the best (keep-1) of the rest by metric, ties to newer."""
    values = [0.3, 0.3, 0.7, 0.1, 0.7, 0.2, 0.9, 0.3]
    manager = _manager(tmp_path, keep_top_k=3, metric_name="m")
    alive: dict[int, float] = {}
    for step, value in enumerate(values, start=1):
        _save(manager, step, m=value)
        alive[step] = value
        if len(alive) > 3:
            others = sorted((s for s in alive if s != step), key=lambda s: (alive[s], s), reverse=True)[:2]
            alive = {s: alive[s] for s in [*others, step]}
        assert _steps(manager) == sorted(alive), f"after saving step {step}"


def test_missing_or_nan_metric_counts_as_worst_but_latest_stays(tmp_path):
    manager = _manager(tmp_path, keep_top_k=2, metric_name="validation/accuracy", higher_is_better=False)
    _save(manager, 1, **{"validation/accuracy": 5.0})
    _save(manager, 2)  # no validation this step
    step_3 = tmp_path / "ckpt" / "step_3"  # written by an older version, which allowed NaN in the info
    step_3.mkdir()
    (step_3 / TRAINING_INFO).write_text('{"validation/accuracy": NaN}')
    _save(manager, 4)  # latest, metric missing: still kept
    assert _steps(manager) == [1, 4]


# -- manifests: damaged checkpoints are named and skipped before any worker starts -----------------

# The files a real step_N holds (see algorithms/distillation.py save_checkpoint and policy/checkpointing.py).
REAL_LAYOUT = {
    "policy/dcp/__0_0.distcp": 64,
    "policy/dcp/.metadata": 16,
    "policy/extra/rng_rank_0.pt": 32,
    "policy/extra/scheduler.json": 8,
    "policy/model/model.safetensors": 128,
    "policy/policy_info.json": 8,
    "config.yaml": 8,
}


def _save_real_layout(manager: CheckpointManager, step: int) -> Path:
    tmp_dir = manager.start(step)
    for relative, size in REAL_LAYOUT.items():
        (tmp_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_dir / relative).write_bytes(bytes([step]) * size)
    return manager.finalize(step, tmp_dir, {"step": step, "train/loss": 0.5})


def test_manifest_lists_every_file_with_size_and_hash(tmp_path):
    manager = _manager(tmp_path)
    final = _save_real_layout(manager, 1)
    manifest = json.loads((final / MANIFEST).read_text())
    assert sorted(manifest["files"]) == sorted([*REAL_LAYOUT, TRAINING_INFO])
    expected = hashlib.sha256(bytes([1]) * 128).hexdigest()
    assert manifest["files"]["policy/model/model.safetensors"] == {"size": 128, "sha256": expected}
    assert manager.verify(final) is None and not (final / f"{MANIFEST}.tmp").exists()


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


@pytest.mark.parametrize("relative", [TRAINING_INFO, "policy/dcp/__0_0.distcp", "policy/extra/rng_rank_0.pt",
                                      "policy/model/model.safetensors", MANIFEST])
def test_a_truncated_file_in_the_newest_checkpoint_is_named_and_resume_falls_back(tmp_path, caplog, relative):
    manager = _manager(tmp_path, keep_top_k=None)
    _save_real_layout(manager, 1)
    newest = _save_real_layout(manager, 2)
    _truncate(newest / relative)
    with caplog.at_level(logging.WARNING, logger="nemo_distill.utils.checkpoint"):
        assert manager.latest_valid_checkpoint() == tmp_path / "ckpt" / "step_1"
    assert "checkpoint step_2 is damaged" in caplog.text and str(newest) in caplog.text
    assert (relative if relative != MANIFEST else "manifest.json") in caplog.text
    assert manager.latest_checkpoint() == tmp_path / "ckpt" / "step_1"  # the same check


def test_a_corrupted_file_of_the_same_size_fails_the_hash(tmp_path, caplog):
    manager = _manager(tmp_path, keep_top_k=None)
    _save_real_layout(manager, 1)
    newest = _save_real_layout(manager, 2)
    (newest / "policy/model/model.safetensors").write_bytes(b"\0" * 128)
    assert manager.latest_valid_checkpoint() == tmp_path / "ckpt" / "step_1"
    assert "model.safetensors does not match its sha256" in caplog.text


def test_on_corrupt_error_refuses_to_resume_and_names_the_step(tmp_path):
    manager = _manager(tmp_path, keep_top_k=None, on_corrupt="error")
    _save_real_layout(manager, 1)
    newest = _save_real_layout(manager, 2)
    (newest / "policy/extra/rng_rank_0.pt").unlink()
    with pytest.raises(CorruptCheckpointError, match=r"step_2 is damaged: .*rng_rank_0.pt is missing.*on_corrupt=fallback"):
        manager.latest_valid_checkpoint()


def test_every_checkpoint_damaged_is_an_error_not_a_silent_fresh_start(tmp_path):
    manager = _manager(tmp_path, keep_top_k=None)
    for step in (1, 2):
        _truncate(_save_real_layout(manager, step) / "policy/dcp/__0_0.distcp")
    with pytest.raises(CorruptCheckpointError, match="every checkpoint .* is damaged(.|\n)*step_2(.|\n)*step_1"):
        manager.latest_valid_checkpoint()


def test_old_checkpoint_without_manifest_is_accepted_with_a_warning(tmp_path, caplog):
    manager = _manager(tmp_path)
    old = tmp_path / "ckpt" / "step_3"
    old.mkdir(parents=True)
    (old / TRAINING_INFO).write_text(json.dumps({"step": 3}))
    assert manager.latest_valid_checkpoint() == old
    assert "has no manifest.json" in caplog.text


def test_partial_temp_checkpoint_is_ignored_and_removed_by_resume(tmp_path):
    manager = _manager(tmp_path)
    _save_real_layout(manager, 1)
    partial = tmp_path / "ckpt" / "tmp_step_2"  # killed while writing step 2
    (partial / "policy" / "dcp").mkdir(parents=True)
    (partial / "policy" / "dcp" / "__0_0.distcp").write_bytes(b"half")
    assert manager.latest_valid_checkpoint() == tmp_path / "ckpt" / "step_1"
    assert not partial.exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_metrics_are_never_checkpointed(tmp_path, bad):
    manager = _manager(tmp_path)
    _save(manager, 1)
    tmp_dir = manager.start(2)
    with pytest.raises(NonFiniteCheckpointError, match=r"step_2: non-finite values at \['train/loss', 'nested.x\[1\]'\]"):
        manager.finalize(2, tmp_dir, {"step": 2, "train/loss": bad, "nested": {"x": [1.0, bad]}})
    assert _steps(manager) == [1] and not tmp_dir.exists()


def test_training_info_is_strict_json(tmp_path):
    manager = _manager(tmp_path)
    _save(manager, 1, **{"train/loss": 1e308, "validation/accuracy": None})
    text = (tmp_path / "ckpt" / "step_1" / TRAINING_INFO).read_text()
    json.loads(text, parse_constant=lambda token: pytest.fail(f"non-JSON token {token}"))


def test_damaged_training_info_does_not_break_metric_pruning(tmp_path):
    manager = _manager(tmp_path, keep_top_k=2, metric_name="m")
    _save(manager, 1, m=0.5)
    _truncate(tmp_path / "ckpt" / "step_1" / TRAINING_INFO)
    _save(manager, 2, m=0.1)
    _save(manager, 3, m=0.2)
    assert _steps(manager) == [2, 3]
