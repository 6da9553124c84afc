"""Built-in task registry: dispatch from ``load_problems``, knobs from ``task_args``, errors."""

from __future__ import annotations

import pytest

from nemo_distill.config import ConfigError
from nemo_distill.config.schema import validate
from nemo_distill.data import tasks
from nemo_distill.data.arithmetic import generate_arithmetic_problems
from nemo_distill.data.datasets import DataConfig, DataSourceConfig, DataSourceOverrides, load_problems, resolve_source
from nemo_distill.data.records import ProblemRecord
from nemo_distill.environments.sokoban import Board, generate_sokoban_problems

SOKOBAN_KNOBS = ["board_size", "inner_walls", "max_solution_length", "min_solution_length", "num_boxes"]


def test_registered_tasks_and_their_knobs():
    assert tasks.task_names() == ["arithmetic", "sokoban"]
    assert tasks.task_knobs("arithmetic") == {"max_operand": 20}
    assert sorted(tasks.task_knobs("sokoban")) == SOKOBAN_KNOBS
    assert tasks.is_task("sokoban") and not tasks.is_task("rows.jsonl")


def test_generate_task_passes_knobs():
    assert tasks.generate_task("arithmetic", 5, split="train", seed=3, task_args={"max_operand": 9}) == (
        generate_arithmetic_problems(5, split="train", seed=3, max_operand=9))
    records = tasks.generate_task("sokoban", 4, split="validation", seed=1, task_args={"board_size": 7, "num_boxes": 2})
    assert records == generate_sokoban_problems(4, split="validation", seed=1, board_size=7, num_boxes=2)
    assert all(Board.parse(r.answer).width == 7 and len(Board.parse(r.answer).boxes) == 2 for r in records)


def test_unknown_knob_names_the_key_and_the_accepted_knobs():
    with pytest.raises(ConfigError, match=r"not a knob of built-in task 'sokoban' \(did you mean 'num_boxes'\?\)") as err:
        tasks.generate_task("sokoban", 2, split="train", seed=0, task_args={"num_box": 2})
    assert err.value.key_path == "data.default.task_args.num_box"
    assert str(SOKOBAN_KNOBS) in str(err.value)


def test_bad_knob_value_is_a_config_error_with_the_generator_message():
    with pytest.raises(ConfigError, match="board_size must be >= 4") as err:
        tasks.generate_task("sokoban", 2, split="train", seed=0, task_args={"board_size": 3}, key_path="data.train.task_args")
    assert err.value.key_path == "data.train.task_args"


def test_unknown_task_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"'chess' is not a built-in task; registered tasks: \['arithmetic', 'sokoban'\]"):
        tasks.generate_task("chess", 1, split="train", seed=0)


def test_load_problems_dispatches_through_the_registry():
    source = DataSourceConfig(dataset="sokoban", num_samples=6, task_args={"num_boxes": 2})
    records = load_problems(source, split="train", seed=5)
    assert records == generate_sokoban_problems(6, split="train", seed=5, num_boxes=2)
    assert all(isinstance(r, ProblemRecord) and r.metadata["optimal_solution_length"] >= 1 for r in records)
    assert len(load_problems(DataSourceConfig(dataset="sokoban"), split="validation", seed=0)) == 64  # default count
    assert load_problems(DataSourceConfig(num_samples=3), split="train", seed=0) == generate_arithmetic_problems(3, split="train", seed=0)


def test_load_problems_bad_knob_names_the_split_key():
    with pytest.raises(ConfigError) as err:
        load_problems(DataSourceConfig(dataset="sokoban", task_args={"size": 5}), split="validation", seed=0)
    assert err.value.key_path == "data.validation.task_args.size"


def test_unknown_name_that_is_not_a_file_lists_the_tasks():
    with pytest.raises(FileNotFoundError, match=r"'sokobam', which does not exist.*\['arithmetic', 'sokoban'\]"):
        load_problems(DataSourceConfig(dataset="sokobam"), split="train", seed=0)


def test_split_task_args_merge_over_the_default():
    default = DataSourceConfig(dataset="sokoban", task_args={"board_size": 7, "num_boxes": 1})
    merged = resolve_source(default, DataSourceOverrides(task_args={"num_boxes": 2}))
    assert merged.task_args == {"board_size": 7, "num_boxes": 2}
    assert resolve_source(default, DataSourceOverrides()).task_args == {"board_size": 7, "num_boxes": 1}
    assert default.task_args == {"board_size": 7, "num_boxes": 1}  # not mutated


@pytest.mark.parametrize(
    "data, message",
    [
        ({"default": {"dataset": "sokoban", "task_args": {"board_sze": 6}}},
         "data.default.task_args.board_sze is not a knob of built-in task 'sokoban' (did you mean 'board_size'?)"),
        ({"default": {"dataset": "sokoban"}, "validation": {"task_args": {"boxes": 2}}},
         "data.validation.task_args.boxes is not a knob of built-in task 'sokoban'"),
        ({"default": {"dataset": "rows.jsonl", "task_args": {"num_boxes": 2}}},
         "data.default.task_args only applies to built-in tasks ['arithmetic', 'sokoban']; dataset 'rows.jsonl' is not one"),
        ({"train": {"dataset": "sokoban", "task_args": {"max_operand": 5}}},
         "data.train.task_args.max_operand is not a knob of built-in task 'sokoban'"),
    ],
)
def test_config_validation_rejects_unknown_knobs_before_any_worker_starts(data, message):
    with pytest.raises(ConfigError) as err:
        validate(data, DataConfig)
    assert message in str(err.value)


def test_config_validation_accepts_knobs():
    cfg = validate({"default": {"dataset": "sokoban", "task_args": {"board_size": 6, "num_boxes": 1}}}, DataConfig)
    assert cfg.default.task_args == {"board_size": 6, "num_boxes": 1} and cfg.train.task_args is None


def test_register_task(monkeypatch):
    monkeypatch.setattr(tasks, "_TASKS", dict(tasks._TASKS))

    def echo(num_samples, *, split, seed, word="hi"):
        return [ProblemRecord(f"{word} {i}", str(i), f"echo-{split}-{i}") for i in range(num_samples)]

    tasks.register_task("echo", echo)
    assert tasks.task_knobs("echo") == {"word": "hi"}
    records = load_problems(DataSourceConfig(dataset="echo", num_samples=2, task_args={"word": "yo"}), split="train", seed=0)
    assert [r.problem for r in records] == ["yo 0", "yo 1"]
    with pytest.raises(ValueError, match="already registered"):
        tasks.register_task("sokoban", echo)
