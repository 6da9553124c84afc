"""Built-in tasks: generated problem sets selected by name in ``data.<split>.dataset``.

A task is a generator ``(num_samples, *, split, seed, **knobs) -> list[ProblemRecord]``:
deterministic in ``seed``, ``split`` is ``"train"`` or ``"validation"`` and the two never share a
problem. Knobs are keyword-only parameters with defaults; configs set them under
``data.<split>.task_args`` (e.g. ``data.default.task_args: {board_size: 6, num_boxes: 1}``).

Registered here: ``arithmetic`` (``data/arithmetic.py``) and ``sokoban``
(``environments/sokoban.py``; score it with ``env.type: sokoban``). Adding a task: write the
generator (standard-library imports only) and add it to :data:`_TASKS` below, or call
:func:`register_task` from your own code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from nemo_distill.data.arithmetic import generate_arithmetic_problems
from nemo_distill.data.records import ProblemRecord
from nemo_distill.environments.sokoban import generate_sokoban_problems

TaskGenerator = Callable[..., list[ProblemRecord]]
_RESERVED = ("split", "seed")  # passed by the loader, not knobs

_TASKS: dict[str, TaskGenerator] = {"arithmetic": generate_arithmetic_problems, "sokoban": generate_sokoban_problems}


def register_task(name: str, generator: TaskGenerator) -> None:
    """Make ``dataset: name`` generate its problems with ``generator`` (signature: module docstring)."""
    if name in _TASKS:
        raise ValueError(f"built-in task '{name}' is already registered")
    _TASKS[name] = generator


def task_names() -> list[str]:
    """The registered task names, sorted."""
    return sorted(_TASKS)


def is_task(name: str) -> bool:
    return name in _TASKS


def task_knobs(name: str) -> dict[str, Any]:
    """The knobs of task ``name`` and their defaults (keyword-only parameters other than split/seed)."""
    signature = inspect.signature(_TASKS[name])
    return {p.name: p.default for p in signature.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _RESERVED}


def task_args_problem(name: str, task_args: Mapping[str, Any], *, key_path: str) -> tuple[str, str] | None:
    """``(key path, message)`` for the first knob of ``task_args`` that dataset ``name`` does not
    accept, or ``None``; ``key_path`` is where the args came from (e.g. ``data.default.task_args``)."""
    from nemo_distill.config.errors import did_you_mean

    if name not in _TASKS:
        if task_args:
            return key_path, f"only applies to built-in tasks {task_names()}; dataset '{name}' is not one, remove it"
        return None
    knobs = task_knobs(name)
    for knob in task_args:
        if knob not in knobs:
            return (f"{key_path}.{knob}", f"is not a knob of built-in task '{name}'{did_you_mean(str(knob), list(knobs))}; "
                    f"it accepts {sorted(knobs)}")
    return None


def check_task_args(name: str, task_args: Mapping[str, Any], *, key_path: str) -> None:
    """Raise the ``ConfigError`` that :func:`task_args_problem` describes, if any."""
    from nemo_distill.config.errors import ConfigError

    problem = task_args_problem(name, task_args, key_path=key_path)
    if problem is not None:
        raise ConfigError(*problem)


def generate_task(name: str, num_samples: int, *, split: str, seed: int, task_args: Mapping[str, Any] | None = None,
                  key_path: str = "data.default.task_args") -> list[ProblemRecord]:
    """``num_samples`` problems of built-in task ``name`` for ``split``; a bad knob value is a
    ``ConfigError`` at ``key_path`` carrying the generator's message."""
    from nemo_distill.config.errors import ConfigError

    if name not in _TASKS:
        raise ValueError(f"'{name}' is not a built-in task; registered tasks: {task_names()}")
    task_args = dict(task_args or {})
    check_task_args(name, task_args, key_path=key_path)
    try:
        return _TASKS[name](num_samples, split=split, seed=seed, **task_args)
    except (TypeError, ValueError) as err:
        raise ConfigError(key_path, f"built-in task '{name}' with {task_args}: {err}") from err
