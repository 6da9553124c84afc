"""Atomic ``step_N/`` checkpoints with top-k retention.

A checkpoint is written into ``tmp_step_N/`` and renamed to ``step_N/`` only once complete (its
``training_info.json`` is the last file written), so a crash never leaves a half checkpoint that
resume would pick up: leftovers named ``tmp_step_*`` are ignored and removed on the next save.
Re-saving an existing step moves the old folder to ``old_step_N`` for the swap; a crash in between
is repaired the next time checkpoints are listed for resume or saved.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAINING_INFO = "training_info.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class CheckpointingConfig:
    enabled: bool = False  # save checkpoints and resume from the latest one
    checkpoint_dir: str = "results/checkpoints"  # holds step_N/ folders (and tmp_step_N/ while writing)
    save_period: int = 10  # save every N steps (and at the last step)
    keep_top_k: int | None = 3  # checkpoints kept; None keeps all
    metric_name: str | None = None  # rank by this metric (e.g. validation/accuracy); None keeps the most recent
    higher_is_better: bool = True  # direction of metric_name (false for a loss)

    def __post_init__(self) -> None:
        if self.save_period < 1:
            raise ValueError(f"checkpointing.save_period must be >= 1, got {self.save_period}")
        if self.keep_top_k is not None and self.keep_top_k < 1:
            raise ValueError(f"checkpointing.keep_top_k must be >= 1 or null, got {self.keep_top_k}")


class CheckpointManager:
    """Finds, writes and prunes ``checkpoint_dir/step_N/`` folders.

    Writing a checkpoint is ``tmp = start(step)``, then the caller fills ``tmp``, then
    ``finalize(step, tmp, training_info)``. What goes inside (weights, optimizer, dataloader
    state) is the caller's business; only ``training_info.json`` is written here.
    """

    def __init__(self, cfg: CheckpointingConfig):
        self.cfg = cfg
        self.root = Path(cfg.checkpoint_dir)

    def complete_checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every finished checkpoint, by step."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and (path / TRAINING_INFO).is_file():
                found.append((int(match.group(1)), path))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        """The complete ``step_N`` with the highest N, or None (temp leftovers never count)."""
        self._recover_interrupted_swaps()
        complete = self.complete_checkpoints()
        return complete[-1][1] if complete else None

    def should_save(self, step: int, is_last: bool) -> bool:
        """Every ``save_period`` steps, and always at the last step."""
        return is_last or step % self.cfg.save_period == 0

    def start(self, step: int) -> Path:
        """A fresh, empty ``tmp_step_N/`` to write the checkpoint into."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._recover_interrupted_swaps()
        for stale in self.root.glob("tmp_step_*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp_dir = self.root / f"tmp_step_{step}"
        tmp_dir.mkdir()
        return tmp_dir

    def finalize(self, step: int, tmp_dir: Path, training_info: dict[str, Any]) -> Path:
        """Write ``training_info.json`` (fsynced), rename ``tmp_dir`` to ``step_N``, prune; return the path."""
        info_path = tmp_dir / TRAINING_INFO
        with open(info_path, "w") as handle:
            json.dump(training_info, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        final = self.root / f"step_{step}"
        if final.exists():  # re-saving a step: move the old one aside before the swap
            aside = self.root / f"old_step_{step}"
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
            os.replace(tmp_dir, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp_dir, final)
        _fsync_dir(self.root)
        self.prune()
        return final

    def _recover_interrupted_swaps(self) -> None:
        """Undo a re-save of ``step_N`` that died between its two renames.

        ``old_step_N`` is the previous complete checkpoint: if ``step_N`` is missing, it is put
        back; if ``step_N`` is there (the swap finished), the aside copy is deleted.
        """
        if not self.root.is_dir():
            return
        for aside in self.root.glob("old_step_*"):
            final = self.root / aside.name.removeprefix("old_")
            if (final / TRAINING_INFO).is_file():
                shutil.rmtree(aside, ignore_errors=True)
            elif (aside / TRAINING_INFO).is_file():
                shutil.rmtree(final, ignore_errors=True)
                os.replace(aside, final)

    def load_training_info(self, path: Path) -> dict[str, Any]:
        """The ``training_info.json`` dict saved with the checkpoint at ``path``."""
        return json.loads((Path(path) / TRAINING_INFO).read_text())

    def prune(self) -> list[Path]:
        """Delete all but ``keep_top_k`` checkpoints (best by metric, ties to newer); the latest always stays."""
        keep = self.cfg.keep_top_k
        complete = self.complete_checkpoints()
        if keep is None or len(complete) <= keep:
            return []
        latest_step = complete[-1][0]

        def rank(entry: tuple[int, Path]) -> tuple[float, int]:
            step, path = entry
            if self.cfg.metric_name is None:
                return (0.0, step)
            value = self.load_training_info(path).get(self.cfg.metric_name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                return (float("-inf"), step)  # missing (e.g. no validation that step) ranks worst
            return (value if self.cfg.higher_is_better else -value, step)

        ranked = sorted(complete, key=rank, reverse=True)
        kept = {step for step, _ in ranked[: keep - 1]} | {latest_step}
        for step, _ in ranked:
            if len(kept) >= keep:
                break
            kept.add(step)
        removed = [path for step, path in complete if step not in kept]
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        return removed


def _fsync_dir(path: Path) -> None:
    """Persist renames inside ``path`` (a rename is durable only once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
