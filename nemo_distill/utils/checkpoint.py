"""Atomic, self-verifying ``step_N/`` checkpoints with top-k retention.

A checkpoint is written into ``tmp_step_N/`` and renamed to ``step_N/`` only once complete, so a
crash never leaves a half checkpoint that resume would pick up: leftovers named ``tmp_step_*`` are
ignored, and removed when resume looks for a checkpoint or on the next save. Re-saving an existing
step moves the old folder to ``old_step_N`` for the swap; a crash in between is repaired the next
time checkpoints are listed for resume or saved.

The last two files written are ``training_info.json`` (strict JSON: a non-finite number is
refused, never written as ``NaN``) and ``manifest.json``: the size and sha256 of every other file
(weights, the HF ``model.safetensors`` export, RNG files, ...), written to a temp name and renamed.
:meth:`CheckpointManager.latest_valid_checkpoint` checks manifests *before* any worker starts, so
a checkpoint damaged after it was written (a truncated file, a full disk, a bad copy) is named and
skipped (``checkpointing.on_corrupt: fallback``) or refused (``error``). Checkpoints written
before manifests existed are accepted with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nemo_distill.config.errors import UserError

log = logging.getLogger(__name__)

TRAINING_INFO = "training_info.json"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_HASH_CHUNK_BYTES = 1 << 20
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class CheckpointingConfig:
    enabled: bool = False  # save checkpoints and resume from the latest one
    checkpoint_dir: str = "results/checkpoints"  # holds step_N/ folders (and tmp_step_N/ while writing)
    save_period: int = 10  # save every N steps (and at the last step)
    keep_top_k: int | None = 3  # checkpoints kept; None keeps all
    metric_name: str | None = None  # rank by this metric (e.g. validation/accuracy); None keeps the most recent
    higher_is_better: bool = True  # direction of metric_name (false for a loss)
    # a damaged checkpoint found at resume: skip it (with a warning naming it) and resume from the
    # newest intact one, or stop with an error
    on_corrupt: Literal["fallback", "error"] = "fallback"
    # a checkpoint saved with a different config (nemo_distill.utils.resume): auto resumes only when
    # the differences just extend or observe the run, force resumes anyway, never starts from step 1
    resume: Literal["auto", "never", "force"] = "auto"

    def __post_init__(self) -> None:
        if self.save_period < 1:
            raise ValueError(f"checkpointing.save_period must be >= 1, got {self.save_period}")
        if self.keep_top_k is not None and self.keep_top_k < 1:
            raise ValueError(f"checkpointing.keep_top_k must be >= 1 or null, got {self.keep_top_k}")


class CorruptCheckpointError(UserError, RuntimeError):
    """A ``step_N`` checkpoint whose files do not match its manifest (or cannot be read).

    A :class:`UserError`: entry points print it as one ``error:`` line (the damaged path and the fix).
    """


class NonFiniteCheckpointError(ValueError):
    """``finalize`` was asked to record a NaN / infinite value; the checkpoint is not written."""


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
        """:meth:`latest_valid_checkpoint` without removing ``tmp_step_*`` (safe while a save runs)."""
        return self.latest_valid_checkpoint(remove_partial=False)

    def latest_valid_checkpoint(self, *, remove_partial: bool = True) -> Path | None:
        """The complete, intact ``step_N`` with the highest N, or None when there is none.

        Call it before starting workers. Partial ``tmp_step_*`` folders are removed. A damaged
        checkpoint is named in a warning and skipped (``on_corrupt: fallback``) or raises
        :class:`CorruptCheckpointError` (``on_corrupt: error``); when checkpoints exist but every
        one is damaged, that is an error either way (a fresh start would silently lose them).
        """
        self._recover_interrupted_swaps()
        if remove_partial and self.root.is_dir():
            for stale in self.root.glob("tmp_step_*"):
                log.warning("removing %s: a checkpoint save that never finished", stale)
                shutil.rmtree(stale, ignore_errors=True)
        complete = self.complete_checkpoints()
        damaged: list[str] = []
        for step, path in reversed(complete):
            problem = self.verify(path)
            if problem is None:
                if damaged:
                    log.warning("resuming from %s, the newest intact checkpoint", path)
                return path
            damaged.append(f"{path}: {problem}")
            if self.cfg.on_corrupt == "error":
                raise CorruptCheckpointError(
                    f"checkpoint step_{step} is damaged: {path}: {problem}. Move it away to resume from an older one, "
                    "or set checkpointing.on_corrupt=fallback to do that automatically"
                )
            log.warning("checkpoint step_%d is damaged, skipping it: %s: %s", step, path, problem)
        if damaged:
            raise CorruptCheckpointError(
                f"every checkpoint in {self.root} is damaged, so there is nothing to resume from:\n  " + "\n  ".join(damaged)
                + "\nMove them away (or set checkpointing.checkpoint_dir elsewhere) to start fresh"
            )
        return None

    def verify(self, path: Path) -> str | None:
        """What is wrong with the checkpoint at ``path`` (``None`` when it is intact).

        Checks ``manifest.json`` (every listed file present, same size, same sha256) and that
        ``training_info.json`` parses. Without a manifest (written before manifests existed) only
        the latter is checked, with a warning.
        """
        path = Path(path)
        try:
            self.load_training_info(path)
        except (OSError, ValueError) as err:
            return f"{TRAINING_INFO} is unreadable ({err})"
        manifest_file = path / MANIFEST
        if not manifest_file.is_file():
            log.warning("checkpoint %s has no %s (written by an older version): its files cannot be verified", path, MANIFEST)
            return None
        try:
            manifest = json.loads(manifest_file.read_text())
            files = manifest["files"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"{MANIFEST} is unreadable ({err})"
        for relative, expected in files.items():
            file = path / relative
            if not file.is_file():
                return f"{relative} is missing"
            size = file.stat().st_size
            if size != expected["size"]:
                return f"{relative} has {size} bytes, the manifest says {expected['size']} (truncated or overwritten)"
            if _sha256(file) != expected["sha256"]:
                return f"{relative} does not match its sha256 in the manifest (corrupted)"
        return None

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
        """Write ``training_info.json`` then ``manifest.json``, rename ``tmp_dir`` to ``step_N``, prune.

        Returns the final path. Raises :class:`NonFiniteCheckpointError` (and deletes ``tmp_dir``)
        when ``training_info`` holds a NaN or infinity anywhere: a diverged step is never saved.
        """
        bad = _non_finite_keys(training_info)
        if bad:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise NonFiniteCheckpointError(
                f"refusing to save checkpoint step_{step}: non-finite values at {bad} (the run diverged; skip this step)"
            )
        _write_durably(tmp_dir / TRAINING_INFO, json.dumps(training_info, indent=2, allow_nan=False))
        manifest = {"format": MANIFEST_FORMAT, "files": _describe_files(tmp_dir)}
        _write_durably(tmp_dir / f"{MANIFEST}.tmp", json.dumps(manifest, indent=2))
        os.replace(tmp_dir / f"{MANIFEST}.tmp", tmp_dir / MANIFEST)
        _fsync_dir(tmp_dir)
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
        """The ``training_info.json`` dict saved with the checkpoint at ``path``.

        Raises ``ValueError`` naming the file when it is not valid JSON (e.g. truncated).
        """
        file = Path(path) / TRAINING_INFO
        try:
            info = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{file} is not valid JSON: {err}") from None
        if not isinstance(info, dict):
            raise ValueError(f"{file} must hold a JSON object, got {type(info).__name__}")
        return info

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
            try:
                value = self.load_training_info(path).get(self.cfg.metric_name)
            except (OSError, ValueError):  # damaged: ranks worst, so it goes first
                value = None
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


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {size, sha256}}`` of every file under ``folder`` except the manifest itself."""
    described = {}
    for file in sorted(folder.rglob("*")):
        relative = file.relative_to(folder).as_posix()
        if file.is_file() and relative not in (MANIFEST, f"{MANIFEST}.tmp"):
            described[relative] = {"size": file.stat().st_size, "sha256": _sha256(file)}
    return described


def _non_finite_keys(value: Any, path: str = "") -> list[str]:
    """Dotted paths of every NaN / infinite float inside nested dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return [path or "<value>"]
    if isinstance(value, dict):
        return [bad for key, item in value.items() for bad in _non_finite_keys(item, f"{path}.{key}" if path else str(key))]
    if isinstance(value, (list, tuple)):
        return [bad for index, item in enumerate(value) for bad in _non_finite_keys(item, f"{path}[{index}]")]
    return []


def _write_durably(file: Path, text: str) -> None:
    with open(file, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Persist renames inside ``path`` (a rename is durable only once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
