"""parse_command_line runs the program's check before --print-config; run_main turns user mistakes into exit 2."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nemo_distill.config import ConfigError
from nemo_distill.config.cli import is_user_error, parse_command_line, run_main
from nemo_distill.config.errors import DataError, UserError

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Section:
    a: int = 1
    b: int = field(default=2, metadata={"ge": 0})


@dataclass
class Program:
    section: Section = field(default_factory=Section)


def _check(cfg: Program) -> None:
    if cfg.section.a > cfg.section.b:
        raise ConfigError("section.a", f"must be <= section.b ({cfg.section.b}), got {cfg.section.a}")


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "program.yaml"
    path.write_text("section:\n  a: 1\n")
    return str(path)


def test_print_config_runs_the_cross_section_check_first(config_file, capsys):
    with pytest.raises(ConfigError, match="section.a.*must be <= section.b"):
        parse_command_line(["--print-config", "section.a=5"], Program, default_config=config_file, description="t", check=_check)
    assert capsys.readouterr().out == ""  # nothing printed for an invalid config
    with pytest.raises(SystemExit) as exit_info:
        parse_command_line(["--print-config"], Program, default_config=config_file, description="t", check=_check)
    assert exit_info.value.code == 0 and "a: 1" in capsys.readouterr().out


def test_check_runs_without_print_config_too(config_file):
    with pytest.raises(ConfigError, match="section.a"):
        parse_command_line(["section.a=5"], Program, default_config=config_file, description="t", check=_check)
    parsed = parse_command_line([], Program, default_config=config_file, description="t", check=_check)
    assert parsed.config.section.a == 1


@pytest.mark.parametrize(
    "error",
    [ConfigError("data.train.dataset", "bad"), DataError("rows.jsonl: line 3 has no key 'problem'"),
     FileNotFoundError("prompt file x.txt does not exist"), PermissionError(13, "Permission denied", "/data")],
)
def test_run_main_prints_one_error_line_and_returns_2(error, capsys):
    def main() -> int:
        raise error

    assert run_main(main) == 2
    err = capsys.readouterr().err
    assert err == f"error: {error}\n" and err.count("\n") == 1


def test_run_main_keeps_tracebacks_for_bugs_and_passes_the_exit_code():
    class WorkerCallErrorLike(FileNotFoundError):  # an OSError from deep inside (a worker, a library) is a bug report
        pass

    for bug in (KeyError("x"), ValueError("shape mismatch"), WorkerCallErrorLike("remote")):
        with pytest.raises(type(bug)):
            run_main(lambda: (_ for _ in ()).throw(bug))
    assert run_main(lambda: 0) == 0 and run_main(lambda: None) == 0 and run_main(lambda: 3) == 3
    assert is_user_error(DataError("x")) and isinstance(DataError("x"), (UserError, ValueError))


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["distillation.topk_logits_k=0"], "distillation.topk_logits_k"),
        (["policy.train_global_batch_size=7"], "policy.train_global_batch_size"),
        (["distillation.context_distillation.enabled=true", "distillation.max_rollout_turns=2"], "distillation.max_rollout_turns"),
        (["distillation.context_distillation.enabled=true", "teacher.model_name=other"], "teacher.model_name"),
        (["distillation.context_distillation.enabled=true", "distillation.context_distillation.teacher_prefix_template='{foo}'"],
         "distillation.context_distillation.teacher_prefix_template"),
        (["distillation.num_prompts_per_step=-4"], "distillation.num_prompts_per_step"),
        (["policy.activation_checkpointing=true"], "policy.activation_checkpointing"),
    ],
)
def test_run_distillation_print_config_exits_2_on_every_check(overrides, key):
    result = subprocess.run([sys.executable, str(REPO / "examples" / "run_distillation.py"), "--print-config", *overrides],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and result.stderr.startswith(f"error: config key '{key}'") and "Traceback" not in result.stderr
