"""Resume only into the run that was checkpointed: compare the saved config with the new one.

A ``step_N`` checkpoint restores the student's weights, the optimizer and scheduler state (so the
learning rate too), the data order and the generation seed counter. Resuming it under a config
that changed anything else would silently train the old run with some new settings mixed in,
e.g. a 5-step smoke run followed by the full run on the same ``checkpoint_dir`` would start the
full run at step 6 with the smoke run's learning-rate schedule.

So the runtime calls :func:`check_resume` with the ``config.yaml`` saved in the checkpoint and the
new run's config, before any worker starts, and ``checkpointing.resume`` decides:

* ``auto`` (default): resume when every difference is in :data:`ALLOWED_RESUME_CHANGES`; otherwise
  stop with a :class:`~nemo_distill.config.ConfigError` that lists the differences and the choices.
* ``force``: resume anyway, with a warning listing the differences. The checkpoint's state (weights,
  optimizer, scheduler, data order) wins; the new values apply to everything else.
* ``never``: the caller does not resume (and does not call :func:`check_resume`).

Allowed changes only extend or observe the run, or change where and how fast it runs without
changing what it computes (see :data:`ALLOWED_RESUME_CHANGES`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from nemo_distill.config import ConfigError
from nemo_distill.config.loader import merge_configs

log = logging.getLogger(__name__)

RESUME_MODES = ("auto", "never", "force")

# Key-path patterns (fnmatch: ``*`` matches any characters, dots included) whose change a resume
# accepts. Grouped by why the change is harmless.
ALLOWED_RESUME_CHANGES: tuple[str, ...] = (
    # Extend the run: the schedule's horizon is not one of these (scheduler.total_steps is not listed).
    "*.max_num_steps",
    "*.max_num_epochs",
    # Observe the run: logging, validation, sample dumps, debug prints. They never feed training.
    "logger.*",
    "*.val_period",
    "*.val_at_start",
    "*.val_at_end",
    "*.val_batch_size",
    "*.max_val_samples",
    "*.num_train_samples_to_save",
    "*.print_first_sample",
    # Checkpoint bookkeeping: when and which checkpoints are kept, how resume behaves, and where the
    # folder lives (a moved checkpoint_dir is still the same run).
    "checkpointing.save_period",
    "checkpointing.keep_top_k",
    "checkpointing.metric_name",
    "checkpointing.higher_is_better",
    "checkpointing.on_corrupt",
    "checkpointing.resume",
    "checkpointing.checkpoint_dir",
    # Where it runs: the Ray cluster to attach to and the CPUs of a local one.
    "cluster.ray_address",
    "cluster.num_cpus",
    # How the same work is split: micro-batching and chunking change only the floating-point
    # summation order (losses are normalised by the step's global token count), and the refit
    # bucket only how weights are packed. Generation batching is NOT listed: it changes sampling.
    "policy.train_micro_batch_size",
    "*.logprob_batch_size",
    "*.logprob_chunk_size",
    "*.logprob_shared_prefix_min_tokens",
    "policy.train_head_chunk_rows",
    "*.dtensor_cfg.activation_checkpointing",
    "*.dtensor_cfg.fsdp_units",  # where FSDP2 gathers and reduces, not what it computes
    "policy.generation.refit_bucket_mb",
    # How the same update is computed: the AdamW kernel, compiled layers and fused norms (rounding only).
    "*.optimizer.implementation",
    "*.compile_decoder_layers",
    "*.fused_rms_norm",
)


class _Absent:
    """A key present on one side only."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class ConfigDifference:
    """One leaf that differs: ``old`` in the saved config, ``new`` in the new one (``ABSENT`` if missing)."""

    key_path: str  # dotted, e.g. "policy.optimizer.lr"
    old: Any
    new: Any

    @property
    def allowed(self) -> bool:
        """Whether a resume accepts this change (:func:`is_allowed_resume_change`)."""
        return is_allowed_resume_change(self.key_path)

    def __str__(self) -> str:
        return f"{self.key_path}: {self.old!r} -> {self.new!r}"


def is_allowed_resume_change(key_path: str) -> bool:
    """``key_path`` matches one of :data:`ALLOWED_RESUME_CHANGES`."""
    return any(fnmatchcase(key_path, pattern) for pattern in ALLOWED_RESUME_CHANGES)


def config_differences(saved: dict, new: dict, *, prefix: str = "") -> list[ConfigDifference]:
    """Every leaf of two nested dicts that differs, sorted by key path.

    Dicts are walked key by key; anything else (lists included) is a leaf compared with ``==``
    (so ``1`` and ``1.0`` are equal). A key on one side only is a difference with ``ABSENT`` on
    the other; a whole missing sub-dict is one difference at its own key path.
    """
    differences: list[ConfigDifference] = []
    for key in list(saved) + [k for k in new if k not in saved]:
        path = f"{prefix}{key}"
        old, value = saved.get(key, ABSENT), new.get(key, ABSENT)
        if isinstance(old, dict) and isinstance(value, dict):
            differences += config_differences(old, value, prefix=f"{path}.")
        elif not _same_leaf(old, value):
            differences.append(ConfigDifference(path, old, value))
    return sorted(differences, key=lambda d: d.key_path)


def _same_leaf(a: Any, b: Any) -> bool:
    if a is ABSENT or b is ABSENT:
        return a is b
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    # int vs float is a representation detail (2 and 2.0); bool vs int is not (True == 1 in Python).
    return a == b and (numbers or type(a) is type(b))


def _parse(text: str, what: str) -> dict:
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError("checkpointing.resume", f"cannot compare configs: the {what} is not valid YAML ({err})") from err
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise ConfigError("checkpointing.resume", f"cannot compare configs: the {what} is a {type(parsed).__name__}, not a mapping")
    return parsed


def schema_defaults(schema: type) -> dict:
    """The defaults of a master config class as the nested dict its ``config.yaml`` would parse to."""
    from omegaconf import OmegaConf

    from nemo_distill.config.schema import to_dictconfig

    return yaml.safe_load(OmegaConf.to_yaml(to_dictconfig(schema())))


def check_resume(saved_yaml: str, new_yaml: str, *, mode: str, checkpoint: Path,
                 defaults: dict | None = None) -> list[ConfigDifference]:
    """Check that ``checkpoint`` (saved with ``saved_yaml``) may be resumed under ``new_yaml``.

    Args:
        saved_yaml: the ``config.yaml`` stored in the checkpoint.
        new_yaml: the new run's full config as YAML.
        defaults: the config schema's defaults (a nested dict). A key the saved config lacks was added
            to the library after the checkpoint was written; its default keeps the behaviour of the
            code that wrote it (a rule for every new key), so the saved side counts as having it.
        mode: ``checkpointing.resume``: ``"auto"`` or ``"force"`` (``"never"`` means the caller
            does not resume at all, so it must not get here).
        checkpoint: the ``step_N`` folder, named in messages.

    Returns every difference (allowed ones included), sorted by key path; allowed ones are logged
    at INFO level, disallowed ones under ``force`` as a WARNING.

    Raises:
        ConfigError: (key ``checkpointing.resume``) in ``auto`` mode when a difference is not in
            :data:`ALLOWED_RESUME_CHANGES`; the message lists each as ``key: old -> new`` and names
            the choices.
        ValueError: for ``mode`` other than ``auto`` / ``force``.
    """
    if mode not in ("auto", "force"):
        hint = " ('never' means: do not resume; the caller must not call check_resume)" if mode == "never" else ""
        raise ValueError(f"check_resume mode must be 'auto' or 'force', got {mode!r}{hint}")
    saved = _parse(saved_yaml, f"config saved in {checkpoint}")
    if defaults is not None:
        saved = merge_configs(defaults, saved)  # the saved values win; keys it lacks come from the defaults
    differences = config_differences(saved, _parse(new_yaml, "new config"))
    allowed = [d for d in differences if d.allowed]
    refused = [d for d in differences if not d.allowed]
    if allowed:
        log.info("resuming %s with changed settings: %s", checkpoint, "; ".join(map(str, allowed)))
    if not refused:
        return differences
    listing = "\n".join(f"  {d}" for d in refused)
    if mode == "force":
        log.warning(
            "checkpointing.resume=force: resuming %s although the config changed; its weights, optimizer, scheduler "
            "and data order are restored as saved, the new values apply to the rest:\n%s", checkpoint, listing,
        )
        return differences
    also = f"\n(allowed changes, applied on resume: {'; '.join(map(str, allowed))})" if allowed else ""
    raise ConfigError(
        "checkpointing.resume",
        f"the checkpoint {checkpoint} was saved by a run with a different config; resuming it would restore its weights, "
        f"optimizer and scheduler state (the learning rate included) and ignore these changes:\n{listing}{also}\n"
        "Choose one: checkpointing.resume=force (resume anyway: the saved state wins), "
        "checkpointing.resume=never (start again from step 1 without resuming), "
        "or a new checkpointing.checkpoint_dir (keep both runs apart).",
    )
