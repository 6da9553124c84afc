"""The noisy-student report: numbers against the stats module and hand counts, files written."""

from __future__ import annotations

import json

import pytest

from nemo_distill.algorithms.noisy_student_report import (
    ConditionEval,
    build_report,
    format_markdown,
    load_predictions,
    save_predictions,
    write_report,
)
from nemo_distill.data.datasets import ProblemRecord
from nemo_distill.algorithms.pseudo_labels import PseudoLabeledProblem, summarize_pseudo_labels
from nemo_distill.utils.stats import two_proportion_ztest, wilson_interval

# 20 paired test items. base: 4 right; baseline: 9 right (every base hit + 5); noisy: 7 right.
BASE = [True] * 4 + [False] * 16
BASELINE = [True] * 9 + [False] * 11
NOISY = [True, True, False, False, True, True, True, True, False, True] + [False] * 10


def _evals():
    ids = [f"t-{i}" for i in range(20)]
    return [
        ConditionEval("base", BASE, ids),
        ConditionEval("baseline", BASELINE, ids, trainer="sft", num_train_examples=100),
        ConditionEval("noisy_student", NOISY, ids, pseudo_label_accuracy=0.52, trainer="sft", num_train_examples=500),
    ]


def _pseudo_stats():
    labels = [PseudoLabeledProblem(f"u{i}", "p", "1", votes / 4, votes, 4, votes >= 3, "1", correct)
              for i, (votes, correct) in enumerate([(4, True), (4, True), (3, True), (3, False), (2, False), (1, False), (0, False)])]
    labels[-1] = PseudoLabeledProblem("u6", "p", None, 0.0, 0, 4, False, "1", False)
    return summarize_pseudo_labels(labels, min_agreement=0.75)


def test_condition_summaries_and_pairwise_tests():
    report = build_report(_evals())
    base, baseline, noisy = report.conditions
    assert (baseline.n, baseline.num_correct, baseline.accuracy, baseline.trainer) == (20, 9, 0.45, "sft")
    assert (baseline.ci_low, baseline.ci_high) == wilson_interval(9, 20)
    assert noisy.pseudo_label_accuracy == 0.52 and base.pseudo_label_accuracy is None
    assert [(p.condition_a, p.condition_b) for p in report.comparisons] == [("base", "baseline"), ("base", "noisy_student"), ("baseline", "noisy_student")]
    base_vs_baseline = report.comparisons[0]
    # Discordant: baseline alone is right on items 4..8 (5), base alone on none -> exact p = 2 / 2^5.
    assert (base_vs_baseline.only_a, base_vs_baseline.only_b) == (0, 5)
    assert base_vs_baseline.mcnemar_p == pytest.approx(0.0625)
    assert base_vs_baseline.difference == pytest.approx(-0.25)
    assert base_vs_baseline.z == pytest.approx(two_proportion_ztest(4, 20, 9, 20).z)
    baseline_vs_noisy = report.comparisons[2]
    # baseline alone: items 2, 3, 8 (3); noisy alone: item 9 (1) -> p = 2 * (1 + 4) / 16 = 0.625.
    assert (baseline_vs_noisy.only_a, baseline_vs_noisy.only_b, baseline_vs_noisy.mcnemar_p) == (3, 1, pytest.approx(0.625))


def test_chosen_pairs_and_errors():
    report = build_report(_evals(), pairs=[("noisy_student", "baseline")])
    assert len(report.comparisons) == 1 and report.comparisons[0].difference == pytest.approx(-0.10)
    with pytest.raises(ValueError, match=r"unknown condition\(s\) \['oracle'\]"):
        build_report(_evals(), pairs=[("oracle", "baseline")])
    with pytest.raises(ValueError, match="scored on 19 test items"):
        build_report([ConditionEval("a", BASE), ConditionEval("b", BASE[:19])])
    with pytest.raises(ValueError, match="different test items"):
        build_report([ConditionEval("a", [True], ["x"]), ConditionEval("b", [True], ["y"])])
    with pytest.raises(ValueError, match="unique"):
        build_report([ConditionEval("a", [True]), ConditionEval("a", [True])])


def test_markdown_tables():
    text = format_markdown(build_report(_evals(), pseudo_label_stats=_pseudo_stats()))
    low, high = wilson_interval(9, 20)
    assert f"| baseline | sft | 45.0% | [{100 * low:.1f}%, {100 * high:.1f}%] | 9 / 20 | - | 100 |" in text
    assert "| noisy_student | sft | 35.0% |" in text and "| 52.0% | 500 |" in text
    assert "| base | baseline | -25.0 pp | 0 / 5 | 0.0625 |" in text
    assert "7 prompts, 6 with an answer, 4 confident (agreement >= 0.75)" in text
    assert "| 75% | 3/4 | 2 | 28.6% | 50.0% (1/2) | yes |" in text


def test_write_report_files(tmp_path):
    report = build_report(_evals(), pseudo_label_stats=_pseudo_stats())
    files = write_report(report, tmp_path / "report")
    for path in (files.markdown, files.json, files.accuracy_png, files.agreement_png):
        assert path.is_file() and path.stat().st_size > 0
    assert files.accuracy_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(files.json.read_text())
    assert [c["name"] for c in data["conditions"]] == ["base", "baseline", "noisy_student"]
    assert data["comparisons"][0]["mcnemar_p"] == pytest.approx(0.0625)
    assert data["pseudo_labels"]["histogram"][4] | {"agreement": 1.0, "accuracy": 1.0, "count": 2} == data["pseudo_labels"]["histogram"][4]
    without_labels = write_report(build_report(_evals()[:1]), tmp_path / "one")
    assert without_labels.agreement_png is None and without_labels.accuracy_png.is_file()


def test_condition_eval_from_responses_and_predictions_roundtrip(tmp_path):
    records = [ProblemRecord("Q0", "work\n#### 72", "t-0"), ProblemRecord("Q1", "1,000", "t-1"), ProblemRecord("Q2", "5", "t-2")]
    responses = ["so 72 clips\n#### 72", "The answer is $1000.", "I think \\boxed{6}"]
    evaluation = ConditionEval.from_responses("sft/baseline", responses, records, use_math_verify=False, trainer="sft")
    assert (evaluation.correct, evaluation.item_ids, evaluation.trainer) == ([True, True, False], ["t-0", "t-1", "t-2"], "sft")
    path = save_predictions(tmp_path / "eval" / "sft_baseline.jsonl", responses, records, evaluation)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[2] == {"condition": "sft/baseline", "record_id": "t-2", "problem": "Q2", "response": "I think \\boxed{6}",
                       "answer": "6", "gold": "5", "correct": False}
    assert load_predictions(path, trainer="sft") == evaluation
    with pytest.raises(ValueError, match="2 responses for 3 test records"):
        ConditionEval.from_responses("x", responses[:2], records)
    path.write_text(path.read_text() + json.dumps({"condition": "other", "record_id": "t-3", "correct": True}) + "\n")
    with pytest.raises(ValueError, match=r"\['other', 'sft/baseline'\] condition"):
        load_predictions(path)
