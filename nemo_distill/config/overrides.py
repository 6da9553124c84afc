"""Hydra-grammar command-line overrides applied to a loaded config.

| form        | meaning                                   |
|-------------|-------------------------------------------|
| ``a.b=v``   | set an existing key (error if missing)    |
| ``+a.b=v``  | add a new key (error if it exists)        |
| ``++a.b=v`` | add or set                                |
| ``~a.b``    | delete (``~a.b=v`` only if it equals v)   |

Values use Hydra's grammar: ``[1,2]`` lists, ``{a: 1}`` dicts, ``null``, quoted strings;
``${...}`` in a value follows :mod:`nemo_distill.config.interpolation`. A key that does not exist
where it was written but does elsewhere (``policy.activation_checkpointing``) gets a "did you mean
``policy.dtensor_cfg.activation_checkpointing``" naming the full path.
"""

from __future__ import annotations

from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from nemo_distill.config.errors import ConfigError, did_you_mean
from nemo_distill.config.interpolation import protect_text

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


def key_paths_named(container: Any, name: str, prefix: str = "") -> list[str]:
    """Dotted paths of every key called ``name`` anywhere inside nested mappings of ``container``."""
    found = []
    if isinstance(container, dict):
        for key, value in container.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == name:
                found.append(path)
            found += key_paths_named(value, name, path)
    return found


def wrong_depth_hint(container: Any, parts: list[str]) -> str:
    """`` (did you mean 'policy.dtensor_cfg.x'?)`` when the missing key's last name exists elsewhere.

    Paths that share the longest prefix with what was written come first (at most three).
    """
    written = ".".join(parts)
    candidates = [path for path in key_paths_named(container, parts[-1]) if path != written]
    if not candidates:
        return ""

    def shared_prefix(path: str) -> int:
        count = 0
        for mine, theirs in zip(parts, path.split(".")):
            if mine != theirs:
                break
            count += 1
        return count

    candidates.sort(key=lambda path: (-shared_prefix(path), len(path), path))
    return f" (did you mean {' or '.join(repr(path) for path in candidates[:3])}?)"


def _missing_key_error(container: dict, parts: list[str], hint: str) -> ConfigError:
    node: Any = container
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            siblings = list(node) if isinstance(node, dict) else []
            suggestion = wrong_depth_hint(container, parts) or did_you_mean(part, siblings)
            return ConfigError(".".join(parts), f"does not exist{suggestion}; {hint}")
        node = node[part]
    return ConfigError(".".join(parts), hint)


def _parse_error(overrides: list[str], err: Exception) -> ConfigError:
    """A parse failure naming the key of the first override that does not parse (and why)."""
    parser = _parser()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except Exception as one_err:
            key = override.split("=", 1)[0].lstrip("+~").strip()
            detail = str(one_err).splitlines()[0] if str(one_err) else type(one_err).__name__
            return ConfigError(key, f"cannot parse the override {override!r}: {detail} (values use Hydra's grammar: "
                               "quote strings with special characters, e.g. key='a b')")
    return ConfigError("", f"cannot parse overrides {overrides}: {err}")


def apply_overrides(cfg: DictConfig, overrides: Iterable[str]) -> DictConfig:
    """Return a new config with Hydra-style ``overrides`` applied in order."""
    overrides = list(overrides)
    container = OmegaConf.to_container(cfg, resolve=False)
    if not overrides:
        return OmegaConf.create(container)
    try:
        parsed = _parser().parse_overrides(overrides)
    except Exception as err:  # hydra's OverrideParseException carries the position of the error
        raise _parse_error(overrides, err) from None
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
        value = protect_text(override.value(), key)
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
