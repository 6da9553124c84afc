"""The command line every ``examples/run_*.py`` shares.

``python examples/run_X.py --config PATH [--print-config] [--inference_gpu_ids 0,1 ...] key=value ...``

Overrides use Hydra's grammar (see :mod:`nemo_distill.config.overrides`). ``--print-config``
prints the resolved, fully-defaulted config and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Generic, TypeVar

from omegaconf import DictConfig, OmegaConf

from nemo_distill.config.loader import load_config
from nemo_distill.config.overrides import apply_overrides
from nemo_distill.config.schema import to_dictconfig, validate, with_schema_defaults

T = TypeVar("T")


@dataclass
class ParsedCommandLine(Generic[T]):
    config: T  # the typed, validated config
    config_yaml: str  # the same, as YAML (what --print-config prints and checkpoints save)
    config_path: str
    overrides: list[str]


def parse_command_line(argv: list[str] | None, schema: type[T], *, default_config: str, description: str) -> ParsedCommandLine[T]:
    """Parse ``argv``, load and override the YAML, validate it against ``schema``.

    Errors in the YAML or the overrides raise :class:`~nemo_distill.config.ConfigError` before
    anything else starts.
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
    config_yaml = OmegaConf.to_yaml(to_dictconfig(config))
    if args.print_config:
        print(config_yaml, end="")
        raise SystemExit(0)
    return ParsedCommandLine(config=config, config_yaml=config_yaml, config_path=args.config, overrides=overrides)
