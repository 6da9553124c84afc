"""``ProblemRecord`` lives in ``data/records.py``; the old import path and positional use still work."""

from __future__ import annotations

import subprocess
import sys

from nemo_distill.data import datasets, records


def test_old_import_path_is_the_same_class():
    assert datasets.ProblemRecord is records.ProblemRecord


def test_metadata_defaults_to_a_fresh_empty_dict():
    first, second = records.ProblemRecord("p", "a", "id"), records.ProblemRecord("p", "a", "id")
    assert first.metadata == {} and first.metadata is not second.metadata
    assert records.ProblemRecord("p", None, "id", {"k": 1}).metadata == {"k": 1}


def test_generators_import_without_the_loaders():
    # The import cycle arithmetic <-> datasets is gone: the generator imports first on its own.
    code = ("import sys; import nemo_distill.data.arithmetic, nemo_distill.environments.sokoban; "
            "assert 'nemo_distill.data.datasets' not in sys.modules; "
            "assert not any(m.split('.')[0] in ('torch', 'omegaconf', 'ray') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
