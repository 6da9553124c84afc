"""The seed framework's flags (seeds 000-002) -> our overrides, and the migration doc's table."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nemo_distill.algorithms.distillation_config import DistillationMasterConfig
from nemo_distill.algorithms.grpo_config import GRPOMasterConfig
from nemo_distill.config import ConfigError, apply_overrides
from nemo_distill.config.cli import parse_command_line
from nemo_distill.config.schema import validate, with_schema_defaults
from nemo_distill.config.seed_flags import (
    CONVERSIONS,
    DOC_PATH,
    SEED_FLAGS,
    doc_table,
    quote_override_value,
    render_markdown_table,
    schema_has_key,
    translate_seed_flags,
    write_doc_table,
)

REPO = Path(__file__).resolve().parents[3]
CD = "grpo.context_distillation"


def seed_argv(command: str) -> list[str]:
    """The flags of a seed command line: drop ``uv run rl @ <toml>`` and the shell's line breaks."""
    tokens = shlex.split(command.replace("\\\n", " "))
    if tokens[:4] == ["uv", "run", "rl", "@"]:
        tokens = tokens[5:]
    return tokens


# --- every command line shown in seeds 001 and 002, copied as written ---------------------------

SEED_001_LAUNCH = """uv run rl @ experiments/context_distill/rl.toml \\
  --inference_gpu_ids 0,1 \\
  --teacher_gpu_ids 2 \\
  --trainer_gpu_ids 3 \\
  --inference.parallel.dp 2"""

SEED_001_EIGHT_GPUS = """uv run rl @ experiments/context_distill/rl.toml \\
  --inference_gpu_ids 0 1 \\
  --teacher_gpu_ids 2 3 \\
  --trainer_gpu_ids 4 5 6 7 \\
  --inference.parallel.tp 2 \\
  --teacher_inference.parallel.tp 2"""

SEED_002_PURE_TASK_RL = "--trainer.loss.adv_tau 1.0 --trainer.loss.teacher_tau 0 --trainer.loss.student_tau 0"
SEED_002_HYBRID = """--trainer.loss.adv_tau 1.0 --trainer.loss.teacher_tau 1.0 --trainer.loss.student_tau 1.0
--orchestrator.advantage.use-full-reward-baseline"""
SEED_002_GATED = """--trainer.loss.adv_tau 1.0 --trainer.loss.teacher_tau 0.01 --trainer.loss.student_tau 0.01
--orchestrator.advantage.use-full-reward-baseline
--orchestrator.advantage.kl-only-incorrect"""
SEED_002_PURE_DISTILLATION = """--trainer.loss.adv_tau 0.0 --trainer.loss.teacher_tau 1.0 --trainer.loss.student_tau 1.0
--orchestrator.buffer.skip-verification"""
SEED_002_TOKEN_LEVEL = """--trainer.loss.adv_tau 1.0 --trainer.loss.teacher_tau 0.01 --trainer.loss.student_tau 0.01
--no-orchestrator.advantage.use-full-reward-baseline"""
SEED_002_SHARED_GPU = "--inference_gpu_ids 0,1 --teacher_gpu_ids 1"  # "Teacher and inference can share a GPU"


def taus(adv: str, teacher: str, student: str) -> list[str]:
    return [f"{CD}.adv_tau={adv}", f"{CD}.teacher_tau={teacher}", f"{CD}.student_tau={student}"]


SEED_COMMANDS = {
    "001 launch": (SEED_001_LAUNCH, [
        "cluster.inference_gpu_ids=[0,1]", "cluster.teacher_gpu_ids=[2]", "cluster.trainer_gpu_ids=[3]",
        "cluster.inference_dp=2", "cluster.colocated=false",
    ]),
    "001 eight gpus": (SEED_001_EIGHT_GPUS, [
        "cluster.inference_gpu_ids=[0,1]", "cluster.teacher_gpu_ids=[2,3]", "cluster.trainer_gpu_ids=[4,5,6,7]",
        "policy.generation.vllm_cfg.tensor_parallel_size=2", "teacher.dtensor_cfg.tensor_parallel_size=2",
        "cluster.colocated=false",
    ]),
    "002 pure task rl": (SEED_002_PURE_TASK_RL, taus("1.0", "0", "0")),
    "002 hybrid": (SEED_002_HYBRID, [*taus("1.0", "1.0", "1.0"), f"{CD}.use_full_reward_baseline=true"]),
    "002 gated": (SEED_002_GATED, [*taus("1.0", "0.01", "0.01"), f"{CD}.use_full_reward_baseline=true", f"{CD}.kl_only_incorrect=true"]),
    "002 pure distillation": (SEED_002_PURE_DISTILLATION, [*taus("0.0", "1.0", "1.0"), "env.skip_verification=true"]),
    "002 token level": (SEED_002_TOKEN_LEVEL, [*taus("1.0", "0.01", "0.01"), f"{CD}.use_full_reward_baseline=false"]),
    "002 shared gpu": (SEED_002_SHARED_GPU, ["cluster.inference_gpu_ids=[0,1]", "cluster.teacher_gpu_ids=[1]", "cluster.colocated=false"]),
}


def float_taus(overrides: list[str]) -> list[str]:
    """``adv_tau=0`` and ``adv_tau=0.0`` are the same value: compare taus as floats."""
    out = []
    for item in overrides:
        key, _, value = item.partition("=")
        out.append(f"{key}={float(value)!r}" if key.endswith("_tau") else item)
    return out


@pytest.mark.parametrize("name", list(SEED_COMMANDS))
def test_every_seed_command_line_parses(name):
    command, expected = SEED_COMMANDS[name]
    overrides, rest = translate_seed_flags(seed_argv(command))
    assert float_taus(overrides) == float_taus(expected)
    assert rest == []


def test_seed_flags_keep_the_rest_in_order():
    argv = ["--config", "r.yaml", *seed_argv(SEED_001_LAUNCH), "policy.optimizer.lr=2e-5", "--print-config"]
    overrides, rest = translate_seed_flags(argv)
    assert overrides[0] == "cluster.inference_gpu_ids=[0,1]"
    assert rest == ["--config", "r.yaml", "policy.optimizer.lr=2e-5", "--print-config"]


def test_the_seed_config_file_syntax_points_to_config():
    with pytest.raises(ConfigError, match="--config"):
        translate_seed_flags(shlex.split("@ experiments/context_distill/rl.toml --trainer_gpu_ids 3"))


# --- spellings ------------------------------------------------------------------------------------

@pytest.mark.parametrize("row", [row for row in SEED_FLAGS if row.convert in ("int", "float", "str")], ids=lambda row: row.seed)
def test_kebab_snake_and_equals_spellings_agree(row):
    value, rendered = {"int": ("3", "3"), "float": ("0.5", "0.5"), "str": ("x y", "'x y'")}[row.convert]
    snake = translate_seed_flags([row.flag, value])
    assert translate_seed_flags(["--" + row.seed.replace("_", "-"), value]) == snake
    assert translate_seed_flags([f"{row.flag}={value}"]) == snake
    assert snake[0][: len(row.ours)] == [f"{key}={rendered}" for key in row.ours]


@pytest.mark.parametrize("row", [row for row in SEED_FLAGS if row.convert == "bool"], ids=lambda row: row.seed)
def test_boolean_flags(row):
    key = row.ours[0]
    kebab = row.seed.replace("_", "-")
    for argv, value in (
        ([row.flag], "true"), (["--" + kebab], "true"), ([f"--no-{row.seed}"], "false"), ([f"--no-{kebab}"], "false"),
        ([row.flag, "false"], "false"), ([row.flag, "True"], "true"), ([f"{row.flag}=false"], "false"),
    ):
        assert translate_seed_flags(argv) == ([f"{key}={value}"], []), argv
    assert translate_seed_flags([row.flag, "a.b=1"]) == ([f"{key}=true"], ["a.b=1"])  # an override is not its value
    with pytest.raises(ConfigError, match="takes no value"):
        translate_seed_flags([f"--no-{row.seed}=true"])
    with pytest.raises(ConfigError, match="true or false"):
        translate_seed_flags([f"{row.flag}=yes"])


@pytest.mark.parametrize("argv", [["--inference_gpu_ids", "0", "1"], ["--inference_gpu_ids", "0,1"], ["--inference-gpu-ids=[0,1]"]])
def test_gpu_id_spellings(argv):
    assert translate_seed_flags(argv) == (["cluster.inference_gpu_ids=[0,1]", "cluster.colocated=false"], [])


def test_missing_and_malformed_values_name_our_key():
    with pytest.raises(ConfigError, match=r"'cluster.trainer_gpu_ids'.*needs slot ids"):
        translate_seed_flags(["--trainer_gpu_ids", "--inference_gpu_ids", "0"])
    with pytest.raises(ConfigError, match=r"'cluster.inference_dp'.*needs an integer, got 'two'"):
        translate_seed_flags(["--inference.parallel.dp", "two"])
    with pytest.raises(ConfigError, match=r"'grpo.context_distillation.adv_tau'.*needs a value"):
        translate_seed_flags(["--trainer.loss.adv_tau"])
    with pytest.raises(ConfigError, match=r"needs a number"):
        translate_seed_flags(["--trainer.loss.adv_tau", "high"])
    assert translate_seed_flags(["--trainer.loss.student_tau", "-0.5"])[0] == [f"{CD}.student_tau=-0.5"]


# --- unknown, unsupported, conflicting -----------------------------------------------------------

@pytest.mark.parametrize("flag, suggestion", [
    ("--orchestrator.advantage.kl-only-incorect", "--orchestrator.advantage.kl-only-incorrect"),
    ("--orchestrator.advantage.kl_only_incorect", "--orchestrator.advantage.kl_only_incorrect"),
    ("--no-orchestrator.advantage.use-full-reward-basline", "--no-orchestrator.advantage.use-full-reward-baseline"),
    ("--trainer.loss.adv-tau-x", "--trainer.loss.adv-tau"),
    ("--inference_gpu_id", "--inference_gpu_ids"),
    ("--inference.paralel.dp", "--inference.parallel.dp"),
    ("--print_confg", "--print-config"),
])
def test_unknown_flag_names_the_closest_known_one(flag, suggestion):
    with pytest.raises(ConfigError, match=f"unknown flag {flag} \\(did you mean {suggestion}\\?\\)"):
        translate_seed_flags([flag, "1"])


def test_our_own_keys_as_flags_point_to_overrides():
    with pytest.raises(ConfigError, match=r"key=value overrides \(policy.optimizer.lr=...\)"):
        translate_seed_flags(["--policy.optimizer.lr", "1e-5"])


def test_argparse_flags_pass_through():
    argv = ["--config", "x.yaml", "--config=y.yaml", "--print-config", "--help", "-h", "--", "a=1"]
    assert translate_seed_flags(argv) == ([], argv)


def test_unsupported_seed_keys_say_why():
    with pytest.raises(ConfigError, match="num_train_workers has no equivalent here: derived from cluster.trainer_gpu_ids"):
        translate_seed_flags(["--orchestrator.num_train_workers", "4"])


def test_two_flags_for_one_key_must_agree():
    same = translate_seed_flags(["--trainer.loss.adv_tau", "1", "--orchestrator.advantage.adv_tau", "1.0"])
    assert same == ([f"{CD}.adv_tau=1.0"], [])
    with pytest.raises(ConfigError, match=r"adv_tau'.*set twice with different values"):
        translate_seed_flags(["--trainer.loss.adv_tau", "1", "--orchestrator.advantage.adv_tau", "0.5"])


# --- combined rows: batch size / rollouts, betas, implied overrides ------------------------------

def test_batch_size_becomes_prompts_per_step():
    argv = ["--orchestrator.batch_size", "256", "--orchestrator.rollouts_per_example", "16"]
    assert translate_seed_flags(argv)[0] == [
        "grpo.num_generations_per_prompt=16", "grpo.num_prompts_per_step=16", "policy.train_global_batch_size=256",
    ]
    # the seed-000 runs' shared batch (256 = 16 prompts x 16), and 8 rollouts of seed 000's 16K runs
    assert "grpo.num_prompts_per_step=32" in translate_seed_flags(["--orchestrator.batch_size=256", "--orchestrator.rollouts-per-example=8"])[0]


def test_batch_size_takes_rollouts_from_an_override():
    overrides, rest = translate_seed_flags(["--orchestrator.batch_size", "96", "grpo.num_generations_per_prompt=12"])
    assert overrides == ["grpo.num_prompts_per_step=8", "policy.train_global_batch_size=96"]
    assert rest == ["grpo.num_generations_per_prompt=12"]


def test_batch_size_must_divide_by_rollouts():
    with pytest.raises(ConfigError, match=r"'grpo.num_prompts_per_step'.*250 is not divisible by rollouts_per_example 16.*such as 240"):
        translate_seed_flags(["--orchestrator.batch_size", "250", "--orchestrator.rollouts_per_example", "16"])
    with pytest.raises(ConfigError, match="also pass --orchestrator.rollouts_per_example"):
        translate_seed_flags(["--orchestrator.batch_size", "256"])


def test_betas_are_one_list():
    argv = ["--trainer.optim.betas1", "0.85", "--trainer.optim.betas2", "0.9"]
    assert translate_seed_flags(argv)[0] == ["policy.optimizer.betas=[0.85,0.9]"]
    with pytest.raises(ConfigError, match="betas2 is missing"):
        translate_seed_flags(argv[:2])


def test_implied_overrides_come_once_at_the_end():
    overrides, _ = translate_seed_flags(shlex.split("--trainer.model.lora.rank 16 --trainer.model.lora.alpha 64 --trainer.optim.lr 1e-5"))
    assert overrides == ["policy.lora.rank=16", "policy.lora.alpha=64", "policy.optimizer.lr=1e-05", "policy.lora.enabled=true"]


def test_environment_ids():
    assert translate_seed_flags(["--orchestrator.env.id", "sokoban-env"])[0] == ["env.type='sokoban'"]
    with pytest.raises(ConfigError, match="reverse-text.*not an environment here"):
        translate_seed_flags(["--orchestrator.env.id", "reverse-text"])


@dataclasses.dataclass
class _Teacher:
    context: str = "default"


@dataclasses.dataclass
class _TextSchema:
    teacher: _Teacher = dataclasses.field(default_factory=_Teacher)


@pytest.mark.parametrize("context", [
    # seed 001's contexts, verbatim
    "Think step by step before answering.\n\n",
    "Before providing your solution, follow these steps:\n1. Analyze the current state carefully\n"
    "2. Consider all possible actions\n3. Evaluate the consequences of each action\n4. Choose the optimal path\n\n"
    "Now solve this puzzle:\n\n",
    "You are a world-class puzzle solver with decades of experience.\nYou never make mistakes and always find the optimal solution.\n"
    "Approach this methodically:\n\n",
    # what the override grammar and OmegaConf would otherwise eat
    "it's \"quoted\", a=b [1,2] {x: 1} ${oops} 100% \\n \\' tail\\", "", "'",
])
def test_text_values_read_back_unchanged(context):
    overrides, _ = translate_seed_flags([f"--orchestrator.teacher_model.context={context}"])
    assert overrides == [f"{CD}.context={quote_override_value(context)}"]
    raw = apply_overrides(OmegaConf.create({"teacher": {"context": "default"}}), [f"teacher.context={quote_override_value(context)}"])
    assert validate(raw, _TextSchema).teacher.context == context


# --- the targets exist, and the doc is the table -------------------------------------------------

def test_every_target_key_exists_in_the_code():
    """All targets but the GRPO loop's own (grpo.*, env.skip_verification, env.type) are keys of today's schema."""
    grpo_only = {"env.skip_verification", "env.type"}
    targets = {key for row in SEED_FLAGS for key in row.ours} | {item.split("=")[0] for row in SEED_FLAGS for item in row.implies}
    checked = sorted(key for key in targets if not key.startswith("grpo.") and key not in grpo_only)
    assert len(checked) >= 15
    assert [key for key in checked if not schema_has_key(DistillationMasterConfig, key)] == []


def test_every_target_key_exists_in_the_grpo_schema():
    targets = {key for row in SEED_FLAGS for key in row.ours} | {item.split("=")[0] for row in SEED_FLAGS for item in row.implies}
    assert [key for key in sorted(targets) if not schema_has_key(GRPOMasterConfig, key)] == []


def test_seed_000_run_validates_as_a_grpo_config():
    """Seed 000's A2 run with every flag kind, through the GRPO schema (8 GPUs: 2 + 2 + 4)."""
    argv = shlex.split(
        "--model.name Qwen/Qwen3-4B-Instruct-2507 --max_steps 400 --seq_len 16884 --orchestrator.sampling.max_tokens 8192 "
        "--orchestrator.batch_size 256 --orchestrator.rollouts_per_example 16 --orchestrator.advantage.use-full-reward-baseline "
        "--trainer.model.lora.rank 16 --trainer.model.lora.alpha 64 --trainer.optim.lr 1e-5 --trainer.optim.betas1 0.85 "
        "--trainer.optim.betas2 0.9 --trainer.optim.max_norm 1.0 --inference_gpu_ids 0,1 --teacher_gpu_ids 2,3 "
        "--trainer_gpu_ids 4,5,6,7 --inference.parallel.dp 2 --teacher_inference.parallel.tp 2 --trainer.loss.adv_tau 1.0 "
        "--trainer.loss.teacher_tau 0.01 --trainer.loss.student_tau 0.01 --orchestrator.advantage.kl-only-incorrect "
        "--orchestrator.buffer.skip-verification --orchestrator.env.id sokoban-env --orchestrator.teacher_model.eval_baseline "
        "--orchestrator.sampling.temperature 0.7 --orchestrator.seed 3 --wandb.name cd-task1.0-kl0.01"
    ) + ["--orchestrator.teacher_model.context", "Think step by step before answering.\n\n"]
    overrides, rest = translate_seed_flags(argv, schema=GRPOMasterConfig)
    assert rest == []
    base = with_schema_defaults(OmegaConf.create({"cluster": {"gpus_per_node": 8}}), GRPOMasterConfig)
    cfg = validate(apply_overrides(base, overrides), GRPOMasterConfig)
    mix = cfg.grpo.context_distillation
    assert (mix.adv_tau, mix.teacher_tau, mix.student_tau) == (1.0, 0.01, 0.01)
    assert (mix.use_full_reward_baseline, mix.kl_only_incorrect, mix.eval_baseline) == (True, True, True)
    assert mix.context == "Think step by step before answering.\n\n"
    assert (cfg.env.type, cfg.env.skip_verification) == ("sokoban", True)
    assert (cfg.grpo.num_prompts_per_step, cfg.grpo.num_generations_per_prompt, cfg.grpo.max_num_steps, cfg.grpo.seed) == (16, 16, 400, 3)
    assert (cfg.policy.train_global_batch_size, cfg.policy.max_total_sequence_length) == (256, 16884)
    assert (cfg.policy.generation.max_new_tokens, cfg.policy.generation.temperature) == (8192, 0.7)
    assert (cfg.policy.optimizer.lr, cfg.policy.optimizer.betas, cfg.policy.max_grad_norm) == (1e-5, [0.85, 0.9], 1.0)
    assert (cfg.policy.lora.enabled, cfg.policy.lora.rank, cfg.policy.lora.alpha) == (True, 16, 64)
    assert cfg.policy.model_name == cfg.teacher.model_name == "Qwen/Qwen3-4B-Instruct-2507"
    assert (cfg.cluster.colocated, cfg.cluster.role_slot_ids("teacher"), cfg.cluster.inference_dp) == (False, [2, 3], 2)
    assert cfg.teacher.dtensor_cfg.tensor_parallel_size == 2
    assert (cfg.logger.wandb_enabled, cfg.logger.wandb.name) == (True, "cd-task1.0-kl0.01")


def test_schema_has_key():
    assert schema_has_key(DistillationMasterConfig, "policy.generation.vllm_cfg.tensor_parallel_size")
    assert schema_has_key(DistillationMasterConfig, "cluster.env_vars.ANY_NAME")  # below a dict field
    assert not schema_has_key(DistillationMasterConfig, "policy.generation.vllm_cfg.tp")
    assert not schema_has_key(DistillationMasterConfig, "grpo.context_distillation.adv_tau")


def test_a_flag_the_program_has_no_key_for_names_the_schema():
    with pytest.raises(ConfigError, match=r"'grpo.context_distillation.adv_tau'.*--trainer.loss.adv_tau.*DistillationMasterConfig"):
        translate_seed_flags(["--trainer.loss.adv_tau", "1.0"], schema=DistillationMasterConfig)
    assert translate_seed_flags(seed_argv(SEED_001_LAUNCH), schema=DistillationMasterConfig)[0][0] == "cluster.inference_gpu_ids=[0,1]"


# Every key and flag named in seeds 000-002 (full dotted names; seed 000 writes bare `max_tokens` etc.).
SEED_NAMES = (
    "inference_gpu_ids", "teacher_gpu_ids", "trainer_gpu_ids", "inference.parallel.dp", "inference.parallel.tp",
    "teacher_inference.parallel.tp", "orchestrator.num_train_workers",
    "trainer.loss.adv_tau", "trainer.loss.teacher_tau", "trainer.loss.student_tau",
    "orchestrator.advantage.adv_tau", "orchestrator.advantage.teacher_tau", "orchestrator.advantage.student_tau",
    "orchestrator.advantage.use_full_reward_baseline", "trainer.loss.use_full_reward_baseline",
    "orchestrator.advantage.kl_only_incorrect", "orchestrator.buffer.skip_verification",
    "orchestrator.teacher_model.context", "orchestrator.teacher_model.eval_baseline", "orchestrator.eval",
    "orchestrator.env.id", "orchestrator.env.args",
    "orchestrator.batch_size", "orchestrator.rollouts_per_example", "orchestrator.sampling.max_tokens",
    "orchestrator.sampling.temperature", "max_steps", "seq_len",
    "trainer.optim.lr", "trainer.optim.betas1", "trainer.optim.betas2", "trainer.optim.max_norm",
    "trainer.model.lora.rank", "trainer.model.lora.alpha", "wandb.name", "model.name",
)


def test_every_seed_name_is_in_the_table():
    assert sorted(set(SEED_NAMES) - {row.seed for row in SEED_FLAGS}) == []
    seeds = [row.seed for row in SEED_FLAGS]
    assert len(seeds) == len(set(seeds)), "a seed flag appears twice in SEED_FLAGS"


def test_rows_are_well_formed():
    for row in SEED_FLAGS:
        assert row.convert in CONVERSIONS, row
        assert bool(row.ours) != (row.convert == "unsupported"), row
        assert row.seed == row.seed.lower() and "-" not in row.seed, row  # canonical snake_case
        assert "|" not in row.note, row  # the Markdown table


def test_the_doc_shows_the_table():
    assert doc_table(DOC_PATH.read_text()) == render_markdown_table(), (
        "docs/migration.md is out of date: run `python -m nemo_distill.config.seed_flags`"
    )


def test_write_doc_table_is_idempotent(tmp_path):
    doc = tmp_path / "m.md"
    doc.write_text(DOC_PATH.read_text().replace(render_markdown_table(), "| stale |"))
    write_doc_table(doc)
    first = doc.read_text()
    write_doc_table(doc)
    assert doc.read_text() == first == DOC_PATH.read_text()


# --- through parse_command_line (what every examples/run_*.py calls) -----------------------------

def test_parse_command_line_translates_seed_flags():
    argv = ["--config", str(REPO / "configs" / "distillation_tiny_cpu.yaml"), "cluster.gpus_per_node=8",
            *seed_argv(SEED_001_EIGHT_GPUS), "--trainer.optim.betas1", "0.85", "--trainer.optim.betas2=0.9",
            "--trainer.model.lora.rank", "16", "--trainer.model.lora.alpha", "64", "--orchestrator.sampling.max_tokens", "32"]
    parsed = parse_command_line(argv, DistillationMasterConfig, default_config="unused.yaml", description="test")
    cfg = parsed.config
    assert (cfg.cluster.colocated, cfg.cluster.inference_gpu_ids, cfg.cluster.trainer_gpu_ids) == (False, [0, 1], [4, 5, 6, 7])
    assert cfg.policy.generation.vllm_cfg.tensor_parallel_size == 2 and cfg.teacher.dtensor_cfg.tensor_parallel_size == 2
    assert cfg.policy.optimizer.betas == [0.85, 0.9] and cfg.policy.generation.max_new_tokens == 32
    assert (cfg.policy.lora.enabled, cfg.policy.lora.rank, cfg.policy.lora.alpha) == (True, 16, 64)


def test_parse_command_line_rejects_unknown_flags_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean --trainer_gpu_ids"):
        parse_command_line(["--trainer_gpus_ids", "3"], DistillationMasterConfig, default_config="unused.yaml", description="test")
    with pytest.raises(ConfigError, match="run_grpo.py"):  # checked before the YAML is read
        parse_command_line(shlex.split(SEED_002_GATED), DistillationMasterConfig, default_config="unused.yaml", description="test")


def test_schema_defaults_fill_what_the_flags_do_not_set():
    """Translated overrides only set existing keys: they apply to the defaulted schema without '+'."""
    overrides, _ = translate_seed_flags(seed_argv(SEED_001_LAUNCH))
    base = with_schema_defaults(OmegaConf.create({"cluster": {"gpus_per_node": 4}}), DistillationMasterConfig)
    cfg = validate(apply_overrides(base, overrides), DistillationMasterConfig)
    assert (cfg.cluster.inference_dp, cfg.cluster.role_slot_ids("teacher")) == (2, [2])


def doc_commands() -> list[list[str]]:
    """The flags of every ``run_grpo.py`` command in docs/migration.md, with ``$SHARED`` expanded."""
    text = DOC_PATH.read_text().replace("\\\n", " ")
    shared_line = next(line for line in text.splitlines() if line.startswith('SHARED="'))
    shared = shlex.split(shared_line.removeprefix("SHARED="))[0]
    commands = []
    for line in text.splitlines():
        if line.startswith("uv run python examples/run_grpo.py"):
            tokens = shlex.split(line.replace("$SHARED", shared).split("examples/run_grpo.py", 1)[1])
            commands.append(tokens)
    return commands


def test_the_doc_commands_parse():
    commands = doc_commands()
    assert len(commands) == 6
    for tokens in commands:
        translate_seed_flags(tokens)
    runs = [translate_seed_flags(tokens) for tokens in commands[-4:]]  # seed 000's A1, A2, A3, B1
    for (overrides, rest), teacher_tau in zip(runs, ("0.0", "0.01", "0.001", "1.0")):
        assert rest == ["--config", "<recipe>.yaml"]
        for expected in ("grpo.num_prompts_per_step=16", "grpo.num_generations_per_prompt=16", "grpo.max_num_steps=400",
                         "policy.max_total_sequence_length=16884", "policy.generation.max_new_tokens=8192",
                         "policy.optimizer.betas=[0.85,0.9]", "policy.lora.enabled=true", "cluster.trainer_gpu_ids=[4,5,6,7]",
                         "policy.model_name='Qwen/Qwen3-4B-Instruct-2507'", f"{CD}.use_full_reward_baseline=true",
                         f"{CD}.teacher_tau={teacher_tau}"):
            assert expected in overrides
