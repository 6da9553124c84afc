"""The noisy-student study's report: accuracy per condition with intervals, pairwise tests, plots.

Input: one :class:`ConditionEval` per condition -- per-item correctness on the SAME test split, in
the same order -- and optionally the pseudo-labels' :class:`PseudoLabelStats`. Output
(:func:`write_report`):

* ``report.md``     -- the condition table (accuracy, 95% Wilson interval, n, pseudo-label
  accuracy), the pairwise table (difference, exact McNemar p on the paired items, two-proportion
  z and its p) and the agreement table of the pseudo-labels (seed 004's confidence table);
* ``report.json``   -- the same numbers, machine-readable;
* ``accuracy.png``  -- accuracy per condition with the Wilson intervals as error bars;
* ``agreement.png`` -- prompts per agreement level (confident levels highlighted) with the
  pseudo-label accuracy of each level; only when pseudo-label stats are given.

All statistics come from :mod:`nemo_distill.utils.stats` (statsmodels underneath).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from nemo_distill.algorithms.pseudo_labels import PseudoLabelStats, format_agreement_table
from nemo_distill.data.datasets import ProblemRecord
from nemo_distill.environments.math import extract_answer, final_answer, math_reward
from nemo_distill.utils.stats import DEFAULT_CONFIDENCE, estimate_proportion, mcnemar_exact, two_proportion_ztest


@dataclass
class ConditionEval:
    """One condition's test-split evaluation."""

    name: str  # e.g. "baseline", "sft/noisy_student"
    correct: list[bool]  # per test item, in the test split's order (the same for every condition)
    item_ids: list[str] | None = None  # record ids of those items; checked equal across conditions when given
    pseudo_label_accuracy: float | None = None  # accuracy of the pseudo-labels this condition trained on
    trainer: str | None = None  # "sft" / "grpo"; None for the untrained base model
    num_train_examples: int | None = None

    @classmethod
    def from_responses(cls, name: str, responses: list[str], test_records: list[ProblemRecord], *, use_math_verify: bool = True,
                       **fields) -> "ConditionEval":
        """Score one response per test record (``responses[i]`` answers ``test_records[i]``) with the
        math reward: extracted answer vs the record's gold final answer. ``fields``: the optional ones."""
        if len(responses) != len(test_records):
            raise ValueError(f"condition {name!r}: {len(responses)} responses for {len(test_records)} test records; they pair up one to one")
        correct = [math_reward(text, record.answer, use_math_verify=use_math_verify) == 1.0 for text, record in zip(responses, test_records)]
        return cls(name, correct, [record.record_id for record in test_records], **fields)


@dataclass(frozen=True)
class ConditionSummary:
    name: str
    trainer: str | None
    n: int  # test items
    num_correct: int
    accuracy: float
    ci_low: float  # Wilson interval at the report's confidence
    ci_high: float
    pseudo_label_accuracy: float | None
    num_train_examples: int | None


@dataclass(frozen=True)
class PairwiseComparison:
    """Condition A vs B on the same items; ``difference = accuracy_a - accuracy_b``."""

    condition_a: str
    condition_b: str
    accuracy_a: float
    accuracy_b: float
    difference: float
    only_a: int  # items A got right and B wrong (McNemar's discordant cells)
    only_b: int
    mcnemar_p: float  # exact, two-sided
    z: float  # pooled two-proportion z (ignores the pairing)
    z_p: float  # two-sided


@dataclass(frozen=True)
class NoisyStudentReport:
    conditions: list[ConditionSummary]
    comparisons: list[PairwiseComparison]
    pseudo_labels: PseudoLabelStats | None
    confidence: float  # of the intervals, e.g. 0.95

    def to_dict(self) -> dict:
        """JSON-ready; the agreement bins carry their derived ``agreement`` and ``accuracy`` too."""
        pseudo = None
        if self.pseudo_labels is not None:
            pseudo = asdict(self.pseudo_labels)
            pseudo["histogram"] = [{**asdict(b), "agreement": b.agreement, "accuracy": b.accuracy} for b in self.pseudo_labels.histogram]
        return {
            "confidence": self.confidence,
            "conditions": [asdict(c) for c in self.conditions],
            "comparisons": [asdict(c) for c in self.comparisons],
            "pseudo_labels": pseudo,
        }


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    json: Path
    accuracy_png: Path
    agreement_png: Path | None  # None without pseudo-label stats


def _check_paired(evals: list[ConditionEval]) -> None:
    names = [e.name for e in evals]
    if len(set(names)) != len(names):
        raise ValueError(f"condition names must be unique, got {names}")
    first = evals[0]
    for other in evals[1:]:
        if len(other.correct) != len(first.correct):
            raise ValueError(
                f"condition {other.name!r} was scored on {len(other.correct)} test items but {first.name!r} on {len(first.correct)}; "
                "every condition must be evaluated on the same test split"
            )
        if first.item_ids is not None and other.item_ids is not None and other.item_ids != first.item_ids:
            raise ValueError(f"conditions {first.name!r} and {other.name!r} list different test items (or a different order)")


def build_report(
    evals: list[ConditionEval],
    *,
    pseudo_label_stats: PseudoLabelStats | None = None,
    pairs: list[tuple[str, str]] | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> NoisyStudentReport:
    """Summaries and pairwise tests of ``evals``; ``pairs`` defaults to every pair in the given order."""
    if not evals:
        raise ValueError("build_report needs at least one condition")
    _check_paired(evals)
    by_name = {e.name: e for e in evals}
    summaries = []
    for e in evals:
        estimate = estimate_proportion(sum(e.correct), len(e.correct), confidence=confidence)
        summaries.append(
            ConditionSummary(e.name, e.trainer, estimate.n, estimate.successes, estimate.proportion, estimate.ci_low, estimate.ci_high,
                             e.pseudo_label_accuracy, e.num_train_examples)
        )
    if pairs is None:
        pairs = list(itertools.combinations([e.name for e in evals], 2))
    comparisons = []
    for name_a, name_b in pairs:
        unknown = [name for name in (name_a, name_b) if name not in by_name]
        if unknown:
            raise ValueError(f"pair ({name_a!r}, {name_b!r}) names unknown condition(s) {unknown}; known: {list(by_name)}")
        a, b = by_name[name_a], by_name[name_b]
        mcnemar = mcnemar_exact(a.correct, b.correct)
        n = len(a.correct)
        accuracy_a, accuracy_b = (sum(a.correct) / n, sum(b.correct) / n) if n else (0.0, 0.0)
        ztest = two_proportion_ztest(sum(a.correct), n, sum(b.correct), n) if n else None
        comparisons.append(
            PairwiseComparison(name_a, name_b, accuracy_a, accuracy_b, accuracy_a - accuracy_b, mcnemar.only_a, mcnemar.only_b,
                               mcnemar.p_value, ztest.z if ztest else 0.0, ztest.p_value if ztest else 1.0)
        )
    return NoisyStudentReport(summaries, comparisons, pseudo_label_stats, confidence)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_markdown(report: NoisyStudentReport, *, title: str = "Noisy-student study") -> str:
    """The report as Markdown (tables of conditions, comparisons and pseudo-label agreement)."""
    level = f"{100 * report.confidence:g}%"
    lines = [f"# {title}", "", "## Accuracy on the test split", "",
             f"| condition | trainer | accuracy | {level} Wilson CI | correct / n | pseudo-label acc. | train examples |",
             "|---|---|---|---|---|---|---|"]
    for c in report.conditions:
        lines.append(
            f"| {c.name} | {c.trainer or '-'} | {_percent(c.accuracy)} | [{_percent(c.ci_low)}, {_percent(c.ci_high)}] | "
            f"{c.num_correct} / {c.n} | {_percent(c.pseudo_label_accuracy)} | {c.num_train_examples if c.num_train_examples is not None else '-'} |"
        )
    if report.comparisons:
        lines += ["", "## Pairwise comparisons (same test items)", "",
                  "Exact McNemar: two-sided binomial test on the items exactly one condition got right. "
                  "z-test: pooled two-proportion z, two-sided (ignores the pairing).", "",
                  "| A | B | A - B | A only / B only | McNemar p | z | z-test p |", "|---|---|---|---|---|---|---|"]
        for p in report.comparisons:
            lines.append(
                f"| {p.condition_a} | {p.condition_b} | {100 * p.difference:+.1f} pp | {p.only_a} / {p.only_b} | "
                f"{p.mcnemar_p:.4g} | {p.z:+.3f} | {p.z_p:.4g} |"
            )
    if report.pseudo_labels is not None:
        stats = report.pseudo_labels
        lines += ["", "## Pseudo-labels", "",
                  f"{stats.num_prompts} prompts, {stats.num_labelled} with an answer, {stats.num_confident} confident "
                  f"(agreement >= {stats.min_agreement:g}); accuracy against hidden gold: {_percent(stats.accuracy)} overall, "
                  f"{_percent(stats.confident_accuracy)} among confident labels ({stats.num_with_gold} prompts with gold).", "",
                  format_agreement_table(stats)]
    return "\n".join(lines) + "\n"


def plot_accuracy(report: NoisyStudentReport, out_png: Path) -> Path:
    """Accuracy per condition (bars) with the Wilson intervals as asymmetric error bars."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg, no pyplot state

    names = [c.name for c in report.conditions]
    accuracy = [100 * c.accuracy for c in report.conditions]
    below = [100 * (c.accuracy - c.ci_low) for c in report.conditions]
    above = [100 * (c.ci_high - c.accuracy) for c in report.conditions]
    fig = Figure(figsize=(max(4.0, 1.1 * len(names) + 1.5), 3.6))
    axis = fig.subplots()
    axis.bar(range(len(names)), accuracy, yerr=[below, above], capsize=4, color="#4C72B0", alpha=0.85)
    for x, (value, c) in enumerate(zip(accuracy, report.conditions)):
        axis.text(x, 100 * c.ci_high + 1, f"{value:.1f}%", ha="center", va="bottom", fontsize=8)
    axis.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    axis.set_ylabel(f"test accuracy (%), {100 * report.confidence:g}% Wilson CI")
    axis.set_ylim(0, min(100, max(100 * c.ci_high for c in report.conditions) + 10))
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def plot_agreement(stats: PseudoLabelStats, out_png: Path) -> Path:
    """Prompts per agreement level (confident levels in a second colour), accuracy written on each bar."""
    from matplotlib.figure import Figure

    labels = [f"{b.votes}/{b.k}" for b in stats.histogram]
    fig = Figure(figsize=(max(4.0, 0.6 * len(labels) + 2), 3.4))
    axis = fig.subplots()
    colours = ["#55A868" if b.confident else "#8C8C8C" for b in stats.histogram]
    axis.bar(range(len(labels)), [b.count for b in stats.histogram], color=colours)
    for x, b in enumerate(stats.histogram):
        if b.accuracy is not None:
            axis.text(x, b.count, f"{100 * b.accuracy:.0f}%", ha="center", va="bottom", fontsize=8)
    axis.set_xticks(range(len(labels)), labels, fontsize=8)
    axis.set_title("pseudo-label agreement (bar text: accuracy vs hidden gold)", fontsize=9)
    axis.set_xlabel(f"votes / K for the consensus (green: >= {stats.min_agreement:g}, confident)", fontsize=9)
    axis.set_ylabel("prompts")
    axis.yaxis.get_major_locator().set_params(integer=True)
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def write_report(report: NoisyStudentReport, out_dir: str | Path, *, title: str = "Noisy-student study") -> ReportFiles:
    """Write ``report.md``, ``report.json``, ``accuracy.png`` and (with pseudo-labels) ``agreement.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = out_dir / "report.md"
    markdown.write_text(format_markdown(report, title=title))
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    accuracy_png = plot_accuracy(report, out_dir / "accuracy.png")
    agreement_png = plot_agreement(report.pseudo_labels, out_dir / "agreement.png") if report.pseudo_labels is not None else None
    return ReportFiles(markdown, json_path, accuracy_png, agreement_png)


def save_predictions(path: str | Path, responses: list[str], test_records: list[ProblemRecord], evaluation: ConditionEval) -> Path:
    """One JSONL row per test item (record_id, problem, response, extracted answer, gold, correct),
    written atomically: the evaluation phase's output, so a rerun can skip it (:func:`load_predictions`)."""
    if not len(responses) == len(test_records) == len(evaluation.correct):
        raise ValueError(f"{len(responses)} responses, {len(test_records)} test records and {len(evaluation.correct)} scores must pair up")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w") as handle:
        for text, record, correct in zip(responses, test_records, evaluation.correct):
            gold = final_answer(record.answer) if record.answer is not None else None
            row = {"condition": evaluation.name, "record_id": record.record_id, "problem": record.problem, "response": text,
                   "answer": extract_answer(text), "gold": gold, "correct": bool(correct)}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    temporary.replace(path)
    return path


def load_predictions(path: str | Path, **fields) -> ConditionEval:
    """The :class:`ConditionEval` of a :func:`save_predictions` file (``fields``: the optional ones)."""
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {number} is not valid JSON: {err}") from err
            if not {"condition", "record_id", "correct"} <= set(rows[-1]):
                raise ValueError(f"{path}: line {number} lacks condition / record_id / correct; was it written by save_predictions?")
    names = {row["condition"] for row in rows}
    if len(names) != 1:
        raise ValueError(f"{path} holds predictions of {sorted(names) or 'no'} condition(s); expected exactly one")
    return ConditionEval(names.pop(), [bool(row["correct"]) for row in rows], [row["record_id"] for row in rows], **fields)
