"""Progress bars on long loops (tqdm on stderr).

A bar is drawn only when the caller enables it **and** either stderr is a terminal or the
environment sets ``NEMO_DISTILL_PROGRESS=1``; ``NEMO_DISTILL_PROGRESS=0`` hides it even on a
terminal. Redirected output (CI, Slurm logs) therefore stays free of carriage-return noise.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")
PROGRESS_ENV = "NEMO_DISTILL_PROGRESS"


def progress_enabled() -> bool:
    """Whether bars may be drawn in this process (see module docstring)."""
    setting = os.environ.get(PROGRESS_ENV)
    if setting is not None:
        return setting == "1"
    return sys.stderr.isatty()


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str,
    enabled: bool = True,
    unit: str = "it",
) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual bar driven by ``.update(n)`` when it is None).

    Always returns a tqdm object so callers can iterate it or call ``update`` / ``set_postfix``
    either way; when disabled, tqdm is a pass-through that prints nothing.
    """
    show = enabled and progress_enabled()
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=not show)
