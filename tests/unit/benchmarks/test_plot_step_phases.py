"""plot_step_phases.py: the phase split of a compare_trl report and the PNG it writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))


def _report(total: float) -> dict:
    summary = {"generation_s": 2.0, "teacher_topk_s": 0.5, "policy_training_s": 1.25, "refit_s": 0.25, "total_step_time_s": total}
    return {"shape": "tiny", "prompts": 4, "max_new_tokens": 8, "micro_batch": 2, "ours": {"summary": summary}}


def test_phase_bars_other_is_the_uncovered_time():
    from plot_step_phases import phase_bars

    bars = phase_bars(_report(4.5))
    assert bars == {"generation": 2.0, "teacher top-k": 0.5, "training": 1.25, "refit": 0.25, "other": pytest.approx(0.5)}
    assert phase_bars(_report(3.0))["other"] == 0.0  # rounding in the means never gives a negative bar


def test_writes_a_png(tmp_path):
    from plot_step_phases import main

    path = tmp_path / "r.json"
    path.write_text(json.dumps(_report(4.5)))
    assert main([str(path), "--out", str(tmp_path / "p.png"), "--trl-step-s", "9.0", "--target-s", "1.8"]) == 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_bar_per_report_and_trl_from_the_report_that_ran_it(tmp_path):
    from plot_step_phases import main, trl_step_seconds

    with_trl = {**_report(4.5), "trl": {"steady_step_s": 9.5}}
    skipped = {**_report(4.5), "trl": {"side": "trl", "skipped": "trl not importable"}}
    assert trl_step_seconds([_report(4.0), skipped, with_trl], 15.6) == 9.5  # the same-run figure wins
    assert trl_step_seconds([_report(4.0), skipped], 15.6) == 15.6 and trl_step_seconds([_report(4.0)], None) is None
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    paths[0].write_text(json.dumps(_report(4.0)))
    paths[1].write_text(json.dumps(with_trl))
    assert main([*map(str, paths), "--labels", "generate", "loop", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000
    with pytest.raises(SystemExit):  # argparse error: one label for two reports
        main([*map(str, paths), "--labels", "only-one", "--out", str(tmp_path / "q.png")])
    assert not (tmp_path / "q.png").exists()
