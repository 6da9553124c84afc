"""Pseudo-labelling with a fake generation object: batching, voting, confidence, accuracy, JSONL."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from nemo_distill.algorithms.pseudo_labels import (
    PseudoLabelConfig,
    PseudoLabeledProblem,
    format_agreement_table,
    generate_pseudo_labels,
    label_problem,
    load_or_generate_pseudo_labels,
    load_pseudo_labels,
    save_pseudo_labels,
    summarize_pseudo_labels,
)
from nemo_distill.config import ConfigError, validate
from nemo_distill.data.datasets import ProblemRecord
from nemo_distill.data.processors import ProcessedPrompt
from nemo_distill.models.generation.interfaces import GeneratedSample, GenerationOutput, GenerationRequest


@dataclass
class _Section:
    pseudo_label: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)


class FakeGeneration:
    """Returns fixed response texts per prompt; the prompt's first token id says which problem it is."""

    def __init__(self, responses: dict[int, list[str]], *, drop_last: bool = False):
        self.responses = responses
        self.drop_last = drop_last  # return one sample fewer than asked (a backend that lost one)
        self.requests: list[GenerationRequest] = []

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        self.requests.append(request)
        samples = []
        for index, token_ids in enumerate(request.prompt_token_ids):
            texts = self.responses[token_ids[0]][: request.sampling.n]
            if self.drop_last:
                texts = texts[:-1]
            samples += [GeneratedSample(index, [1, 2], [-0.1, -0.2], text, "stop") for text in texts]
        return GenerationOutput(samples)


def _prompt(i: int, gold: str | None, *, too_long: bool = False) -> ProcessedPrompt:
    record = ProblemRecord(problem=f"problem {i}", answer=gold, record_id=f"r-{i}")
    return ProcessedPrompt(record, f"problem {i}", f"<user>problem {i}", [i, 99, 98], too_long)


# Four samples per prompt (K=4). Prompt 0: unanimous and right; 1: 3/4 on a wrong answer; 2: a 2-2
# tie (earliest wins); 3: no answer at all; 4: 3/4 right with "1,000"/"$1000" spellings.
RESPONSES = {
    0: ["2+2 = 4\n#### 4", "The answer is 4.", "\\boxed{4}", "so 4"],
    1: ["#### 7", "#### 7", "#### 7", "#### 8"],
    2: ["#### 5", "#### 6", "#### 6", "#### 5"],
    3: ["I do not know", "hmm", "", "no idea"],
    4: ["#### 1,000", "The answer is $1000.", "#### 999", "\\boxed{1000}"],
}
GOLDS = ["4", "8", "48 + 12 = 60 then 60 / 10 = 6\n#### 6", None, "1000"]


def _run(config: PseudoLabelConfig, **kwargs):
    generation = FakeGeneration(RESPONSES, **kwargs)
    prompts = [_prompt(i, gold) for i, gold in enumerate(GOLDS)]
    return generation, generate_pseudo_labels(generation, prompts, config, show_progress=False)


def test_generate_pseudo_labels_votes_and_accuracy():
    generation, run = _run(PseudoLabelConfig(num_samples=4, prompts_per_chunk=2))
    labels = run.labels
    assert [label.record_id for label in labels] == ["r-0", "r-1", "r-2", "r-3", "r-4"]
    assert [label.pseudo_answer for label in labels] == ["4", "7", "5", None, "1000"]
    assert [label.votes for label in labels] == [4, 3, 2, 0, 3]
    assert [label.agreement for label in labels] == [1.0, 0.75, 0.5, 0.0, 0.75]
    assert [label.confident for label in labels] == [True, True, False, False, True]
    assert [label.gold for label in labels] == ["4", "8", "6", None, "1000"]  # worked solution -> its final answer
    assert [label.correct for label in labels] == [True, False, False, None, True]
    assert labels[0].answers == ["4", "4", "4", "4"]
    assert labels[3].answers == [None, None, None, None]
    # The SFT target of a pseudo-labelled problem: the first response that states the consensus.
    assert [label.response for label in labels] == ["2+2 = 4\n#### 4", "#### 7", "#### 5", None, "#### 1,000"]
    assert run.samples_per_second > 0
    # Batched: one request per chunk of 2 prompts, n=K, the seed's sampling settings.
    assert [len(request.prompt_token_ids) for request in generation.requests] == [2, 2, 1]
    sampling = generation.requests[0].sampling
    assert (sampling.n, sampling.temperature, sampling.max_new_tokens, sampling.seed) == (4, 0.7, 256, 42)


def test_summary_and_agreement_histogram():
    _, run = _run(PseudoLabelConfig(num_samples=4))
    stats = summarize_pseudo_labels(run.labels, min_agreement=0.75)
    assert (stats.num_prompts, stats.num_labelled, stats.num_confident, stats.num_with_gold) == (5, 4, 3, 4)
    assert stats.accuracy == 0.5  # 2 of the 4 prompts with gold
    assert stats.confident_accuracy == pytest.approx(2 / 3)  # prompts 0, 1, 4: right, wrong, right
    assert stats.mean_agreement == pytest.approx((1 + 0.75 + 0.5 + 0 + 0.75) / 5)
    rows = [(b.votes, b.count, b.num_with_gold, b.num_correct, b.confident) for b in stats.histogram]
    assert rows == [(0, 1, 0, 0, False), (1, 0, 0, 0, False), (2, 1, 1, 0, False), (3, 2, 2, 1, True), (4, 1, 1, 1, True)]
    assert sum(b.fraction for b in stats.histogram) == pytest.approx(1.0)
    assert stats.histogram[3].accuracy == 0.5 and stats.histogram[1].accuracy is None
    table = format_agreement_table(stats)
    assert "| 75% | 3/4 | 2 | 40.0% | 50.0% (1/2) | yes |" in table
    assert "| 25% | 1/4 | 0 | 0.0% | - |  |" in table


def test_summary_without_gold_and_mixed_k():
    label = PseudoLabeledProblem("a", "p", "3", 1.0, 2, 2, True)
    stats = summarize_pseudo_labels([label], min_agreement=0.75)
    assert stats.accuracy is None and stats.confident_accuracy is None and stats.num_with_gold == 0
    with pytest.raises(ValueError, match=r"different K \[2, 3\]"):
        summarize_pseudo_labels([label, PseudoLabeledProblem("b", "p", "3", 1.0, 3, 3, True)], min_agreement=0.75)
    assert summarize_pseudo_labels([], min_agreement=0.5).histogram == []


def test_missing_samples_and_too_long_prompts_abstain():
    # The backend returned K-1 samples: agreement is still out of K.
    _, run = _run(PseudoLabelConfig(num_samples=4), drop_last=True)
    assert run.labels[0].votes == 3 and run.labels[0].agreement == 0.75 and run.labels[0].k == 4
    generation = FakeGeneration(RESPONSES)
    prompts = [_prompt(0, "4"), _prompt(1, "8", too_long=True)]
    run = generate_pseudo_labels(generation, prompts, PseudoLabelConfig(num_samples=4), show_progress=False)
    assert generation.requests[0].prompt_token_ids == [[0, 99, 98]]  # the long prompt is not generated for
    assert (run.labels[1].pseudo_answer, run.labels[1].agreement, run.labels[1].confident, run.labels[1].correct) == (None, 0.0, False, False)


def test_label_problem_threshold_and_to_record():
    record = ProblemRecord("What is 3+3?", None, "q")
    label = label_problem(record, ["#### 6", "#### 6", "#### 5"], k=4, min_agreement=0.5)
    assert (label.pseudo_answer, label.agreement, label.confident, label.gold, label.correct) == ("6", 0.5, True, None, None)
    assert not label_problem(record, ["#### 6", "#### 6", "#### 5"], k=4, min_agreement=0.75).confident
    assert label.to_record() == ProblemRecord("What is 3+3?", "#### 6", "q")
    assert label.to_record(with_solution=False) == ProblemRecord("What is 3+3?", "6", "q")
    with pytest.raises(ValueError, match="problem q has no pseudo-label"):
        label_problem(record, ["?"], k=1, min_agreement=0.5).to_record()


def test_save_and_load_roundtrip(tmp_path):
    _, run = _run(PseudoLabelConfig(num_samples=4))
    path = save_pseudo_labels(run.labels, tmp_path / "labels" / "round_1.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 5
    assert {"problem", "pseudo_answer", "agreement", "votes", "k", "gold", "confident"} <= set(rows[0])
    assert rows[1] == {**rows[1], "pseudo_answer": "7", "votes": 3, "k": 4, "gold": "8", "confident": True, "correct": False}
    assert load_pseudo_labels(path) == run.labels
    assert not path.with_name("round_1.jsonl.tmp").exists()


def test_load_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"record_id": "a"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 1 lacks \['problem'"):
        load_pseudo_labels(path)
    path.write_text("\nnot json\n")
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_pseudo_labels(path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_pseudo_labels(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    "changes,key",
    [({"num_samples": 0}, "num_samples"), ({"temperature": 0.0}, "temperature"), ({"min_agreement": 75}, "min_agreement"),
     ({"prompts_per_chunk": 0}, "prompts_per_chunk"), ({"max_new_tokens": 0}, "max_new_tokens"), ({"top_p": 0.0}, "top_p")],
)
def test_config_errors_name_the_key(changes, key):
    with pytest.raises(ValueError, match=f"{key}="):
        PseudoLabelConfig(**changes)
    # Through the config schema the error names the full key path.
    with pytest.raises(ConfigError) as info:
        validate({"pseudo_label": changes}, _Section)
    assert info.value.key_path == f"pseudo_label.{key}"


def test_config_defaults_are_the_seeds():
    config = PseudoLabelConfig()
    assert (config.num_samples, config.temperature, config.max_new_tokens, config.min_agreement) == (8, 0.7, 256, 0.75)
    assert config.sampling_params().n == 8


def test_load_or_generate_resumes(tmp_path, caplog):
    prompts = [_prompt(i, gold) for i, gold in enumerate(GOLDS)]
    config = PseudoLabelConfig(num_samples=4)
    path = tmp_path / "pseudo_labels.jsonl"
    generation = FakeGeneration(RESPONSES)
    labels, reused = load_or_generate_pseudo_labels(generation, prompts, config, path, show_progress=False)
    assert not reused and path.is_file() and len(generation.requests) == 1
    with caplog.at_level("INFO", logger="nemo_distill.algorithms.pseudo_labels"):
        again, reused = load_or_generate_pseudo_labels(None, prompts, config, path)  # no generation needed
    assert reused and again == labels
    assert "already labelled" in caplog.text and "skipping generation" in caplog.text
    with pytest.raises(ValueError, match="other problems"):
        load_or_generate_pseudo_labels(None, prompts[:3], config, path)
    with pytest.raises(ValueError, match=r"K=\[4\] but pseudo_label.num_samples=8"):
        load_or_generate_pseudo_labels(None, prompts, PseudoLabelConfig(num_samples=8), path)


def test_with_the_hf_backend_on_a_tiny_model(tiny_model_dir):
    # The real generation worker in-process (no Ray): one batched n=K request per chunk, K samples each.
    from nemo_distill.data.processors import PromptProcessor
    from nemo_distill.models.generation.config import GenerationConfig
    from nemo_distill.models.generation.hf_backend import HFGenerationWorker

    worker = HFGenerationWorker(tiny_model_dir, GenerationConfig(), precision="float32")
    processor = PromptProcessor(worker.tokenizer, prompt_template=None, system_prompt=None, max_input_seq_length=64)
    records = [ProblemRecord(f"What is {i} + {i}?", str(2 * i), f"r-{i}") for i in range(3)]
    prompts = [processor.process(record) for record in records]
    run = generate_pseudo_labels(worker, prompts, PseudoLabelConfig(num_samples=4, max_new_tokens=6, prompts_per_chunk=2), show_progress=False)
    assert worker.num_generate_calls == 2
    assert [label.record_id for label in run.labels] == ["r-0", "r-1", "r-2"]
    for label in run.labels:
        assert label.k == 4 and len(label.answers) == 4 and 0.0 <= label.agreement <= 1.0
        assert label.gold == str(2 * int(label.record_id[2:])) and label.correct in (True, False)
        assert (label.pseudo_answer is None) == (label.response is None)
    assert run.samples_per_second > 0
