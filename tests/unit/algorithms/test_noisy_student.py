"""Consensus pseudo-labels: majority, ties, abstentions, k override, normalisation."""

from __future__ import annotations

import pytest

from nemo_distill.algorithms.noisy_student import PseudoLabel, consensus_label, pseudo_label


def test_consensus_label_majority_and_agreement():
    assert consensus_label(["3", "5", "3", "3"]) == ("3", 0.75)
    assert consensus_label(["7"]) == ("7", 1.0)


def test_consensus_label_ties_go_to_the_earliest_seen_answer():
    assert consensus_label(["5", "3", "3", "5"]) == ("5", 0.5)
    assert consensus_label(["3", "5", "5", "3"]) == ("3", 0.5)
    assert consensus_label([None, "9", "2"]) == ("9", pytest.approx(1 / 3))


def test_consensus_label_none_answers_abstain_but_count_in_k():
    assert consensus_label([None, "4", None, "4"]) == ("4", 0.5)
    assert consensus_label([None, None]) == (None, 0.0)
    assert consensus_label([]) == (None, 0.0)
    assert consensus_label(["", "  ", "2"]) == ("2", pytest.approx(1 / 3))


def test_consensus_label_k_override():
    # Eight samples were drawn but only three produced text: agreement is out of 8.
    assert consensus_label(["4", "4", "1"], k=8) == ("4", 0.25)
    with pytest.raises(ValueError, match="k=2"):
        consensus_label(["4", "4", "1"], k=2)
    with pytest.raises(ValueError, match="k=0"):
        consensus_label([], k=0)


def test_consensus_label_compares_normalised_answers():
    answer, agreement = consensus_label(["1,000", "1000", "$1000", "999", "1000.0"])
    assert (answer, agreement) == ("1000", 0.8)
    assert consensus_label(["**18**.", "18", "17"]) == ("18", pytest.approx(2 / 3))


def test_pseudo_label_confidence_filter():
    label = pseudo_label(["6", "6", "6", "2"])
    assert label == PseudoLabel(answer="6", votes=3, num_samples=4)
    assert label.is_confident(0.75) and not label.is_confident(0.8)
    assert not pseudo_label([None, None]).is_confident(0.0)


# ------------------------------------------------------------------ the study's plan (config, runs, datasets, budgets)
from nemo_distill.algorithms.noisy_student import (  # noqa: E402
    CONDITIONS,
    ComputeConfig,
    ConditionRun,
    EvalConfig,
    NoisyStudentConfig,
    TrainingBudget,
    build_condition_dataset,
    plan_runs,
    plan_training_budgets,
)
from nemo_distill.algorithms.pseudo_labels import PseudoLabelConfig, PseudoLabeledProblem  # noqa: E402
from nemo_distill.config import ConfigError, validate  # noqa: E402
from nemo_distill.data.datasets import ProblemRecord  # noqa: E402

LABELLED = [ProblemRecord(f"L{i}", f"work\n#### {i}", f"l-{i}") for i in range(2)]
UNLABELLED = [ProblemRecord(f"U{i}", f"work\n#### {10 + i}", f"u-{i}") for i in range(3)]
PSEUDO = [
    PseudoLabeledProblem("u-0", "U0", "10", 1.0, 4, 4, True, "10", True, ["10"] * 4, "so #### 10"),
    PseudoLabeledProblem("u-1", "U1", "7", 0.5, 2, 4, False, "11", False, ["7", "7", "8", None], "it is 7"),
    PseudoLabeledProblem("u-2", "U2", None, 0.0, 0, 4, False, "12", False, [None] * 4, None),
]


def _rows(records):
    return [(r.record_id, r.problem, r.answer) for r in records]


def test_config_defaults_follow_the_seed():
    config = NoisyStudentConfig()
    assert (config.splits.num_labelled, config.splits.num_unlabelled, config.splits.num_test) == (1000, 4000, 500)
    assert (config.pseudo_label.num_samples, config.pseudo_label.temperature, config.pseudo_label.min_agreement) == (8, 0.7, 0.75)
    assert (config.eval.temperature, config.eval.max_new_tokens, config.eval.greedy) == (0.1, 256, False)
    sampling = config.eval.sampling_params()
    assert (sampling.temperature, sampling.max_new_tokens, sampling.n, sampling.seed) == (0.1, 256, 1, 42)
    assert EvalConfig(greedy=True).sampling_params().is_greedy and EvalConfig(temperature=0.0).sampling_params().is_greedy
    assert (config.lora.enabled, config.lora.rank, config.lora.alpha, config.lora.lr_multiplier) == (False, 8, 32, 10.0)
    assert (config.compute.control, config.compute.epochs, config.rounds, config.trainers) == ("same_epochs", 2.0, 1, ["sft"])
    assert config.conditions == list(CONDITIONS) and config.needs_pseudo_labels
    assert not NoisyStudentConfig(conditions=["base", "oracle"]).needs_pseudo_labels


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"conditions": ["baseline", "teacher"]}, "conditions must be a non-empty list"),
        ({"conditions": []}, "conditions must be a non-empty list"),
        ({"conditions": ["baseline", "baseline"]}, "conditions lists a condition twice"),
        ({"trainers": ["ppo"]}, r"trainers must .* \['ppo'\]"),
        ({"rounds": 2, "relabel_with": "base"}, "relabel_with must name a trained condition"),
        ({"rounds": 2, "conditions": ["baseline", "filtered"]}, "relabel_with='noisy_student' .* not in conditions"),
        ({"compute": ComputeConfig(steps=10)}, "compute.steps is only used with compute.control=same_steps"),
        ({"compute": ComputeConfig(control="same_steps"), "conditions": ["oracle"]}, "'baseline' is not in conditions; set compute.steps"),
    ],
)
def test_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NoisyStudentConfig(**kwargs)


def test_config_through_the_schema():
    config = validate(
        {"conditions": ["baseline", "filtered"], "trainers": ["grpo"], "lora": {"enabled": True}, "pseudo_label": {"num_samples": 16},
         "compute": {"control": "same_steps"}, "splits": {"num_unlabelled": 100}},
        NoisyStudentConfig,
    )
    assert (config.conditions, config.trainers, config.pseudo_label.num_samples, config.splits.num_unlabelled) == (["baseline", "filtered"], ["grpo"], 16, 100)
    assert (config.lora.enabled, config.lora.rank, config.lora.alpha, config.lora.lr_multiplier) == (True, 8, 32, 10.0)  # defaults in one place
    for values, key in [({"conditions": ["teachr"]}, "conditions[0]"), ({"psuedo_label": {}}, "psuedo_label"),
                        ({"pseudo_label": {"num_samples": 0}}, "pseudo_label.num_samples"), ({"rounds": 0}, "rounds"),
                        ({"eval": {"max_new_tokens": 0}}, "eval.max_new_tokens"), ({"compute": {"control": "same_time"}}, "compute.control")]:
        with pytest.raises(ConfigError) as info:
            validate(values, NoisyStudentConfig)
        assert info.value.key_path == key, values
    with pytest.raises(ConfigError, match="conditions lists a condition twice"):
        validate({"conditions": ["oracle", "oracle"]}, NoisyStudentConfig)


def test_plan_runs_rounds_and_trainers():
    config = NoisyStudentConfig(conditions=["base", "baseline", "filtered", "oracle"], trainers=["sft", "grpo"], rounds=2, relabel_with="filtered")
    names = [run.name for run in plan_runs(config)]
    assert names == [
        "base",
        "sft/baseline", "sft/filtered", "sft/oracle", "sft/filtered/round2",
        "grpo/baseline", "grpo/filtered", "grpo/oracle", "grpo/filtered/round2",
    ]
    assert plan_runs(config)[0] == ConditionRun("base", None, 1)
    assert [run.name for run in plan_runs(NoisyStudentConfig(conditions=["oracle"]))] == ["sft/oracle"]


def test_build_condition_datasets_sft():
    kwargs = dict(trainer="sft", labelled=LABELLED, unlabelled=UNLABELLED, pseudo_labels=PSEUDO)
    gold = _rows(LABELLED)
    assert build_condition_dataset("base", **kwargs) == []
    assert _rows(build_condition_dataset("baseline", **kwargs)) == gold
    assert _rows(build_condition_dataset("oracle", **kwargs)) == gold + _rows(UNLABELLED)
    # SFT targets of pseudo-labelled problems: the consensus response; u-2 has no label and is left out.
    assert _rows(build_condition_dataset("noisy_student", **kwargs)) == gold + [("u-0", "U0", "so #### 10"), ("u-1", "U1", "it is 7")]
    assert _rows(build_condition_dataset("filtered", **kwargs)) == gold + [("u-0", "U0", "so #### 10")]
    assert _rows(build_condition_dataset("pseudo_only", **kwargs)) == [("u-0", "U0", "so #### 10"), ("u-1", "U1", "it is 7")]


def test_build_condition_datasets_grpo_uses_bare_answers():
    kwargs = dict(trainer="grpo", labelled=LABELLED, unlabelled=UNLABELLED, pseudo_labels=PSEUDO)
    assert _rows(build_condition_dataset("noisy_student", **kwargs))[2:] == [("u-0", "U0", "10"), ("u-1", "U1", "7")]
    assert _rows(build_condition_dataset("pseudo_only", **kwargs)) == [("u-0", "U0", "10"), ("u-1", "U1", "7")]


def test_build_condition_dataset_errors():
    kwargs = dict(labelled=LABELLED, unlabelled=UNLABELLED, pseudo_labels=None)
    with pytest.raises(ValueError, match="trains on pseudo-labels"):
        build_condition_dataset("filtered", trainer="sft", **kwargs)
    assert len(build_condition_dataset("oracle", trainer="sft", **kwargs)) == 5  # oracle needs no pseudo-labels
    with pytest.raises(ValueError, match="unknown condition 'teacher'"):
        build_condition_dataset("teacher", trainer="sft", **kwargs)
    with pytest.raises(ValueError, match="unknown trainer 'ppo'"):
        build_condition_dataset("baseline", trainer="ppo", **kwargs)
    with pytest.raises(ValueError, match="labelled record x has no answer"):
        build_condition_dataset("baseline", trainer="sft", labelled=[ProblemRecord("p", None, "x")], unlabelled=[], pseudo_labels=None)


def test_training_budgets_same_epochs_reproduces_seed_v1():
    # Seed 004 V1: 2 epochs, batch 4: baseline 1K -> 500 steps, noisy student 5K -> 2500 steps.
    budgets = plan_training_budgets({"base": 0, "baseline": 1000, "noisy_student": 5000}, ComputeConfig(epochs=2, batch_size=4))
    assert budgets == {"base": TrainingBudget(0, 0, 0.0), "baseline": TrainingBudget(1000, 500, 2.0), "noisy_student": TrainingBudget(5000, 2500, 2.0)}
    assert plan_training_budgets({"x": 5}, ComputeConfig(epochs=1, batch_size=4))["x"].steps == 2  # ceil(5 / 4)


def test_training_budgets_same_steps():
    sizes = {"baseline": 1000, "filtered": 1981, "noisy_student": 5000}
    budgets = plan_training_budgets(sizes, ComputeConfig(control="same_steps", epochs=2, batch_size=4))
    assert {name: b.steps for name, b in budgets.items()} == {"baseline": 500, "filtered": 500, "noisy_student": 500}
    assert budgets["noisy_student"].epochs == pytest.approx(0.4)  # 500 steps x 4 / 5000
    assert budgets["filtered"].epochs == pytest.approx(2000 / 1981)
    fixed = plan_training_budgets({"oracle": 10}, ComputeConfig(control="same_steps", steps=7, batch_size=2))
    assert fixed["oracle"] == TrainingBudget(10, 7, 1.4)
    with pytest.raises(ValueError, match="needs a 'baseline' entry"):
        plan_training_budgets({"oracle": 10}, ComputeConfig(control="same_steps"))


def test_sft_gold_template_for_bare_gold_answers():
    bare = [ProblemRecord("What is 2+3?", "5", "a-0")]
    kwargs = dict(labelled=bare, unlabelled=[ProblemRecord("1+1?", "2", "a-1")], pseudo_labels=None)
    assert _rows(build_condition_dataset("oracle", trainer="sft", sft_gold_template="#### {answer}", **kwargs)) == [
        ("a-0", "What is 2+3?", "#### 5"), ("a-1", "1+1?", "#### 2")]
    assert _rows(build_condition_dataset("baseline", trainer="grpo", sft_gold_template="#### {answer}", **kwargs)) == [("a-0", "What is 2+3?", "5")]
    # A worked solution is kept as it is.
    assert _rows(build_condition_dataset("baseline", trainer="sft", sft_gold_template="#### {answer}", labelled=LABELLED,
                                         unlabelled=[], pseudo_labels=None)) == _rows(LABELLED)
    with pytest.raises(ValueError, match="must contain"):
        build_condition_dataset("baseline", trainer="sft", sft_gold_template="####", **kwargs)


def test_pieces_compose_without_training(tmp_path):
    # splits -> pseudo-labels (fake sampler) -> condition sets -> budgets -> (fake) evaluation -> report files.
    from nemo_distill.algorithms.noisy_student_report import ConditionEval, build_report, write_report
    from nemo_distill.algorithms.pseudo_labels import generate_pseudo_labels, summarize_pseudo_labels
    from nemo_distill.data.arithmetic import generate_arithmetic_problems
    from nemo_distill.data.processors import ProcessedPrompt
    from nemo_distill.data.splits import split_problems
    from nemo_distill.models.generation.interfaces import GeneratedSample, GenerationOutput

    class EveryOtherRight:  # a sampler right on even problems' 3 of 4 samples, wrong on odd ones
        def generate(self, request):
            samples = []
            for index, ids in enumerate(request.prompt_token_ids):
                gold = int(records_by_id[ids[0]].answer)
                answers = [gold, gold, gold, gold + 1] if ids[0] % 2 == 0 else [gold + 1, gold + 2, gold, gold + 3]
                samples += [GeneratedSample(index, [1], [-0.1], f"#### {a}", "stop") for a in answers[: request.sampling.n]]
            return GenerationOutput(samples)

    config = NoisyStudentConfig(conditions=["base", "baseline", "filtered", "oracle"], trainers=["sft", "grpo"],
                                pseudo_label=PseudoLabelConfig(num_samples=4))
    config.splits.num_labelled, config.splits.num_unlabelled, config.splits.num_test = 4, 8, 6
    splits = split_problems(generate_arithmetic_problems(18, split="train"), config.splits)
    records_by_id = dict(enumerate(splits.unlabelled))
    prompts = [ProcessedPrompt(record, record.problem, record.problem, [i], False) for i, record in records_by_id.items()]
    labels = generate_pseudo_labels(EveryOtherRight(), prompts, config.pseudo_label, show_progress=False).labels
    stats = summarize_pseudo_labels(labels, min_agreement=config.pseudo_label.min_agreement)
    assert (stats.num_confident, stats.confident_accuracy, stats.accuracy) == (4, 1.0, 0.5)
    evals = []
    for run in plan_runs(config):
        data = build_condition_dataset(run.condition, trainer=run.trainer or "sft", labelled=splits.labelled,
                                       unlabelled=splits.unlabelled, pseudo_labels=labels)
        budget = plan_training_budgets({run.name: len(data)}, config.compute)[run.name]
        assert len(data) == {"base": 0, "baseline": 4, "filtered": 8, "oracle": 12}[run.condition]
        assert budget.steps == (0 if run.condition == "base" else -(-len(data) * 2 // 4))
        correct = [i < min(len(data), 6) // 2 for i in range(6)]  # stand-in for the trained model's test answers
        evals.append(ConditionEval(run.name, correct, [r.record_id for r in splits.test], trainer=run.trainer, num_train_examples=len(data)))
    files = write_report(build_report(evals, pseudo_label_stats=stats), tmp_path)
    assert "| grpo/filtered | grpo | 50.0% |" in files.markdown.read_text()
    assert files.agreement_png.is_file()
