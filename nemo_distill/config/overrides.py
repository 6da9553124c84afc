"""Hydra-grammar command-line overrides applied to a loaded config.

| form        | meaning                                   |
|-------------|-------------------------------------------|
| ``a.b=v``   | set an existing key (error if missing)    |
| ``+a.b=v``  | add a new key (error if it exists)        |
| ``++a.b=v`` | add or set                                |
| ``~a.b``    | delete (``~a.b=v`` only if it equals v)   |

Values use Hydra's grammar: ``[1,2]`` lists, ``{a: 1}`` dicts, ``null``, quoted strings.
"""

from __future__ import annotations

from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from nemo_distill.config.errors import ConfigError, did_you_mean

_MISSING = object()


def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def _lookup(container: dict, parts: list[str]) -> Any:
    node: Any = container
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _missing_key_error(container: dict, parts: list[str], hint: str) -> ConfigError:
    node: Any = container
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            siblings = list(node) if isinstance(node, dict) else []
            suggestion = did_you_mean(part, siblings)
            return ConfigError(".".join(parts), f"does not exist{suggestion}; {hint}")
        node = node[part]
    return ConfigError(".".join(parts), hint)


def apply_overrides(cfg: DictConfig, overrides: Iterable[str]) -> DictConfig:
    """Return a new config with Hydra-style ``overrides`` applied in order."""
    overrides = list(overrides)
    container = OmegaConf.to_container(cfg, resolve=False)
    if not overrides:
        return OmegaConf.create(container)
    try:
        parsed = _parser().parse_overrides(overrides)
    except Exception as err:  # hydra's OverrideParseException carries the position of the error
        raise ConfigError("", f"cannot parse overrides {overrides}: {err}") from err
    for override in parsed:
        key = override.key_or_group
        parts = key.split(".")
        current = _lookup(container, parts)
        if override.is_delete():
            if current is _MISSING:
                raise _missing_key_error(container, parts, "cannot delete it (~)")
            expected = override.value()
            if expected is not None and expected != current:
                raise ConfigError(key, f"~{key}={expected!r} does not match the current value {current!r}")
            parent = _lookup(container, parts[:-1]) if len(parts) > 1 else container
            del parent[parts[-1]]
            continue
        value = override.value()
        if override.is_add() and current is not _MISSING:
            raise ConfigError(key, f"already exists (value {current!r}); use '{key}=...' to change it or '++{key}=...'")
        if not override.is_add() and not override.is_force_add() and current is _MISSING:
            raise _missing_key_error(container, parts, f"use '+{key}=...' to add a new key")
        node = container
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                if not (override.is_add() or override.is_force_add()):
                    raise _missing_key_error(container, parts, "parent is not a mapping")
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return OmegaConf.create(container)
