"""YAML loading with ``defaults:`` inheritance, ``_override_`` sections and math resolvers.

``defaults:`` holds a path or a list of paths, relative to the file that names them. They are
loaded recursively and merged in order (later wins), then the file itself is merged on top.
A mapping that carries ``_override_: true`` replaces the inherited mapping at that place
instead of merging into it (the marker itself is dropped).

A key written twice in one mapping is an error naming the file, the key and both lines (plain
YAML keeps the last one and silently drops the first block). ``${...}`` follows the rule of
:mod:`nemo_distill.config.interpolation`: only resolver calls and dotted key references are
interpolated; other ``${...}`` text is kept as written.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from nemo_distill.config.errors import ConfigError
from nemo_distill.config.interpolation import protect_text

OVERRIDE_MARKER = "_override_"
DEFAULTS_KEY = "defaults"


def _register_resolvers() -> None:
    resolvers = {
        "add": lambda *values: sum(values),
        "mul": lambda *values: _product(values),
        "div": lambda numerator, denominator: numerator / denominator,
        "max": lambda *values: max(values),
    }
    for name, function in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


def _product(values: tuple) -> Any:
    result = 1
    for value in values:
        result *= value
    return result


_register_resolvers()


def merge_configs(base: dict, update: dict, key_path: str = "") -> dict:
    """Deep-merge plain ``update`` into a copy of ``base``, honouring ``_override_: true``."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{key_path}.{key}" if key_path else str(key)
        if isinstance(value, dict):
            replace = bool(value.get(OVERRIDE_MARKER, False))
            cleaned = _strip_override_markers(value)
            if replace or not isinstance(merged.get(key), dict):
                merged[key] = cleaned
            else:
                merged[key] = merge_configs(merged[key], value, path)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _strip_override_markers(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_override_markers(v) for k, v in node.items() if k != OVERRIDE_MARKER}
    if isinstance(node, list):
        return [_strip_override_markers(v) for v in node]
    return node


def _check_duplicate_keys(node: yaml.Node | None, source: str, key_path: str = "") -> None:
    """Raise naming ``source``, the key path and both lines when a mapping repeats a key."""
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            path = f"{key_path}.{key}" if key_path else str(key)
            if key is not None and key != "<<":
                line = key_node.start_mark.line + 1
                if key in first_line:
                    raise ConfigError(
                        path,
                        f"{source}: line {line}: written twice in one mapping (first at line {first_line[key]}); "
                        "YAML would silently drop the first block, so merge the two",
                    )
                first_line[key] = line
            _check_duplicate_keys(value_node, source, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(item, source, f"{key_path}[{index}]")


def _parse_yaml(text: str, source: str) -> Any:
    _check_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), source)
    return yaml.safe_load(text)


def _load_yaml_tree(path: Path, seen: tuple[Path, ...]) -> dict:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(DEFAULTS_KEY, f"circular defaults chain: {chain}")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = _parse_yaml(path.read_text(), str(path)) or {}
    except yaml.YAMLError as err:
        raise ConfigError("", f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError("", f"{path} must contain a mapping at top level, got {type(data).__name__}")
    defaults = data.pop(DEFAULTS_KEY, None)
    if defaults is None:
        parents: list[str] = []
    elif isinstance(defaults, str):
        parents = [defaults]
    elif isinstance(defaults, list) and all(isinstance(item, str) for item in defaults):
        parents = list(defaults)
    else:
        raise ConfigError(DEFAULTS_KEY, f"in {path}: must be a path or a list of paths, got {defaults!r}")
    merged: dict = {}
    for parent in parents:
        parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
        merged = merge_configs(merged, _load_yaml_tree(parent_path, (*seen, path)))
    return merge_configs(merged, data)


def load_config(path: str | Path) -> DictConfig:
    """Load ``path`` following its ``defaults:`` chain; interpolations stay lazy until resolved."""
    return OmegaConf.create(protect_text(_load_yaml_tree(Path(path), ())))
