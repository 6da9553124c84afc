"""The noisy-student study (seed 004): its config, its run plan and each condition's training set.

The study, top to bottom (the training loops are the shared SFT / GRPO entry points):

1. Split the problems (:mod:`nemo_distill.data.splits`): labelled / unlabelled / test.
2. Pseudo-label the unlabelled prompts with the current model (:mod:`.pseudo_labels`): K samples,
   majority vote, agreement, confident = agreement >= ``min_agreement``.
3. For each trainer (``sft`` / ``grpo``) and condition, build the condition's training set
   (:func:`build_condition_dataset`), train from the SAME initial weights for the budget the
   compute control gives (:func:`plan_training_budgets`), evaluate on the test split.
4. Rounds > 1 re-label the unlabelled set with the model the ``relabel_with`` condition trained in
   the previous round, then retrain the pseudo-label conditions (the others do not change).
5. Report (:mod:`.noisy_student_report`).

Conditions (:data:`CONDITIONS`):

=================  ==========================================================================
``base``           the untrained model (evaluated only)
``baseline``       labelled problems only
``noisy_student``  labelled + every pseudo-labelled problem that has an answer
``filtered``       labelled + confident pseudo-labelled problems only (seed 004, V1.5)
``pseudo_only``    every pseudo-labelled problem with an answer, no labelled ones
``oracle``         labelled + the unlabelled problems with their REAL labels (upper bound)
=================  ==========================================================================

Targets: SFT trains on a worked solution -- the labelled record's answer text (GSM8K's solution
ending in ``#### X``) or, for a pseudo-labelled problem, the first sampled response that states the
consensus; GRPO needs only the answer its reward checks -- the gold answer or the pseudo answer.

The voting (:func:`pseudo_label`, :func:`consensus_label`) lives in :mod:`.pseudo_labels` and is
re-exported here under DESIGN.md's public names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from nemo_distill.algorithms.pseudo_labels import PseudoLabel, PseudoLabelConfig, PseudoLabeledProblem, consensus_label, pseudo_label
from nemo_distill.data.datasets import ProblemRecord
from nemo_distill.data.splits import SplitConfig
from nemo_distill.models.generation.interfaces import SamplingParams
from nemo_distill.models.policy.config import LoraConfig

__all__ = [
    "CONDITIONS", "PSEUDO_LABEL_CONDITIONS", "ComputeConfig", "ConditionRun", "EvalConfig", "NoisyStudentConfig", "NoisyStudentLoraConfig",
    "PseudoLabel",
    "TrainingBudget", "build_condition_dataset", "consensus_label", "plan_runs", "plan_training_budgets", "pseudo_label",
]

Condition = Literal["base", "baseline", "noisy_student", "filtered", "pseudo_only", "oracle"]
Trainer = Literal["sft", "grpo"]
CONDITIONS: tuple[str, ...] = ("base", "baseline", "noisy_student", "filtered", "pseudo_only", "oracle")
TRAINERS: tuple[str, ...] = ("sft", "grpo")
# Conditions whose training set depends on the pseudo-labels (and so on the round).
PSEUDO_LABEL_CONDITIONS: tuple[str, ...] = ("noisy_student", "filtered", "pseudo_only")


@dataclass
class EvalConfig:
    """How the test split is answered (seed 004: temperature 0.1, 256 tokens)."""

    temperature: float = field(default=0.1, metadata={"ge": 0.0})  # ignored when greedy
    max_new_tokens: int = field(default=256, metadata={"ge": 1})
    greedy: bool = False  # True: temperature 0, one deterministic answer per problem
    seed: int = 42
    use_math_verify: bool = True  # symbolic matching of predictions against gold

    def sampling_params(self) -> SamplingParams:
        """One answer per test problem: temperature ``temperature``, or greedy."""
        sampling = SamplingParams(temperature=self.temperature, max_new_tokens=self.max_new_tokens, n=1, seed=self.seed)
        return sampling.greedy() if self.greedy or self.temperature == 0 else sampling


@dataclass
class ComputeConfig:
    """How long each condition trains.

    ``same_epochs`` (seed 004 V1): every condition sees its own data ``epochs`` times, so larger
    training sets also get more steps (data and compute confounded). ``same_steps``: every
    condition trains ``steps`` optimizer steps (default: what ``baseline`` needs for ``epochs``
    epochs), so only the data differs.
    """

    control: Literal["same_epochs", "same_steps"] = "same_epochs"
    epochs: float = field(default=2.0, metadata={"gt": 0.0})  # seed 004: 2 epochs
    batch_size: int = field(default=4, metadata={"ge": 1})  # training problems per optimizer step
    steps: int | None = None  # same_steps only: fixed step count; None = baseline's steps at `epochs`


@dataclass
class NoisyStudentLoraConfig(LoraConfig):
    """LoRA instead of full fine-tuning, with seed 004's settings (rank 8, alpha 32, every linear
    layer) and its LR rule: LoRA's best LR is ~10x full fine-tuning's ("LoRA Without Regret")."""

    rank: int = field(default=8, metadata={"ge": 1})
    lr_multiplier: float = field(default=10.0, metadata={"gt": 0.0})  # LoRA LR = the trainer's LR x this


@dataclass
class NoisyStudentConfig:
    """The whole study from one config (defaults: seed 004's V1 / V1.5 / V4 settings)."""

    splits: SplitConfig = field(default_factory=SplitConfig)
    pseudo_label: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    conditions: list[Condition] = field(default_factory=lambda: list(CONDITIONS))
    trainers: list[Trainer] = field(default_factory=lambda: ["sft"])  # each condition is trained once per trainer
    lora: NoisyStudentLoraConfig = field(default_factory=NoisyStudentLoraConfig)  # enabled=False: full fine-tuning
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    rounds: int = field(default=1, metadata={"ge": 1})  # pseudo-label -> train cycles
    relabel_with: Condition = "noisy_student"  # whose round-r model labels round r+1
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 42

    def __post_init__(self) -> None:
        # ValueErrors name the field; the config schema prefixes the section's key path.
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown or not self.conditions:
            raise ValueError(f"conditions must be a non-empty list of {list(CONDITIONS)}, got {self.conditions}")
        if len(set(self.conditions)) != len(self.conditions):
            raise ValueError(f"conditions lists a condition twice: {self.conditions}")
        if any(t not in TRAINERS for t in self.trainers) or not self.trainers or len(set(self.trainers)) != len(self.trainers):
            raise ValueError(f"trainers must be a non-empty list of distinct trainers from {list(TRAINERS)}, got {self.trainers}")
        if self.rounds > 1 and self.relabel_with not in PSEUDO_LABEL_CONDITIONS + ("baseline", "oracle"):
            raise ValueError(f"relabel_with must name a trained condition for rounds > 1, got {self.relabel_with!r}")
        if self.rounds > 1 and self.relabel_with not in self.conditions:
            raise ValueError(f"relabel_with={self.relabel_with!r} labels round 2 onwards but is not in conditions {self.conditions}; add it or set rounds=1")
        if self.compute.control == "same_epochs" and self.compute.steps is not None:
            raise ValueError(f"compute.steps is only used with compute.control=same_steps (got {self.compute.steps} with same_epochs); set it to null")
        if self.compute.control == "same_steps" and self.compute.steps is None and "baseline" not in self.conditions:
            raise ValueError("compute.control=same_steps without compute.steps takes baseline's steps, but 'baseline' is not in conditions; set compute.steps")

    @property
    def needs_pseudo_labels(self) -> bool:
        return any(c in PSEUDO_LABEL_CONDITIONS for c in self.conditions)


# ----------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class ConditionRun:
    """One training + evaluation of the study: ``condition`` trained by ``trainer`` in ``round``.

    ``base`` has no trainer (evaluated once). ``name`` is the report's condition name, unique in a
    plan: ``"base"``, ``"sft/baseline"``, ``"grpo/noisy_student/round2"``.
    """

    condition: str
    trainer: str | None
    round: int

    @property
    def name(self) -> str:
        if self.trainer is None:
            return self.condition
        suffix = f"/round{self.round}" if self.round > 1 else ""
        return f"{self.trainer}/{self.condition}{suffix}"


def plan_runs(config: NoisyStudentConfig) -> list[ConditionRun]:
    """Every run of the study in execution order.

    ``base`` once; then per trainer, round 1 trains every configured condition and each later
    round retrains only the pseudo-label conditions (their labels changed; the others did not).
    """
    runs = [ConditionRun("base", None, 1)] if "base" in config.conditions else []
    for trainer in config.trainers:
        for round_index in range(1, config.rounds + 1):
            for condition in config.conditions:
                if condition == "base" or (round_index > 1 and condition not in PSEUDO_LABEL_CONDITIONS):
                    continue
                runs.append(ConditionRun(condition, trainer, round_index))
    return runs


# ------------------------------------------------------------------------- condition datasets
def _with_gold(record: ProblemRecord) -> ProblemRecord:
    if record.answer is None:
        raise ValueError(f"labelled record {record.record_id} has no answer; labelled and oracle problems need their gold label")
    return record


def build_condition_dataset(
    condition: str,
    *,
    trainer: str,
    labelled: list[ProblemRecord],
    unlabelled: list[ProblemRecord],
    pseudo_labels: list[PseudoLabeledProblem] | None,
    sft_gold_template: str = "{answer}",
) -> list[ProblemRecord]:
    """The training problems of ``condition`` (pure: no model, no I/O). Labelled first, then the rest.

    ``unlabelled`` are the unlabelled split's records WITH their hidden gold (read only by
    ``oracle``); ``pseudo_labels`` their consensus labels (needed by the pseudo-label conditions;
    problems without a consensus answer are left out -- there is nothing to train them on). SFT
    gets worked targets (a pseudo-labelled problem's consensus response), GRPO bare answers (the
    pseudo answer), see the module docstring. ``base`` trains on nothing: ``[]``.

    ``sft_gold_template`` formats an SFT target from a gold answer that is not already a worked
    solution (no ``####``), e.g. ``"#### {answer}"`` for the built-in task, whose gold answers are
    bare numbers, when the prompt asks for a ``####`` line. GRPO targets are never reformatted.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {list(CONDITIONS)}")
    if trainer not in TRAINERS:
        raise ValueError(f"unknown trainer {trainer!r}; choose from {list(TRAINERS)}")
    if condition == "base":
        return []
    if "{answer}" not in sft_gold_template:
        raise ValueError(f"sft_gold_template {sft_gold_template!r} must contain '{{answer}}'")

    def gold_target(record: ProblemRecord) -> ProblemRecord:
        record = _with_gold(record)
        if trainer == "sft" and "####" not in record.answer:
            return replace(record, answer=sft_gold_template.format(answer=record.answer))
        return record  # a worked solution (SFT) or the answer the GRPO reward checks

    gold = [gold_target(record) for record in labelled]
    if condition == "baseline":
        return gold
    if condition == "oracle":
        return gold + [gold_target(record) for record in unlabelled]
    if pseudo_labels is None:
        raise ValueError(f"condition {condition!r} trains on pseudo-labels; pass pseudo_labels (from generate_pseudo_labels or load_pseudo_labels)")
    with_solution = trainer == "sft"
    if condition == "filtered":
        pseudo = [label.to_record(with_solution=with_solution) for label in pseudo_labels if label.confident]
    else:
        pseudo = [label.to_record(with_solution=with_solution) for label in pseudo_labels if label.pseudo_answer is not None]
    return pseudo if condition == "pseudo_only" else gold + pseudo


# ---------------------------------------------------------------------------------- budgets
@dataclass(frozen=True)
class TrainingBudget:
    """How long one condition trains: ``steps`` optimizer steps of ``batch_size`` problems, which
    is ``epochs`` passes over its ``num_examples`` problems (fractional under same_steps)."""

    num_examples: int
    steps: int
    epochs: float


def _steps_for(num_examples: int, epochs: float, batch_size: int) -> int:
    return math.ceil(num_examples * epochs / batch_size) if num_examples else 0


def plan_training_budgets(dataset_sizes: dict[str, int], compute: ComputeConfig) -> dict[str, TrainingBudget]:
    """Steps per condition under the compute control (``dataset_sizes``: condition -> problems).

    same_epochs: ``ceil(n * epochs / batch_size)`` each (seed 004 V1: baseline 1K -> ~500 steps,
    noisy student 5K -> ~2500 at 2 epochs, batch 4). same_steps: ``compute.steps`` for all, or the
    ``baseline`` entry's same_epochs steps. A condition with no data (``base``) gets 0 steps.
    """
    if compute.control == "same_epochs":
        return {name: TrainingBudget(n, _steps_for(n, compute.epochs, compute.batch_size), compute.epochs if n else 0.0)
                for name, n in dataset_sizes.items()}
    steps = compute.steps
    if steps is None:
        if "baseline" not in dataset_sizes:
            raise ValueError(f"same_steps without compute.steps needs a 'baseline' entry to copy its step count; got {sorted(dataset_sizes)}")
        steps = _steps_for(dataset_sizes["baseline"], compute.epochs, compute.batch_size)
    return {name: TrainingBudget(n, steps if n else 0, steps * compute.batch_size / n if n else 0.0) for name, n in dataset_sizes.items()}
