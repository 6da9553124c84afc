"""pytest imports test files by basename (no packages under tests/): two test files with one name
abort collection of the whole suite, so keep every basename unique."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_file_basenames_are_unique():
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    duplicates = {name: [str(p.relative_to(TESTS)) for p in TESTS.rglob(name)] for name, count in names.items() if count > 1}
    assert not duplicates, f"rename these test files, pytest cannot collect two modules of one name: {duplicates}"
