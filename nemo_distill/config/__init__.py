"""Configs: YAML files with ``defaults:`` inheritance, Hydra-grammar overrides, typed validation.

* :mod:`.loader`    -- ``load_config(path)``: follows ``defaults:``, ``_override_`` sections,
  resolvers ``add``, ``mul``, ``div``, ``max``.
* :mod:`.overrides` -- ``apply_overrides(cfg, ["a.b=1", "+new=2", "++x=3", "~a.c"])``.
* :mod:`.interpolation` -- which ``${...}`` is interpolated (resolver calls, dotted references;
  never in ``*_template`` fields) and which is text (``${problem}$``); ``\\${`` escapes.
* :mod:`.schema`    -- ``validate(cfg, SchemaDataclass)``: unknown keys, types, bounds.
* :mod:`.cli`       -- ``parse_command_line(argv, schema, check=...)``: ``--config PATH [--print-config]
  overrides...``; ``run_main(main)``: user mistakes -> one ``error:`` line, exit 2.
* :mod:`.errors`    -- ``UserError`` (a mistake the user fixes), ``ConfigError(UserError, ValueError)``
  which always names the key path, ``DataError`` for data and prompt files.

Each section's dataclass lives next to the code that uses it; the algorithm composes them.
"""

from nemo_distill.config.errors import ConfigError
from nemo_distill.config.loader import load_config, merge_configs
from nemo_distill.config.overrides import apply_overrides
from nemo_distill.config.schema import build_dataclass, to_dictconfig, validate, with_schema_defaults

__all__ = ["ConfigError", "apply_overrides", "build_dataclass", "load_config", "merge_configs", "to_dictconfig", "validate", "with_schema_defaults"]
