"""``ProblemRecord``: one problem as every data source yields it (files and built-in tasks).

Lives in its own module so generators (``data/arithmetic.py``, ``environments/sokoban.py``) and the
loaders in ``data/datasets.py`` can share it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProblemRecord:
    problem: str  # the raw problem text (what {} in a prompt file and {problem} in a teacher template receive)
    answer: str | None  # gold answer (what the environment's verifier receives); None for unlabelled data
    record_id: str  # "<source>-<split>-<row>" for tracing samples back
    metadata: dict[str, Any] = field(default_factory=dict)  # task-specific extras, e.g. sokoban's optimal solution length
