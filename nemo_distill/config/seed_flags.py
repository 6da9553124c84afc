"""The seed framework's command-line flags, translated into our config overrides (issue 14).

Users of the seed framework (seeds 000-002, a prime-rl fork) launch reward-mixed context
distillation with flags such as::

    --inference_gpu_ids 0,1 --teacher_gpu_ids 2 --trainer_gpu_ids 3 --inference.parallel.dp 2
    --trainer.loss.adv_tau 1.0 --orchestrator.advantage.kl-only-incorrect
    --no-orchestrator.advantage.use-full-reward-baseline --orchestrator.buffer.skip-verification

Every ``examples/run_*.py`` accepts them as written: :func:`translate_seed_flags` (called by
:func:`nemo_distill.config.cli.parse_command_line`) turns them into Hydra-grammar overrides such as
``grpo.context_distillation.adv_tau=1.0`` that are applied before the user's own ``key=value``
overrides (so an explicit override wins).

:data:`SEED_FLAGS` is the one table: it drives the translation and the table of
``docs/migration.md`` (:func:`render_markdown_table`; a test keeps the doc equal to it;
``python -m nemo_distill.config.seed_flags`` rewrites it).

Spellings accepted for every flag: ``--a.b value`` and ``--a.b=value``; kebab-case or snake_case
(``--kl-only-incorrect`` == ``--kl_only_incorrect``); boolean flags as ``--x.y`` (true), ``--no-x.y``
(false) or ``--x.y true|false``; slot ids as ``0,1``, ``0 1`` or ``[0,1]``. An unknown ``--flag`` is a
:class:`~nemo_distill.config.ConfigError` naming the closest known flag; ``--config``,
``--print-config`` and ``--help`` are left to argparse. The seed's ``@ rl.toml`` config syntax is
an error pointing to ``--config``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from nemo_distill.config.errors import ConfigError
from nemo_distill.distributed.config import parse_gpu_ids

# How a flag's value becomes ours; CONVERSIONS says it in words for the docs.
Convert = Literal["int", "float", "str", "bool", "gpu_ids", "env_id", "batch_size", "beta1", "beta2", "unsupported"]

CONVERSIONS: dict[str, str] = {
    "int": "integer",
    "float": "number",
    "str": "text (quoted for the override grammar)",
    "bool": "`--flag` true, `--no-flag` false",
    "gpu_ids": "slot ids `0,1` / `0 1` -> `[0,1]`",
    "env_id": "`sokoban-env` -> `sokoban`",
    "batch_size": "B -> B / rollouts_per_example prompts (must divide), B samples",
    "beta1": "with betas2 -> `[betas1, betas2]`",
    "beta2": "with betas1 -> `[betas1, betas2]`",
    "unsupported": "rejected (see note)",
}


@dataclass(frozen=True)
class SeedFlag:
    """One row of the migration table: a seed key/flag and the key(s) it sets here."""

    seed: str  # the seed's dotted key in snake_case; the flag is "--" + seed (kebab-case also accepted)
    ours: tuple[str, ...]  # our key(s) receiving the converted value; () for unsupported rows
    convert: Convert
    note: str = ""
    implies: tuple[str, ...] = ()  # fixed overrides any use of the flag adds once, e.g. cluster.colocated=false

    @property
    def flag(self) -> str:
        return "--" + self.seed


_CD = "grpo.context_distillation"
_SPLIT = ("cluster.colocated=false",)
_WANDB_ON = ("logger.wandb_enabled=true",)

SEED_FLAGS: tuple[SeedFlag, ...] = (
    # Placement (seed 001 "GPU Allocation", seed 002 "GPU Layout").
    SeedFlag("inference_gpu_ids", ("cluster.inference_gpu_ids",), "gpu_ids", "ids name slots (placement-group bundles), not physical GPUs", _SPLIT),
    SeedFlag("teacher_gpu_ids", ("cluster.teacher_gpu_ids",), "gpu_ids", "may share slots with inference, never with the trainer", _SPLIT),
    SeedFlag("trainer_gpu_ids", ("cluster.trainer_gpu_ids",), "gpu_ids", "the trainer's slots; their count is its data-parallel size", _SPLIT),
    SeedFlag("inference.parallel.dp", ("cluster.inference_dp",), "int", "checked against the inference slots / engine TP; inferred when unset"),
    SeedFlag("inference.parallel.tp", ("policy.generation.vllm_cfg.tensor_parallel_size",), "int",
             "vLLM engine TP (the vllm backend accepts only 1 for now; the hf backend ignores it)"),
    SeedFlag("teacher_inference.parallel.tp", ("teacher.dtensor_cfg.tensor_parallel_size",), "int",
             "the teacher is a DTensor scoring worker here, not a vLLM server"),
    SeedFlag("orchestrator.num_train_workers", (), "unsupported", "derived from cluster.trainer_gpu_ids; drop the flag"),
    # Reward mixing (seed 002 "Loss Tau Values", "Advantage Configuration").
    SeedFlag("trainer.loss.adv_tau", (f"{_CD}.adv_tau",), "float", "weight of the task reward"),
    SeedFlag("trainer.loss.teacher_tau", (f"{_CD}.teacher_tau",), "float", "weight of sum log p_teacher; > 0 needs a teacher"),
    SeedFlag("trainer.loss.student_tau", (f"{_CD}.student_tau",), "float", "weight of -sum log p_student (from the sampling log-probs)"),
    SeedFlag("orchestrator.advantage.adv_tau", (f"{_CD}.adv_tau",), "float", "the seed copies trainer.loss.* here; one key here"),
    SeedFlag("orchestrator.advantage.teacher_tau", (f"{_CD}.teacher_tau",), "float", "the seed copies trainer.loss.* here; one key here"),
    SeedFlag("orchestrator.advantage.student_tau", (f"{_CD}.student_tau",), "float", "the seed copies trainer.loss.* here; one key here"),
    SeedFlag("orchestrator.advantage.use_full_reward_baseline", (f"{_CD}.use_full_reward_baseline",), "bool",
             "true: sequence-level KL in the advantage; false: per-token KL in the loss"),
    SeedFlag("trainer.loss.use_full_reward_baseline", (f"{_CD}.use_full_reward_baseline",), "bool",
             "synced from orchestrator.advantage in the seed; one key here"),
    SeedFlag("orchestrator.advantage.kl_only_incorrect", (f"{_CD}.kl_only_incorrect",), "bool",
             "gate the KL terms by 1 - group mean task reward"),
    SeedFlag("orchestrator.buffer.skip_verification", ("env.skip_verification",), "bool",
             "task reward 0, the verifier is never called"),
    # Teacher (seed 001/002 "Teacher Model").
    SeedFlag("orchestrator.teacher_model.context", (f"{_CD}.context",), "str",
             "prepended to the student's prompt text before the chat template; or context_file"),
    SeedFlag("orchestrator.teacher_model.eval_baseline", (f"{_CD}.eval_baseline",), "bool",
             "student without / teacher with context on the eval split before training"),
    # Batch, steps, lengths, sampling (seed 000 "Shared Parameters", seed 002 "Orchestrator Settings", "Sampling").
    SeedFlag("orchestrator.batch_size", ("grpo.num_prompts_per_step", "policy.train_global_batch_size"), "batch_size",
             "samples per step in the seed; prompts per step here (needs rollouts_per_example)"),
    SeedFlag("orchestrator.rollouts_per_example", ("grpo.num_generations_per_prompt",), "int", "group size of the baseline and the gate"),
    SeedFlag("max_steps", ("grpo.max_num_steps",), "int", "shared key of the seed's launcher"),
    SeedFlag("trainer.max_steps", ("grpo.max_num_steps",), "int"),
    SeedFlag("orchestrator.max_steps", ("grpo.max_num_steps",), "int"),
    SeedFlag("seq_len", ("policy.max_total_sequence_length",), "int", "prompt + response tokens"),
    SeedFlag("orchestrator.seq_len", ("policy.max_total_sequence_length",), "int"),
    SeedFlag("trainer.model.seq_len", ("policy.max_total_sequence_length",), "int"),
    SeedFlag("orchestrator.sampling.max_tokens", ("policy.generation.max_new_tokens",), "int", "response tokens per rollout"),
    SeedFlag("orchestrator.sampling.temperature", ("policy.generation.temperature",), "float"),
    SeedFlag("orchestrator.seed", ("grpo.seed",), "int", "not named in the seeds"),
    # Optimisation and LoRA (seed 000 "Shared Parameters", seed 002 "Training Hyperparameters").
    SeedFlag("trainer.optim.lr", ("policy.optimizer.lr",), "float"),
    SeedFlag("trainer.optim.betas1", ("policy.optimizer.betas",), "beta1", "give both betas (or policy.optimizer.betas=[b1,b2])"),
    SeedFlag("trainer.optim.betas2", ("policy.optimizer.betas",), "beta2", "give both betas (or policy.optimizer.betas=[b1,b2])"),
    SeedFlag("trainer.optim.max_norm", ("policy.max_grad_norm",), "float", "global gradient L2 clip"),
    SeedFlag("trainer.optim.weight_decay", ("policy.optimizer.weight_decay",), "float", "not named in the seeds"),
    SeedFlag("trainer.model.lora.rank", ("policy.lora.rank",), "int", "also turns LoRA on", ("policy.lora.enabled=true",)),
    SeedFlag("trainer.model.lora.alpha", ("policy.lora.alpha",), "int", "scaling alpha / rank", ("policy.lora.enabled=true",)),
    # Environment, evaluation, model, logging.
    SeedFlag("orchestrator.env.id", ("env.type",), "env_id", "TOML `[[orchestrator.env]] id`; one environment per run here"),
    SeedFlag("orchestrator.env.args", (), "unsupported", "environment options live in the env section of the YAML (env.math, env.sokoban)"),
    SeedFlag("orchestrator.eval", (), "unsupported", "a YAML section: the eval split of the GRPO config (eval_baseline needs it)"),
    SeedFlag("model.name", ("policy.model_name", "teacher.model_name"), "str", "student and frozen teacher start from the same weights"),
    SeedFlag("wandb.name", ("logger.wandb.name",), "str", "also turns W&B logging on", _WANDB_ON),
    SeedFlag("wandb.project", ("logger.wandb.project",), "str", "also turns W&B logging on", _WANDB_ON),
)

# The rows apply_gpu_id_flags has always handled (seed 001's launch command).
PLACEMENT_ROWS: tuple[SeedFlag, ...] = tuple(
    row for row in SEED_FLAGS if row.seed in ("inference_gpu_ids", "teacher_gpu_ids", "trainer_gpu_ids", "inference.parallel.dp")
)
# Flags that belong to argparse in cli.py, not to this table.
PASSTHROUGH_FLAGS: tuple[str, ...] = ("--config", "--print-config", "--help")

ENV_TYPES = ("math", "sokoban")
_ID_TOKEN = re.compile(r"^\[?\d+(,\d+)*,?\]?$")  # one slot-id token: 3, 0,1, [0,1]
_BOOL_WORDS = {"true": True, "false": False}
_NUM_GENERATIONS_OVERRIDE = re.compile(r"^\+{0,2}grpo\.num_generations_per_prompt=(\d+)$")


def _normalise(flag: str) -> str:
    """``--Orchestrator.advantage.kl-only-incorrect`` -> ``orchestrator.advantage.kl_only_incorrect``."""
    return flag.removeprefix("--").replace("-", "_").lower()


def quote_override_value(text: str) -> str:
    """``text`` as a single-quoted value of Hydra's override grammar that reads back unchanged.

    Hydra unescapes backslashes only before a quote or at the end of a quoted string, and OmegaConf
    would resolve ``${...}``; both are escaped here (checked by a round-trip test).
    """
    text = text.replace("${", "\\${")
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f"'{text}'"


def _convert(row: SeedFlag, flag: str, text: str) -> object:
    """The flag's value as a Python object; ``ConfigError`` naming the flag and our key otherwise."""
    key = row.ours[0]
    try:
        if row.convert in ("int", "batch_size"):
            return int(text)
        if row.convert in ("float", "beta1", "beta2"):
            return float(text)
    except ValueError:
        kind = "an integer" if row.convert in ("int", "batch_size") else "a number"
        raise ConfigError(key, f"{flag} needs {kind}, got {text!r}") from None
    if row.convert == "bool":
        if text.lower() not in _BOOL_WORDS:
            raise ConfigError(key, f"{flag} takes true or false, got {text!r} (or write {flag} / --no-{flag[2:]})")
        return _BOOL_WORDS[text.lower()]
    if row.convert == "gpu_ids":
        return parse_gpu_ids(text, key=key)
    if row.convert == "env_id":
        name = text.strip().lower().removesuffix("-env").removesuffix("_env")
        if name not in ENV_TYPES:
            raise ConfigError(key, f"{flag} {text!r} is not an environment here; choose one of {[f'{e}-env' for e in ENV_TYPES]}")
        return name
    return text


def _render(value: object) -> str:
    """A converted value in the override grammar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_render(item) for item in value) + "]"
    if isinstance(value, str):
        return quote_override_value(value)
    return repr(value) if isinstance(value, float) else str(value)


def _unknown_flag_error(flag: str, index: dict[str, SeedFlag], passthrough: Iterable[str]) -> ConfigError:
    name = _normalise(flag)
    known = {f"--{seed}": seed for seed in index} | {f"--no-{seed}": f"no_{seed}" for seed, row in index.items() if row.convert == "bool"}
    known |= {item: _normalise(item) for item in passthrough}
    by_name = {normalised: shown for shown, normalised in known.items()}
    close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.0)
    suggestion = by_name[close[0]] if close else ""
    if "-" in flag.removeprefix("--").removeprefix("no-"):  # answer in the spelling the user chose
        suggestion = "--" + suggestion[2:].replace("_", "-")
    hint = f" (did you mean {suggestion}?)" if suggestion else ""
    own = "" if name.startswith("no_") else f" ({name}=...)"
    return ConfigError(
        "",
        f"unknown flag {flag}{hint}; the seed framework's flags are listed in docs/migration.md, "
        f"and this library's own settings are key=value overrides{own}",
    )


def translate_seed_flags(
    argv: list[str],
    *,
    rows: Iterable[SeedFlag] = SEED_FLAGS,
    passthrough: Iterable[str] = PASSTHROUGH_FLAGS,
    unknown: Literal["error", "keep"] = "error",
    schema: type | None = None,
) -> tuple[list[str], list[str]]:
    """Split ``argv`` into (overrides from seed flags, the rest in order).

    ``["--inference_gpu_ids", "0", "1", "--trainer.loss.adv_tau=1.0", "--config", "x.yaml", "a.b=2"]``
    -> ``(["cluster.inference_gpu_ids=[0,1]", "grpo.context_distillation.adv_tau=1.0",
    "cluster.colocated=false"], ["--config", "x.yaml", "a.b=2"])``: value overrides in the order of
    the flags, then the combined ones (batch size, betas), then each implied override once.
    Tokens that are not ``--flags`` (overrides, the ``--config`` path) and the ``passthrough`` flags
    go to the rest untouched. ``unknown="keep"`` passes unknown ``--flags`` through instead of
    raising (what :func:`nemo_distill.distributed.config.apply_gpu_id_flags` does). With ``schema``
    (the program's config dataclass), a flag whose key that program lacks is an error naming the
    program's schema (``--trainer.loss.adv_tau`` given to the distillation example).

    Raises :class:`ConfigError` for an unknown flag (naming the closest known one), a missing or
    malformed value, an unsupported seed key, two flags setting one key to different values, and a
    batch size not divisible by the rollouts per example.
    """
    index = {row.seed: row for row in rows}
    passthrough = tuple(passthrough)
    passthrough_names = {_normalise(item) for item in passthrough}
    given: list[tuple[SeedFlag, str, object]] = []  # (row, flag as written, converted value), in argv order
    rest: list[str] = []
    position = 0
    while position < len(argv):
        token = argv[position]
        position += 1
        if token.startswith("@"):
            raise ConfigError("", "'@ file.toml' is the seed framework's config syntax; pass a YAML recipe with --config "
                                  "(docs/migration.md maps the TOML keys)")
        if not token.startswith("--") or token == "--":
            rest.append(token)
            continue
        flag, has_inline, inline = token.partition("=")
        name = _normalise(flag)
        if name in passthrough_names:
            rest.append(token)
            continue
        row, negated = index.get(name), False
        if row is None and name.startswith("no_") and getattr(index.get(name[3:]), "convert", None) == "bool":
            row, negated = index[name[3:]], True
        if row is None:
            if unknown == "keep":
                rest.append(token)
                continue
            raise _unknown_flag_error(flag, index, passthrough)
        if row.convert == "unsupported":
            raise ConfigError("", f"{flag} has no equivalent here: {row.note} (docs/migration.md)")
        following = argv[position] if position < len(argv) else None
        if row.convert == "bool":
            if negated and has_inline:
                raise ConfigError(row.ours[0], f"{flag} takes no value; write --{row.seed}={inline} or {flag}")
            if negated:
                value: object = False
            elif has_inline:
                value = _convert(row, flag, inline)
            elif following is not None and following.lower() in _BOOL_WORDS:
                value, position = _BOOL_WORDS[following.lower()], position + 1
            else:
                value = True
        elif row.convert == "gpu_ids":
            parts = [inline] if has_inline else []
            while not has_inline and position < len(argv) and _ID_TOKEN.match(argv[position]):
                parts.append(argv[position])
                position += 1
            if not parts:
                raise ConfigError(row.ours[0], f"flag {flag} needs slot ids, e.g. '{flag} 0,1' or '{flag} 0 1'")
            value = _convert(row, flag, " ".join(parts))
        else:
            if has_inline:
                text = inline
            elif following is None or following.startswith("--"):
                raise ConfigError(row.ours[0], f"flag {flag} needs a value, e.g. '{flag} VALUE' or '{flag}=VALUE'")
            else:
                text, position = following, position + 1
            value = _convert(row, flag, text)
        if schema is not None:
            _check_schema_has(schema, row, flag)
        given.append((row, flag, value))
    return _to_overrides(given, rest), rest


def _check_schema_has(schema: type, row: SeedFlag, flag: str) -> None:
    """``ConfigError`` when ``schema`` has no key for one of ``row``'s targets."""
    for key in (*row.ours, *(item.split("=")[0] for item in row.implies)):
        if not schema_has_key(schema, key):
            raise ConfigError(
                key,
                f"{flag} sets this key, which this program's config ({schema.__name__}) does not have: the flag "
                "does not apply here (the seed's reward-mixed context distillation runs with examples/run_grpo.py)",
            )


def schema_has_key(schema: type, key: str) -> bool:
    """Whether the dotted ``key`` names a field of the dataclass ``schema`` (through nested sections).

    Below a field that is not a dataclass section (a dict, say) anything is accepted.
    """
    node: object = schema
    for part in key.split("."):
        if not dataclasses.is_dataclass(node):
            return True
        hints = typing.get_type_hints(node)
        if part not in {field.name for field in dataclasses.fields(node)}:
            return False
        hint = hints[part]
        sections = [arg for arg in typing.get_args(hint) if dataclasses.is_dataclass(arg)]  # X | None
        node = sections[0] if sections else hint
    return True


def _to_overrides(given: list[tuple[SeedFlag, str, object]], rest: list[str]) -> list[str]:
    """Overrides from the parsed flags: plain rows, then batch size and betas, then implied ones."""
    setting: dict[str, tuple[str, str]] = {}  # our key -> (flag, rendered value), to catch conflicts
    overrides: list[str] = []

    def put(key: str, flag: str, rendered: str) -> None:
        if key in setting:
            first_flag, first = setting[key]
            if first != rendered:
                raise ConfigError(key, f"set twice with different values: {first_flag} {first} and {flag} {rendered}; keep one")
            return
        setting[key] = (flag, rendered)
        overrides.append(f"{key}={rendered}")

    by_kind: dict[str, tuple[str, object]] = {}
    for row, flag, value in given:
        if row.convert in ("batch_size", "beta1", "beta2"):
            by_kind[row.convert] = (flag, value)
            continue
        for key in row.ours:
            put(key, flag, _render(value))
    if "batch_size" in by_kind:
        flag, batch = by_kind["batch_size"]
        rollouts = _rollouts_per_example(given, rest)
        if rollouts is None:
            raise ConfigError(
                "grpo.num_prompts_per_step",
                f"{flag} {batch} counts samples per step, ours counts prompts: also pass "
                "--orchestrator.rollouts_per_example N (or grpo.num_generations_per_prompt=N)",
            )
        if rollouts < 1 or batch % rollouts:
            raise ConfigError(
                "grpo.num_prompts_per_step",
                f"{flag} {batch} is not divisible by rollouts_per_example {rollouts}: the batch holds whole groups; "
                f"use a multiple of {rollouts} such as {max(rollouts, batch - batch % rollouts)}",
            )
        put("grpo.num_prompts_per_step", flag, str(batch // rollouts))
        put("policy.train_global_batch_size", flag, str(batch))
    if "beta1" in by_kind or "beta2" in by_kind:
        missing = [name for kind, name in (("beta1", "betas1"), ("beta2", "betas2")) if kind not in by_kind]
        if missing:
            raise ConfigError(
                "policy.optimizer.betas",
                f"--trainer.optim.{missing[0]} is missing: AdamW betas are one list here; give both "
                "--trainer.optim.betas1 and --trainer.optim.betas2, or policy.optimizer.betas=[b1,b2]",
            )
        put("policy.optimizer.betas", by_kind["beta1"][0], _render([by_kind["beta1"][1], by_kind["beta2"][1]]))
    for row, _, _ in given:
        for implied in row.implies:
            if implied not in overrides:
                overrides.append(implied)
    return overrides


def _rollouts_per_example(given: list[tuple[SeedFlag, str, object]], rest: list[str]) -> int | None:
    """Rollouts per example from the flags, else from a ``grpo.num_generations_per_prompt=N`` override."""
    for row, _, value in given:
        if row.seed == "orchestrator.rollouts_per_example":
            return int(value)  # type: ignore[call-overload]
    for token in reversed(rest):
        match = _NUM_GENERATIONS_OVERRIDE.match(token)
        if match:
            return int(match.group(1))
    return None


# --- docs/migration.md ------------------------------------------------------------------------

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "migration.md"
TABLE_BEGIN = "<!-- BEGIN seed-flags table: generated from nemo_distill/config/seed_flags.py SEED_FLAGS; do not edit -->"
TABLE_END = "<!-- END seed-flags table -->"


def render_markdown_table(rows: Iterable[SeedFlag] = SEED_FLAGS) -> str:
    """The migration table as Markdown, one line per row of :data:`SEED_FLAGS`."""
    lines = ["| seed flag / key | our key | value | note |", "|---|---|---|---|"]
    for row in rows:
        ours = "<br>".join(f"`{key}`" for key in row.ours) or "—"
        note = "; ".join(part for part in (row.note, *(f"sets `{item}`" for item in row.implies)) if part)
        lines.append(f"| `{row.flag}` | {ours} | {CONVERSIONS[row.convert]} | {note} |")
    return "\n".join(lines)


def doc_table(text: str) -> str:
    """The generated table inside ``text`` (between the markers); ``ValueError`` when they are missing."""
    begin, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    if begin < 0 or end < begin:
        raise ValueError(f"the markers {TABLE_BEGIN!r} ... {TABLE_END!r} are missing")
    return text[begin + len(TABLE_BEGIN):end].strip("\n")


def write_doc_table(path: Path = DOC_PATH) -> None:
    """Replace the generated table of ``path`` with :func:`render_markdown_table`'s."""
    text = path.read_text()
    doc_table(text)  # checks the markers
    begin, end = text.find(TABLE_BEGIN) + len(TABLE_BEGIN), text.find(TABLE_END)
    path.write_text(f"{text[:begin]}\n{render_markdown_table()}\n{text[end:]}")


if __name__ == "__main__":
    write_doc_table(Path(sys.argv[1]) if len(sys.argv) > 1 else DOC_PATH)
    print(f"rewrote the seed-flags table of {sys.argv[1] if len(sys.argv) > 1 else DOC_PATH}")
