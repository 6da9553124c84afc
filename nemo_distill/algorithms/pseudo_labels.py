"""Pseudo-labelling by consensus (seed 004): K samples per unlabelled prompt, majority vote, filter.

The steps, top to bottom (:func:`generate_pseudo_labels`):

1. For each chunk of ``prompts_per_chunk`` prompts, ONE batched generation request with ``n = K``
   (seed 004: "num_return_sequences=K is 4-8x faster than sequential"), temperature 0.7 and 256
   new tokens by default (:class:`PseudoLabelConfig`).
2. :func:`~nemo_distill.environments.math.extract_answer` on each of the K responses.
3. :func:`pseudo_label`: the majority answer and its agreement ``votes / K`` (abstentions -- no
   answer extracted, or a sample the backend did not return -- count in K, never as a vote).
4. ``confident = agreement >= min_agreement`` (seed 004: 0.75, i.e. >= 6 of 8 samples agree).
5. Where the record carries a (hidden) gold answer: whether the pseudo-label matches it.

:func:`summarize_pseudo_labels` gives the pseudo-label accuracy overall and among confident labels
and the agreement histogram (the seed's confidence table: prompts and accuracy per vote count);
:func:`save_pseudo_labels` / :func:`load_pseudo_labels` keep the labels as JSONL, one row per
prompt. The voting itself (:func:`pseudo_label`, :func:`consensus_label`) is re-exported by
:mod:`nemo_distill.algorithms.noisy_student`, where DESIGN.md's public contract names it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nemo_distill.data.datasets import ProblemRecord
from nemo_distill.data.processors import ProcessedPrompt
from nemo_distill.environments.math import answers_match, extract_answer, final_answer, normalize_answer
from nemo_distill.models.generation.interfaces import GenerationRequest, SamplingParams
from nemo_distill.utils.progress import progress_bar

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------- voting
@dataclass(frozen=True)
class PseudoLabel:
    """The consensus of one prompt's K sampled answers."""

    answer: str | None  # the majority answer, normalised; None when no sample had an answer
    votes: int  # samples that gave this answer (after normalisation)
    num_samples: int  # K, the denominator of ``agreement``

    @property
    def agreement(self) -> float:
        """``votes / K`` in [0, 1]; seed 004 keeps labels with agreement >= 0.75."""
        return self.votes / self.num_samples if self.num_samples else 0.0

    def is_confident(self, min_agreement: float) -> bool:
        """Whether this label exists and at least ``min_agreement`` of the K samples agree."""
        return self.answer is not None and self.agreement >= min_agreement


def pseudo_label(answers: list[str | None], *, k: int | None = None) -> PseudoLabel:
    """Majority vote over the non-None, non-blank ``answers`` (one per sample; None = no answer extracted).

    Answers are compared after :func:`~nemo_distill.environments.math.normalize_answer`
    (``"1,000"`` and ``"1000"`` are one vote each for the same answer); a tie goes to the answer
    seen first. ``K = k`` when given (e.g. samples whose generation failed are missing from
    ``answers``), else ``len(answers)``.
    """
    if k is not None and k < max(1, len(answers)):
        raise ValueError(f"k={k} must be >= 1 and >= the number of answers ({len(answers)}); it is the number of samples drawn")
    votes: dict[str, int] = {}  # insertion order = order first seen
    for answer in answers:
        key = normalize_answer(answer) if answer is not None else ""
        if key:  # None and blank answers are abstentions
            votes[key] = votes.get(key, 0) + 1
    total = k if k is not None else len(answers)
    if not votes:
        return PseudoLabel(answer=None, votes=0, num_samples=total)
    best = max(votes, key=votes.__getitem__)  # max returns the first of equal maxima: earliest seen
    return PseudoLabel(answer=best, votes=votes[best], num_samples=total)


def consensus_label(answers: list[str | None], *, k: int | None = None) -> tuple[str | None, float]:
    """``(majority answer, agreement = votes / K)``; ``(None, 0.0)`` when no answer is given.
    See :func:`pseudo_label` for the rules."""
    label = pseudo_label(answers, k=k)
    return label.answer, label.agreement


# --------------------------------------------------------------------------------------- config
@dataclass
class PseudoLabelConfig:
    """How unlabelled prompts are pseudo-labelled (defaults: seed 004's V1 / V1.5 settings)."""

    num_samples: int = field(default=8, metadata={"ge": 1})  # K: samples per prompt, drawn in one request with n=K
    # Sampling temperature of the K samples; > 0 (greedy samples are identical: every vote unanimous).
    temperature: float = field(default=0.7, metadata={"gt": 0.0})
    top_p: float = field(default=1.0, metadata={"gt": 0.0, "le": 1.0})
    max_new_tokens: int = field(default=256, metadata={"ge": 1})  # response tokens per sample
    stop_strings: list[str] | None = None  # e.g. ["\n\n\n"] to end rambling responses early
    min_agreement: float = field(default=0.75, metadata={"ge": 0.0, "le": 1.0})  # confident = votes / K >= this (seed 004 V1.5)
    prompts_per_chunk: int = field(default=64, metadata={"ge": 1})  # prompts per generation request (x K samples)
    seed: int | None = 42  # sampling seed (the backend derives per-call seeds from it)
    use_math_verify: bool = True  # symbolic matching for pseudo-label accuracy against gold

    def __post_init__(self) -> None:
        # The schema checks the bounds above with the full key path; these repeat them for direct
        # construction (the schema prefixes this section's path to the message).
        problems = []
        if self.num_samples < 1:
            problems.append(f"num_samples={self.num_samples} must be >= 1 sample per prompt")
        if self.temperature <= 0:
            problems.append(f"temperature={self.temperature} must be > 0 (greedy samples are identical, so every vote would be unanimous)")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p={self.top_p} must be in (0, 1]")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if not 0.0 <= self.min_agreement <= 1.0:
            problems.append(f"min_agreement={self.min_agreement} is a fraction of the K samples, in [0, 1]")
        if self.prompts_per_chunk < 1:
            problems.append(f"prompts_per_chunk={self.prompts_per_chunk} must be >= 1")
        if problems:
            raise ValueError("; ".join(problems))

    def sampling_params(self) -> SamplingParams:
        """One request's sampling settings: ``n = K``."""
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            stop_strings=list(self.stop_strings) if self.stop_strings else None,
            n=self.num_samples,
            seed=self.seed,
        )


# ------------------------------------------------------------------------------- labelled rows
@dataclass
class PseudoLabeledProblem:
    """One unlabelled problem with its consensus label: one JSONL row of :func:`save_pseudo_labels`."""

    record_id: str
    problem: str
    pseudo_answer: str | None  # the majority answer (normalised); None when no sample stated one
    agreement: float  # votes / k, in [0, 1]
    votes: int  # samples that gave pseudo_answer
    k: int  # samples drawn (K)
    confident: bool  # pseudo_answer is not None and agreement >= min_agreement
    gold: str | None = None  # the hidden gold FINAL answer (normalised), None when unknown
    correct: bool | None = None  # pseudo_answer matches gold; None when there is no gold
    answers: list[str | None] = field(default_factory=list)  # the K extracted answers, in sample order
    # The first sampled response whose answer is the consensus: the SFT target of a pseudo-labelled
    # problem (a worked solution ending in the pseudo answer); None without a consensus.
    response: str | None = None

    def to_record(self, *, with_solution: bool = True) -> ProblemRecord:
        """A training :class:`ProblemRecord` whose answer is the pseudo-label (or its solution text).

        ``with_solution=True`` gives the consensus response (SFT needs a worked target); ``False``
        the bare answer (a GRPO reward needs only the number). Raises when there is no label.
        """
        if self.pseudo_answer is None:
            raise ValueError(f"problem {self.record_id} has no pseudo-label (no sample stated an answer); filter with .pseudo_answer first")
        answer = self.response if with_solution and self.response else self.pseudo_answer
        return ProblemRecord(problem=self.problem, answer=answer, record_id=self.record_id)


def label_problem(
    record: ProblemRecord, responses: list[str], *, k: int, min_agreement: float, use_math_verify: bool = True
) -> PseudoLabeledProblem:
    """The consensus label of one problem from its sampled response texts (``len(responses) <= k``)."""
    answers = [extract_answer(text) for text in responses]
    label = pseudo_label(answers, k=k)
    response = None
    if label.answer is not None:
        response = next(text for text, answer in zip(responses, answers) if answer is not None and normalize_answer(answer) == label.answer)
    gold = final_answer(record.answer) if record.answer is not None else None
    correct = None if gold is None else answers_match(label.answer, gold, use_math_verify=use_math_verify)
    return PseudoLabeledProblem(
        record_id=record.record_id,
        problem=record.problem,
        pseudo_answer=label.answer,
        agreement=label.agreement,
        votes=label.votes,
        k=k,
        confident=label.is_confident(min_agreement),
        gold=gold,
        correct=correct,
        answers=answers,
        response=response,
    )


# ---------------------------------------------------------------------------------- generation
@dataclass
class PseudoLabelRun:
    """What :func:`generate_pseudo_labels` returns: one row per prompt, in prompt order, and speed."""

    labels: list[PseudoLabeledProblem]
    elapsed_seconds: float  # wall time of generation + voting
    samples_per_second: float  # (prompts generated for) x K / elapsed_seconds


def _sample_chunk(generation, prompts: list[ProcessedPrompt], sampling: SamplingParams) -> list[list[str]]:
    """The response texts of each prompt (K each); prompts flagged ``too_long`` get none."""
    runnable = [i for i, prompt in enumerate(prompts) if not prompt.too_long]
    texts: list[list[str]] = [[] for _ in prompts]
    if runnable:
        output = generation.generate(GenerationRequest(prompt_token_ids=[prompts[i].prompt_token_ids for i in runnable], sampling=sampling))
        for sample in output.samples:
            texts[runnable[sample.prompt_index]].append(sample.text)
    for prompt, prompt_texts in zip(prompts, texts):
        if len(prompt_texts) > sampling.n:
            raise RuntimeError(f"generation returned {len(prompt_texts)} samples for problem {prompt.record.record_id}, more than n={sampling.n}")
    return texts


def generate_pseudo_labels(
    generation, prompts: list[ProcessedPrompt], config: PseudoLabelConfig, *, show_progress: bool = True
) -> PseudoLabelRun:
    """Pseudo-label ``prompts`` with K samples each from ``generation`` (see the module docstring).

    ``generation`` is anything with ``generate(GenerationRequest) -> GenerationOutput`` (the
    generation worker group, or a fake in tests). Prompts flagged ``too_long`` are not generated
    for: they get no label (agreement 0) and are not confident. The progress bar counts samples, so
    its rate is prompts x K per second.
    """
    sampling = config.sampling_params()
    k = config.num_samples
    labels: list[PseudoLabeledProblem] = []
    bar = progress_bar(total=len(prompts) * k, desc=f"pseudo-label (prompts x K={k})", unit="sample", enabled=show_progress)
    start = time.perf_counter()
    generated = 0
    try:
        for chunk_start in range(0, len(prompts), config.prompts_per_chunk):
            chunk = prompts[chunk_start : chunk_start + config.prompts_per_chunk]
            for prompt, texts in zip(chunk, _sample_chunk(generation, chunk, sampling)):
                labels.append(label_problem(prompt.record, texts, k=k, min_agreement=config.min_agreement, use_math_verify=config.use_math_verify))
            generated += sum(not prompt.too_long for prompt in chunk) * k
            bar.update(len(chunk) * k)
            bar.set_postfix(confident=sum(label.confident for label in labels), refresh=False)
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    return PseudoLabelRun(labels, elapsed, generated / elapsed if elapsed > 0 else 0.0)


# ---------------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class AgreementBin:
    """Prompts whose consensus had ``votes`` of ``k`` samples (one row of the confidence table)."""

    votes: int
    k: int
    count: int  # prompts in this bin
    fraction: float  # count / all prompts
    num_with_gold: int  # of those, prompts with a gold answer
    num_correct: int  # of those, prompts whose pseudo-label matches the gold
    confident: bool  # votes / k >= min_agreement (and votes > 0)

    @property
    def agreement(self) -> float:
        return self.votes / self.k if self.k else 0.0

    @property
    def accuracy(self) -> float | None:
        """Pseudo-label accuracy within the bin; None when no prompt in it has a gold answer."""
        return self.num_correct / self.num_with_gold if self.num_with_gold else None


@dataclass(frozen=True)
class PseudoLabelStats:
    """Summary of a set of pseudo-labels; accuracies are over prompts with a gold answer only
    (a prompt without a label counts as wrong), None when no prompt has one."""

    num_prompts: int
    num_labelled: int  # prompts with a pseudo-answer
    num_confident: int
    min_agreement: float
    num_with_gold: int
    accuracy: float | None  # pseudo-label accuracy over all prompts with gold
    confident_accuracy: float | None  # ... over confident prompts with gold
    mean_agreement: float
    histogram: list[AgreementBin]  # ascending votes, every level 0..K present (empty without labels)


def summarize_pseudo_labels(labels: list[PseudoLabeledProblem], *, min_agreement: float) -> PseudoLabelStats:
    """Accuracy overall and among confident labels, and the agreement histogram.

    All labels must share one K (the histogram's rows are vote counts 0..K).
    """
    ks = {label.k for label in labels}
    if len(ks) > 1:
        raise ValueError(f"pseudo-labels mix different K {sorted(ks)}; summarise each K separately")
    k = ks.pop() if ks else 0
    with_gold = [label for label in labels if label.correct is not None]
    confident_with_gold = [label for label in with_gold if label.confident]
    histogram = []
    for votes in range(k + 1) if labels else ():
        in_bin = [label for label in labels if label.votes == votes]
        bin_gold = [label for label in in_bin if label.correct is not None]
        histogram.append(
            AgreementBin(
                votes=votes,
                k=k,
                count=len(in_bin),
                fraction=len(in_bin) / len(labels) if labels else 0.0,
                num_with_gold=len(bin_gold),
                num_correct=sum(bool(label.correct) for label in bin_gold),
                confident=votes > 0 and votes / k >= min_agreement,
            )
        )
    return PseudoLabelStats(
        num_prompts=len(labels),
        num_labelled=sum(label.pseudo_answer is not None for label in labels),
        num_confident=sum(label.confident for label in labels),
        min_agreement=min_agreement,
        num_with_gold=len(with_gold),
        accuracy=sum(bool(label.correct) for label in with_gold) / len(with_gold) if with_gold else None,
        confident_accuracy=(sum(bool(label.correct) for label in confident_with_gold) / len(confident_with_gold) if confident_with_gold else None),
        mean_agreement=sum(label.agreement for label in labels) / len(labels) if labels else 0.0,
        histogram=histogram,
    )


def format_agreement_table(stats: PseudoLabelStats) -> str:
    """The seed's confidence table as Markdown: one row per vote count, confident rows marked."""
    lines = ["| agreement | votes | prompts | share | pseudo-label accuracy | confident |", "|---|---|---|---|---|---|"]
    for row in stats.histogram:
        accuracy = f"{row.accuracy:.1%} ({row.num_correct}/{row.num_with_gold})" if row.accuracy is not None else "-"
        lines.append(f"| {row.agreement:.0%} | {row.votes}/{row.k} | {row.count} | {row.fraction:.1%} | {accuracy} | {'yes' if row.confident else ''} |")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- JSONL
_REQUIRED_KEYS = ("record_id", "problem", "pseudo_answer", "agreement", "votes", "k", "confident")


def save_pseudo_labels(labels: list[PseudoLabeledProblem], path: str | Path) -> Path:
    """Write one JSON object per problem (fields of :class:`PseudoLabeledProblem`) atomically:
    a crash mid-write leaves the previous file, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w") as handle:
        for label in labels:
            handle.write(json.dumps(asdict(label), ensure_ascii=False) + "\n")
    os.replace(temporary, path)
    return path


def load_pseudo_labels(path: str | Path) -> list[PseudoLabeledProblem]:
    """Read :func:`save_pseudo_labels`' JSONL; errors name the file, the line and the missing key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pseudo-label file {path} does not exist")
    labels = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {number} is not valid JSON: {err}") from err
        missing = [key for key in _REQUIRED_KEYS if key not in row]
        if missing:
            raise ValueError(f"{path}: line {number} lacks {missing}; was it written by save_pseudo_labels?")
        known = {name: row[name] for name in PseudoLabeledProblem.__dataclass_fields__ if name in row}
        labels.append(PseudoLabeledProblem(**known))
    return labels


def load_or_generate_pseudo_labels(
    generation, prompts: list[ProcessedPrompt], config: PseudoLabelConfig, path: str | Path, *, show_progress: bool = True
) -> tuple[list[PseudoLabeledProblem], bool]:
    """The resumable pseudo-labelling phase: ``(labels, reused)``.

    When ``path`` exists and holds labels for exactly these prompts (same record ids, same order)
    with the same K, they are loaded and generation is skipped (logged); otherwise the prompts are
    labelled and saved to ``path``. A file for other prompts or another K is an error, not silently
    overwritten: delete it or choose another output folder. ``generation`` is only called when
    labelling is needed.
    """
    path = Path(path)
    if path.exists():
        labels = load_pseudo_labels(path)
        stored_ids = [label.record_id for label in labels]
        wanted_ids = [prompt.record.record_id for prompt in prompts]
        if stored_ids != wanted_ids:
            raise ValueError(
                f"{path} holds pseudo-labels for {len(stored_ids)} other problems (or another order) than the {len(wanted_ids)} given; "
                "delete it to relabel, or use another output folder"
            )
        stored_k = sorted({label.k for label in labels})
        if labels and stored_k != [config.num_samples]:
            raise ValueError(f"{path} was labelled with K={stored_k} but pseudo_label.num_samples={config.num_samples}; delete it to relabel")
        log.info("pseudo-labels: %d problems already labelled in %s; skipping generation", len(labels), path)
        return labels, True
    run = generate_pseudo_labels(generation, prompts, config, show_progress=show_progress)
    save_pseudo_labels(run.labels, path)
    log.info("pseudo-labels: %d problems x K=%d in %.1f s (%.1f samples/s) -> %s", len(prompts), config.num_samples,
             run.elapsed_seconds, run.samples_per_second, path)
    return run.labels, False
