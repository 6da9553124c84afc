"""The command line every ``examples/run_*.py`` shares.

``python examples/run_X.py --config PATH [--print-config] [--inference_gpu_ids 0,1 ...] key=value ...``

Overrides use Hydra's grammar (see :mod:`nemo_distill.config.overrides`). ``--print-config``
prints the resolved, fully-defaulted config and exits 0, after the same checks as a run (the
program's cross-section ``check``), so a config it prints is one that would start.

Every ``examples/run_*.py`` ends with ``sys.exit(run_main(main))``: a user mistake
(:class:`~nemo_distill.config.errors.UserError`: config, data, prompt files; or a missing /
unreadable file) prints one ``error: ...`` line and exits 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from omegaconf import DictConfig, OmegaConf

from nemo_distill.config.errors import UserError
from nemo_distill.config.loader import load_config
from nemo_distill.config.overrides import apply_overrides
from nemo_distill.config.schema import to_dictconfig, validate, with_schema_defaults
from nemo_distill.utils.logging_setup import configure_logging

T = TypeVar("T")


@dataclass
class ParsedCommandLine(Generic[T]):
    config: T  # the typed, validated config
    config_yaml: str  # the same, as YAML (what --print-config prints and checkpoints save)
    config_path: str
    overrides: list[str]


def parse_command_line(
    argv: list[str] | None,
    schema: type[T],
    *,
    default_config: str,
    description: str,
    check: Callable[[T], None] | None = None,
) -> ParsedCommandLine[T]:
    """Parse ``argv``, load and override the YAML, validate it against ``schema``, run ``check``.

    ``check`` is the program's cross-section check (e.g. ``check_distillation_config``); it runs
    before ``--print-config`` prints. Errors in the YAML, the overrides or ``check`` raise
    :class:`~nemo_distill.config.ConfigError` before anything else starts.
    """
    from nemo_distill.config.seed_flags import translate_seed_flags  # seed-framework flags -> overrides (docs/migration.md)

    argv = list(sys.argv[1:] if argv is None else argv)
    gpu_overrides, argv = translate_seed_flags(argv, schema=schema)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config, help=f"YAML config (default: {default_config})")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args, overrides = parser.parse_known_args(argv)
    unknown_flags = [item for item in overrides if item.startswith("--")]
    if unknown_flags:
        parser.error(f"unknown flags {unknown_flags}; config values are set as key=value overrides")
    overrides = [*gpu_overrides, *overrides]
    raw: DictConfig = apply_overrides(with_schema_defaults(load_config(args.config), schema), overrides)
    config = validate(raw, schema)
    if check is not None:
        check(config)
    config_yaml = OmegaConf.to_yaml(to_dictconfig(config))
    if args.print_config:
        print(config_yaml, end="")
        raise SystemExit(0)
    return ParsedCommandLine(config=config, config_yaml=config_yaml, config_path=args.config, overrides=overrides)


# Plain OS errors about files the user named; the same types raised from a worker (wrapped, with a
# remote traceback) or by a library's internals are not in this set's exact-type check.
_USER_FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_user_error(err: BaseException) -> bool:
    """A mistake the user fixes (one ``error:`` line, exit 2), not a bug (traceback)."""
    return isinstance(err, UserError) or type(err) in _USER_FILE_ERRORS


def run_main(main: Callable[[], int | None]) -> int:
    """Run an entry point's ``main()`` and turn a user mistake into ``error: ...`` on stderr and exit code 2.

    Use as ``sys.exit(run_main(main))``. Other exceptions propagate with their traceback (bugs).
    The library's log messages are switched on first (``NEMO_DISTILL_LOG_LEVEL``, default INFO).
    """
    try:
        configure_logging()
        return main() or 0
    except BaseException as err:
        if not is_user_error(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
