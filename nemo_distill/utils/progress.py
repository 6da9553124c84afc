"""Progress bars on long loops (tqdm on stderr).

Shown when stderr is a terminal, or always with ``NEMO_DISTILL_PROGRESS=1``; hidden with
``NEMO_DISTILL_PROGRESS=0`` (CI logs stay clean).
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    setting = os.environ.get("NEMO_DISTILL_PROGRESS")
    if setting is not None:
        return setting == "1"
    return sys.stderr.isatty()


def progress_bar(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar when progress is enabled, else unchanged."""
    if not progress_enabled():
        return iterable
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)
