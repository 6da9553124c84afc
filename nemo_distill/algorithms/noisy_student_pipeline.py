"""The noisy-student study (seed 004) as one resumable pipeline on one cluster.

``examples/run_noisy_student.py`` runs it from one config; top to bottom (:func:`run_study`)::

    splits        = split_problems(pool)                            -> splits/{labelled,unlabelled,test}.jsonl
    base          = evaluate(initial weights, test split)           -> conditions/base/predictions.jsonl
    labels[1]     = K samples per unlabelled prompt, majority vote  -> pseudo_labels/round1.jsonl
    for trainer in trainers, round in rounds, condition in conditions (plan_runs):
        labels[r] = re-label with (trainer, relabel_with, r-1)'s model  (r > 1)
                                                                    -> pseudo_labels/<trainer>_round<r>.jsonl
        policy.reset()                      # the SAME initial weights, fresh optimizer; no restart
        sft.train(rt) | grpo.train(rt)      # the shared loops, on the condition's training set
        evaluate(test split)                -> conditions/<name>/predictions.jsonl (+ checkpoint/, metrics.jsonl)
    report                                  -> report/{report.md, report.json, accuracy.png, agreement.png}

Every phase writes its output atomically; a rerun with the same config finds it, says
``skipped (finished earlier)`` and moves on, and starts the workers only when some phase still has
to run. ``timings.json`` keeps each phase's wall time. The pieces live in :mod:`.pseudo_labels`,
:mod:`.noisy_student` (plan, condition datasets, budgets) and :mod:`.noisy_student_report`;
this module only chains them. Data, condition datasets and study config: docs/noisy_student.md.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from nemo_distill.algorithms import grpo as grpo_algorithm
from nemo_distill.algorithms import sft as sft_algorithm
from nemo_distill.algorithms.grpo_config import GRPOMasterConfig, check_grpo_config, needs_frozen_model
from nemo_distill.algorithms.noisy_student import (
    PSEUDO_LABEL_CONDITIONS,
    ConditionRun,
    NoisyStudentConfig,
    build_condition_dataset,
    plan_runs,
    plan_training_budgets,
)
from nemo_distill.algorithms.noisy_student_report import ConditionEval, build_report, load_predictions, save_predictions, write_report
from nemo_distill.algorithms.pseudo_labels import PseudoLabeledProblem, load_or_generate_pseudo_labels, summarize_pseudo_labels
from nemo_distill.algorithms.runtime import Runtime, build_processor, build_runtime, generation_awake, refit_if_stale
from nemo_distill.algorithms.runtime_config import check_runtime_config
from nemo_distill.algorithms.sft import SFTConfig
from nemo_distill.config import ConfigError
from nemo_distill.data.dataloader import PromptDataLoader
from nemo_distill.data.datasets import ProblemRecord, load_problems, resolve_source
from nemo_distill.data.processors import ProcessedPrompt
from nemo_distill.data.splits import DataSplits, split_problems
from nemo_distill.models.generation.interfaces import GenerationRequest
from nemo_distill.models.policy.config import LoraConfig, OptimizerConfig
from nemo_distill.utils.logger import Logger
from nemo_distill.utils.plot import plot_metric_curves
from nemo_distill.utils.progress import progress_bar
from nemo_distill.utils.timer import Timer


# ------------------------------------------------------------------------------------------ config
@dataclass
class PipelineConfig:
    """``pipeline``: where the study writes and how phases run (the study itself is ``noisy_student``)."""

    output_dir: str = "results/noisy_student"  # every phase's output; a rerun with the same folder resumes
    test_source: Literal["pool", "validation"] = "pool"  # pool: test drawn from the train data; validation: data.validation's file
    sft_gold_template: str = "#### {answer}"  # SFT target of a bare gold answer without a worked solution
    save_checkpoints: bool = True  # every trained condition's final weights (the relabel model is saved regardless)
    eval_prompts_per_chunk: int = field(default=64, metadata={"ge": 1})  # test prompts per generation request
    sft_lr: float | None = None  # SFT's learning rate; None = policy.optimizer.lr
    grpo_lr: float | None = None  # GRPO's learning rate; None = policy.optimizer.lr


@dataclass
class NoisyStudentMasterConfig(GRPOMasterConfig):
    """The whole config of ``examples/run_noisy_student.py``: the runtime sections, both loops'
    sections (``sft``, ``grpo`` with ``loss_fn`` / ``teacher``), the study and the pipeline."""

    sft: SFTConfig = field(default_factory=SFTConfig)
    noisy_student: NoisyStudentConfig = field(default_factory=NoisyStudentConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


def check_noisy_student_config(cfg: NoisyStudentMasterConfig) -> None:
    """Cross-section checks, each a ``ConfigError`` naming the key and the fix, before any worker starts."""
    batch = cfg.noisy_student.compute.batch_size
    for trainer in cfg.noisy_student.trainers:
        loop = getattr(cfg, trainer)
        if loop.num_prompts_per_step != batch:
            raise ConfigError(f"{trainer}.num_prompts_per_step",
                              f"is {loop.num_prompts_per_step} but noisy_student.compute.batch_size is {batch}; they are the same "
                              f"number (problems per step): set {trainer}.num_prompts_per_step: ${{noisy_student.compute.batch_size}}")
    if "grpo" in cfg.noisy_student.trainers:
        check_grpo_config(cfg)
    else:
        check_runtime_config(cfg, samples_per_step=cfg.policy.train_global_batch_size, samples_key="policy.train_global_batch_size")
    if cfg.policy.lora.enabled and not cfg.noisy_student.lora.enabled:
        raise ConfigError("policy.lora.enabled", "the study's LoRA is noisy_student.lora (rank 8, alpha 32, its LR multiplier); "
                          "set noisy_student.lora.enabled=true and leave policy.lora alone")
    if "{answer}" not in cfg.pipeline.sft_gold_template:
        raise ConfigError("pipeline.sft_gold_template", f"{cfg.pipeline.sft_gold_template!r} must contain '{{answer}}'")
    if cfg.pipeline.test_source == "pool" and cfg.data.default.num_samples is not None:
        splits = cfg.noisy_student.splits
        needed = splits.num_labelled + splits.num_unlabelled + splits.num_test
        if cfg.data.default.num_samples < needed:
            raise ConfigError("data.default.num_samples", f"is {cfg.data.default.num_samples} but the splits need {needed} problems "
                              "(num_labelled + num_unlabelled + num_test); raise it or lower noisy_student.splits")


def trainer_config(cfg: NoisyStudentMasterConfig, trainer: str, steps: int, num_examples: int) -> NoisyStudentMasterConfig:
    """A copy of ``cfg`` whose ``trainer`` loop runs ``steps`` steps on ``num_examples`` problems, without
    validation or step checkpoints (the pipeline evaluates and saves per condition); for SFT the
    global batch is one step's problems."""
    run_cfg = copy.deepcopy(cfg)
    batch = cfg.noisy_student.compute.batch_size
    batches_per_epoch = num_examples // batch  # the loader drops a short last batch
    loop = replace(getattr(run_cfg, trainer), max_num_steps=steps, max_num_epochs=max(1, math.ceil(steps / max(batches_per_epoch, 1))),
                   num_prompts_per_step=batch, val_period=0, val_at_start=False, val_at_end=False)
    setattr(run_cfg, trainer, loop)
    if trainer == "sft":
        run_cfg.policy.train_global_batch_size = batch
    run_cfg.checkpointing.enabled = False
    return run_cfg


def optimizer_for(cfg: NoisyStudentMasterConfig, trainer: str) -> OptimizerConfig:
    """``policy.optimizer`` with the trainer's LR (``pipeline.<trainer>_lr``), times the LoRA multiplier under LoRA."""
    lr = getattr(cfg.pipeline, f"{trainer}_lr") or cfg.policy.optimizer.lr
    if cfg.noisy_student.lora.enabled:
        lr *= cfg.noisy_student.lora.lr_multiplier
    return replace(cfg.policy.optimizer, lr=lr)


def runtime_config(cfg: NoisyStudentMasterConfig) -> NoisyStudentMasterConfig:
    """The config the cluster starts with: ``noisy_student.lora`` becomes ``policy.lora``; no step checkpoints."""
    started = copy.deepcopy(cfg)
    lora = cfg.noisy_student.lora
    started.policy.lora = LoraConfig(**{f: getattr(lora, f) for f in LoraConfig.__dataclass_fields__})
    started.checkpointing.enabled = False
    started.logger.exp_numbering = False
    started.logger.log_dir = str(Path(cfg.pipeline.output_dir) / "logs")
    return started


# ------------------------------------------------------------------------------------------ runtime
def retarget_runtime(rt: Runtime, *, cfg: Any, loop: Any, train_prompts: list[ProcessedPrompt], run_dir: Path,
                     optimizer_cfg: OptimizerConfig | None = None, total_steps: int | None = None,
                     val_prompts: list[ProcessedPrompt] | None = None) -> None:
    """Point a started :class:`Runtime` at a new run without restarting its workers.

    New config / loop section, prompts and loader, a fresh logger in ``run_dir`` (its old
    ``metrics.jsonl`` removed: the run starts over), step 1, empty history and counters, generation
    marked stale, and the policy reset to its initial weights with a fresh optimizer
    (``optimizer_cfg``, default ``cfg.policy.optimizer``) and schedule over ``total_steps``.
    """
    rt.logger.close()
    rt.cfg, rt.loop = cfg, loop
    rt.train_prompts, rt.val_prompts = list(train_prompts), list(val_prompts or [])
    rt.train_loader = PromptDataLoader(rt.train_prompts, batch_size=loop.num_prompts_per_step, seed=loop.seed, shuffle=cfg.data.shuffle)
    rt.run_dir = Path(run_dir)
    rt.run_dir.mkdir(parents=True, exist_ok=True)
    (rt.run_dir / "metrics.jsonl").unlink(missing_ok=True)
    rt.logger = Logger(cfg.logger, rt.run_dir)
    rt.timer, rt.start_step, rt.history = Timer(), 1, []
    rt.skipped_steps = rt.consecutive_skipped_steps = 0
    rt.generation_is_stale = True
    rt.policy.reset(optimizer_cfg or cfg.policy.optimizer, cfg.policy.scheduler, total_steps)


def generate_responses(rt: Runtime, prompts: list[ProcessedPrompt], sampling, *, chunk: int, desc: str) -> list[str]:
    """One response per prompt from the generation workers (refit first if the policy changed).
    A prompt longer than ``data.max_input_seq_length`` is not generated for: its response is ``""``."""
    refit_if_stale(rt)
    responses = [""] * len(prompts)
    with generation_awake(rt):
        for start in progress_bar(range(0, len(prompts), chunk), desc=desc, unit="batch"):
            part = prompts[start : start + chunk]
            runnable = [i for i, prompt in enumerate(part) if not prompt.too_long]
            if not runnable:
                continue
            output = rt.generation.generate(GenerationRequest([part[i].prompt_token_ids for i in runnable], sampling))
            for sample in output.samples:
                responses[start + runnable[sample.prompt_index]] = sample.text
    return responses


# ------------------------------------------------------------------------------------------ outputs
def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))
    partial.replace(path)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_or_check_splits(splits: DataSplits, folder: Path) -> bool:
    """Save the splits as JSONL (one record per row), or check they equal the saved ones; True when reused.

    Raises ``ConfigError`` when the saved splits hold other problems: the config changed and the
    saved phases would no longer match; choose another ``pipeline.output_dir``.
    """
    parts = {"labelled": splits.labelled, "unlabelled": splits.unlabelled, "test": splits.test}
    if all((folder / f"{name}.jsonl").is_file() for name in parts):
        for name, records in parts.items():
            saved = [row["record_id"] for row in _read_jsonl(folder / f"{name}.jsonl")]
            if saved != [record.record_id for record in records]:
                raise ConfigError("pipeline.output_dir", f"{folder / (name + '.jsonl')} holds other problems than this config's "
                                  f"{name} split ({len(saved)} saved vs {len(records)}); use a new pipeline.output_dir or delete it")
        return True
    for name, records in parts.items():
        _write_jsonl(folder / f"{name}.jsonl", [asdict(record) for record in records])
    return False


class PhaseLog:
    """Wall time per phase in ``timings.json``; a skipped phase keeps the time it took when it ran."""

    def __init__(self, path: Path):
        self.path = path
        self.phases: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}

    def done(self, name: str, seconds: float, **extra: Any) -> None:
        self.phases[name] = {"seconds": round(seconds, 2), **extra}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.phases, indent=2) + "\n")

    @staticmethod
    def skipped(name: str, where: Path) -> None:
        print(f"noisy-student: {name}: skipped (finished earlier: {where})", flush=True)


def run_folder(output_dir: Path, run: ConditionRun) -> Path:
    """``conditions/<trainer>_<condition>[_round<r>]`` (``conditions/base`` for the untrained model)."""
    return output_dir / "conditions" / run.name.replace("/", "_")


def training_records(records: list[ProblemRecord], trainer: str) -> list[ProblemRecord]:
    """SFT trains on ``metadata["response"]``: a gold record keeps its worked response when it has one
    (the built-in task's), anything else trains on its (formatted) answer text. GRPO records as they are."""
    if trainer != "sft":
        return records
    return [replace(r, metadata={**r.metadata, "response": r.metadata.get("response") or r.answer}) for r in records]


def labels_accuracy(condition: str, labels: list[PseudoLabeledProblem] | None) -> float | None:
    """Accuracy (against hidden gold) of the pseudo-labels ``condition`` trains on; None for gold-only conditions."""
    if condition not in PSEUDO_LABEL_CONDITIONS or not labels:
        return None
    used = [label for label in labels if label.pseudo_answer is not None and (label.confident or condition != "filtered")]
    scored = [label.correct for label in used if label.correct is not None]
    return sum(scored) / len(scored) if scored else None


def report_pairs(names: list[str], trainers: list[str]) -> list[tuple[str, str]] | None:
    """Every condition vs its trainer's ``baseline``, each baseline vs ``base``, and SFT vs GRPO on the same
    condition (None = every pair, when there is no baseline)."""
    pairs: list[tuple[str, str]] = []
    for trainer in trainers:
        baseline = f"{trainer}/baseline"
        if baseline not in names:
            return None
        pairs += [(name, baseline) for name in names if name.startswith(f"{trainer}/") and name != baseline]
        if "base" in names:
            pairs.append((baseline, "base"))
    if {"sft", "grpo"} <= set(trainers):
        pairs += [(name, "grpo/" + name[4:]) for name in names if name.startswith("sft/") and "grpo/" + name[4:] in names]
    return pairs


# ------------------------------------------------------------------------------------------ the study
@dataclass
class StudyResult:
    report_dir: Path
    ran: list[str]  # phases run by this call
    skipped: list[str]  # phases found finished


def load_pool(cfg: NoisyStudentMasterConfig) -> DataSplits:
    """The splits: a seeded cut of the train data (``test_source=pool``) or train + ``data.validation``'s test file."""
    data = cfg.data
    records = load_problems(resolve_source(data.default, data.train), split="train", seed=data.seed, on_bad_row=data.on_bad_row)
    test = None
    if cfg.pipeline.test_source == "validation":
        test = load_problems(resolve_source(data.default, data.validation), split="validation", seed=data.seed, on_bad_row=data.on_bad_row)
    return split_problems(list(records), cfg.noisy_student.splits, test_records=list(test) if test is not None else None)


def run_study(cfg: NoisyStudentMasterConfig, config_yaml: str) -> StudyResult:
    """Run (or resume) the whole study; returns where the report is. See the module docstring."""
    check_noisy_student_config(cfg)
    study, out = cfg.noisy_student, Path(cfg.pipeline.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config_yaml)
    phases, ran, skipped = PhaseLog(out / "timings.json"), [], []
    started = time.perf_counter()
    splits = load_pool(cfg)
    if save_or_check_splits(splits, out / "splits"):
        PhaseLog.skipped("splits", out / "splits")
        skipped.append("splits")
    else:
        phases.done("splits", time.perf_counter() - started, **splits.sizes())
        ran.append("splits")
    runs = plan_runs(study)
    state: dict[str, Any] = {"rt": None}

    def runtime() -> Runtime:  # started on first need: a rerun with every phase done starts no worker
        if state["rt"] is None:
            t0 = time.perf_counter()
            rt_cfg = runtime_config(cfg)
            first = study.trainers[0]
            state["rt"] = build_runtime(rt_cfg, config_yaml, loop=getattr(rt_cfg, first), with_generation=True,
                                        frozen=rt_cfg.teacher if "grpo" in study.trainers and needs_frozen_model(rt_cfg) else None)
            state["processor"] = build_processor(rt_cfg, state["rt"].tokenizer, "train")[0]
            phases.done("startup", time.perf_counter() - t0)
        return state["rt"]

    def prompts(records: list[ProblemRecord]) -> list[ProcessedPrompt]:
        runtime()
        return [state["processor"].process(record) for record in records]

    def evaluate(name: str, folder: Path, **fields: Any) -> None:
        t0 = time.perf_counter()
        rt = runtime()
        responses = generate_responses(rt, prompts(splits.test), study.eval.sampling_params(), chunk=cfg.pipeline.eval_prompts_per_chunk,
                                       desc=f"evaluate {name}")
        evaluation = ConditionEval.from_responses(name, responses, splits.test, use_math_verify=study.eval.use_math_verify, **fields)
        save_predictions(folder / "predictions.jsonl", responses, splits.test, evaluation)
        accuracy = sum(evaluation.correct) / max(len(evaluation.correct), 1)
        print(f"noisy-student: {name}: test accuracy {accuracy:.3f} ({sum(evaluation.correct)}/{len(evaluation.correct)})", flush=True)
        phases.done(f"evaluate {name}", time.perf_counter() - t0, accuracy=accuracy)

    labels: dict[tuple[str | None, int], list[PseudoLabeledProblem]] = {}

    def labels_for(trainer: str, round_index: int) -> list[PseudoLabeledProblem]:
        key = (None, 1) if round_index == 1 else (trainer, round_index)
        if key in labels:
            return labels[key]
        name = "round1" if round_index == 1 else f"{trainer}_round{round_index}"
        path = out / "pseudo_labels" / f"{name}.jsonl"
        t0 = time.perf_counter()
        if not path.is_file():
            rt = runtime()
            rt.policy.reset()  # round 1 labels with the initial weights; later rounds load the relabel model
            if round_index > 1:
                teacher = ConditionRun(study.relabel_with, trainer, round_index - 1)
                rt.policy.load_checkpoint(str(run_folder(out, teacher) / "checkpoint"))
            rt.generation_is_stale = True
            refit_if_stale(rt)
            with generation_awake(rt):
                labels[key], reused = load_or_generate_pseudo_labels(rt.generation, prompts(splits.unlabelled), study.pseudo_label, path)
        else:
            labels[key], reused = load_or_generate_pseudo_labels(None, _label_prompts_stub(splits.unlabelled), study.pseudo_label, path)
        stats = summarize_pseudo_labels(labels[key], min_agreement=study.pseudo_label.min_agreement)
        (path.with_suffix(".stats.json")).write_text(json.dumps(asdict(stats), indent=2) + "\n")
        if reused:
            PhaseLog.skipped(f"pseudo-labels {name}", path)
            skipped.append(f"pseudo-labels {name}")
        else:
            phases.done(f"pseudo-labels {name}", time.perf_counter() - t0, accuracy=stats.accuracy, confident=stats.num_confident)
            ran.append(f"pseudo-labels {name}")
        return labels[key]

    try:
        for run in runs:
            folder = run_folder(out, run)
            if (folder / "predictions.jsonl").is_file():
                PhaseLog.skipped(run.name, folder / "predictions.jsonl")
                skipped.append(run.name)
                continue
            if run.trainer is None:
                evaluate(run.name, folder)
                ran.append(run.name)
                continue
            _train_and_evaluate(cfg, run, folder, splits, labels_for, runtime, prompts, evaluate, phases)
            ran.append(run.name)
    finally:
        if state["rt"] is not None:
            rt = state["rt"]
            rt.logger.close()
            for group in (rt.generation, rt.frozen, rt.policy):
                if group is not None:
                    group.shutdown()

    t0 = time.perf_counter()
    report_dir = write_study_report(cfg, runs, out, labels_for(study.trainers[0], 1) if study.needs_pseudo_labels else None)
    phases.done("report", time.perf_counter() - t0)
    phases.done("total", time.perf_counter() - started)
    print(f"noisy-student: report in {report_dir} (ran: {len(ran)} phases, skipped: {len(skipped)})", flush=True)
    return StudyResult(report_dir, ran, skipped)


def _label_prompts_stub(records: list[ProblemRecord]) -> list[ProcessedPrompt]:
    """Prompts that carry only their records: enough for :func:`load_or_generate_pseudo_labels` to check a saved file."""
    return [ProcessedPrompt(record=record, user_message="", prompt_text="", prompt_token_ids=[], too_long=False) for record in records]


def _train_and_evaluate(cfg, run: ConditionRun, folder: Path, splits: DataSplits, labels_for, runtime, prompts, evaluate,
                        phases: PhaseLog) -> None:
    """One condition: its training set and budget, reset + train with the shared loop, save, evaluate."""
    study = cfg.noisy_student
    round_labels = labels_for(run.trainer, run.round) if study.needs_pseudo_labels else None
    datasets = {condition: build_condition_dataset(condition, trainer=run.trainer, labelled=splits.labelled, unlabelled=splits.unlabelled,
                                                   pseudo_labels=round_labels, sft_gold_template=cfg.pipeline.sft_gold_template)
                for condition in study.conditions if condition != "base"}
    budget = plan_training_budgets({name: len(records) for name, records in datasets.items()}, study.compute)[run.condition]
    records = training_records(datasets[run.condition], run.trainer)
    batch = study.compute.batch_size
    note = None
    if 0 < len(records) < batch:  # known only once the labels exist: say so rather than stop a long study here
        note = f"{len(records)} training problems, fewer than one batch of noisy_student.compute.batch_size={batch}: not trained"
    elif not records:
        note = "no training problems: not trained"
    steps = 0 if note else budget.steps
    t0 = time.perf_counter()
    rt = runtime()
    if steps:
        run_cfg = trainer_config(runtime_config(cfg), run.trainer, steps, len(records))
        loop = getattr(run_cfg, run.trainer)
        updates = grpo_algorithm.samples_per_update_ratio(run_cfg) if run.trainer == "grpo" else 1
        retarget_runtime(rt, cfg=run_cfg, loop=loop, train_prompts=prompts(records), run_dir=folder,
                         optimizer_cfg=optimizer_for(cfg, run.trainer), total_steps=steps * updates)
        print(f"noisy-student: {run.name}: {steps} steps on {len(records)} problems ({budget.epochs:.2f} epochs)", flush=True)
        (sft_algorithm.train if run.trainer == "sft" else grpo_algorithm.train)(rt)
        rt.logger.close()
        plot_metric_curves(folder / "metrics.jsonl", run_cfg.logger.plot_metrics, folder / "curves.png")
    else:
        print(f"noisy-student: {run.name}: {note}; evaluating the initial weights", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        rt.policy.reset()
        rt.generation_is_stale = True
    relabels = study.rounds > 1 and run.condition == study.relabel_with and run.round < study.rounds
    if cfg.pipeline.save_checkpoints or relabels:
        checkpoint = folder / "checkpoint"
        shutil.rmtree(checkpoint, ignore_errors=True)
        rt.policy.save_checkpoint(str(checkpoint), save_optimizer=False)
    train_seconds = time.perf_counter() - t0
    info = {"name": run.name, "condition": run.condition, "trainer": run.trainer, "round": run.round, "num_train_examples": len(records),
            "steps": steps, "epochs": budget.epochs if steps else 0.0, "train_seconds": round(train_seconds, 2),
            "pseudo_label_accuracy": labels_accuracy(run.condition, round_labels), "note": note}
    (folder / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    phases.done(f"train {run.name}", train_seconds, steps=steps)
    evaluate(run.name, folder, trainer=run.trainer, num_train_examples=len(records), pseudo_label_accuracy=info["pseudo_label_accuracy"])


def write_study_report(cfg: NoisyStudentMasterConfig, runs: list[ConditionRun], out: Path,
                       round1_labels: list[PseudoLabeledProblem] | None) -> Path:
    """``report/`` from every condition's saved predictions and ``run.json`` (rebuilt on every call: cheap)."""
    evals = []
    for run in runs:
        folder = run_folder(out, run)
        info = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
        evals.append(load_predictions(folder / "predictions.jsonl", trainer=run.trainer, num_train_examples=info.get("num_train_examples"),
                                      pseudo_label_accuracy=info.get("pseudo_label_accuracy")))
        evals[-1].name = run.name
    stats = summarize_pseudo_labels(round1_labels, min_agreement=cfg.noisy_student.pseudo_label.min_agreement) if round1_labels else None
    names = [e.name for e in evals]
    report = build_report(evals, pseudo_label_stats=stats, pairs=report_pairs(names, cfg.noisy_student.trainers))
    write_report(report, out / "report", title=f"Noisy-student study ({cfg.policy.model_name}, {cfg.data.default.dataset})")
    return out / "report"
