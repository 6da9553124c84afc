"""Typed validation of a resolved config against nested dataclasses.

Every config section is a ``@dataclass`` living next to the code that uses it; its field
defaults are the only defaults (YAML files set only what differs). :func:`validate` walks the
resolved config and the dataclass together and builds the typed object, failing with a
:class:`ConfigError` that names the key path when:

* a key is unknown (with a "did you mean" suggestion),
* a value has the wrong type (naming key, value and expected type),
* a ``Literal`` value is not one of the allowed ones,
* a number breaks a bound declared as ``field(metadata={"ge": 0})`` (``ge``/``gt``/``le``/``lt``),
  or is NaN/inf in a field declared ``metadata={"finite": True}``,
* a section's ``__post_init__`` raises ``ValueError`` (its message is kept).

A value derived by interpolation (``policy.train_global_batch_size: ${mul:${distillation.num_prompts_per_step},2}``)
that fails a check is reported under the key the user set when that key fails its own check
(``distillation.num_prompts_per_step: value -4 must be >= 1``), else under the derived key with
the keys it came from. ``*_template`` fields are never interpolated (see :mod:`.interpolation`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal, TypeVar, Union

from omegaconf import DictConfig, OmegaConf

from nemo_distill.config.errors import ConfigError, did_you_mean
from nemo_distill.config.interpolation import escape_all_strings, protect_template_fields

T = TypeVar("T")
_BOUNDS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it converted (dataclasses built)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, path)
            except ConfigError as err:
                errors.append(err)
        # a single non-None option: its own error is the most helpful one
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(path, f"value {value!r} ({type(value).__name__}) is not any of {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(path, f"value {value!r} is not allowed; choose one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping for section {tp.__name__}, got {value!r}")
        return build_dataclass(tp, value, path)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"value {value!r} ({type(value).__name__}) is not a list")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        return [_convert(item, item_tp, _join(path, i)) for i, item in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"value {value!r} ({type(value).__name__}) is not a mapping")
        args = typing.get_args(tp)
        value_tp = args[1] if len(args) == 2 else Any
        return {k: _convert(v, value_tp, _join(path, str(k))) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"value {value!r} ({type(value).__name__}) is not a float")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"value {value!r} ({type(value).__name__}) is not an int")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"value {value!r} ({type(value).__name__}) is not a bool (use true/false)")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"value {value!r} ({type(value).__name__}) is not a string")
        return value
    raise ConfigError(path, f"unsupported schema type {_type_name(tp)}")


def build_dataclass(cls: type[T], values: dict, path: str = "") -> T:
    """Build ``cls`` from a plain mapping, recursively, with key-path errors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in values:
        if key not in fields:
            raise ConfigError(_join(path, str(key)), f"unknown key{did_you_mean(str(key), list(fields))}; "
                              f"section '{path or '<root>'}' accepts {sorted(fields)}")
    kwargs = {}
    for name, field in fields.items():
        if name not in values:
            continue
        key_path = _join(path, name)
        kwargs[name] = _check_field(field, hints[name], values[name], key_path)
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ConfigError(path or "<root>", str(err)) from err


def _check_field(field: dataclasses.Field, hint: Any, value: Any, key_path: str) -> Any:
    """``value`` converted to the field's type, with its declared bounds checked."""
    converted = _convert(value, hint, key_path)
    if field.metadata.get("finite") and isinstance(converted, float) and not math.isfinite(converted):
        raise ConfigError(key_path, f"value {converted!r} must be a finite number")
    for bound, (check, symbol) in _BOUNDS.items():
        if bound in field.metadata and converted is not None and not check(converted, field.metadata[bound]):
            raise ConfigError(key_path, f"value {converted!r} must be {symbol} {field.metadata[bound]}")
    return converted


def _schema_field(schema: type, key_path: str) -> tuple[dataclasses.Field, Any] | None:
    """The dataclass field (and its type hint) at dotted ``key_path`` of ``schema``, if there is one."""
    node: Any = schema
    found = None
    for part in key_path.split("."):
        node = _section_type(node)
        if node is None:
            return None
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            return None
        found = (fields[part], typing.get_type_hints(node)[part])
        node = found[1]
    return found


def _section_type(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        return next((option for option in typing.get_args(tp) if dataclasses.is_dataclass(option)), None)
    return None


def _lookup(container: Any, key_path: str) -> Any:
    node = container
    for part in key_path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


_REFERENCE = re.compile(r"(?<!\\)\$\{([A-Za-z_][\w-]*(?:\.[\w-]+)+)\}")


def _blame_source_keys(err: ConfigError, schema: type, raw: dict, resolved: dict) -> ConfigError:
    """Re-aim an error at a derived (interpolated) key to the key the user set (see module docstring)."""
    expression = _lookup(raw, err.key_path)
    if not isinstance(expression, str):
        return err
    sources = list(dict.fromkeys(_REFERENCE.findall(expression)))
    if not sources:
        return err
    for source in sources:
        found = _schema_field(schema, source)
        if found is not None:
            try:
                _check_field(found[0], found[1], _lookup(resolved, source), source)
            except ConfigError as source_err:
                return ConfigError(source, f"{source_err.message} (it also sets {err.key_path} = {expression})")
    return ConfigError(err.key_path, f"{err.message}; it is derived as {expression} from {', '.join(sources)}: change those")


def _unknown_key_hint(err: ConfigError, schema: type) -> ConfigError:
    """Add "did you mean 'policy.dtensor_cfg.x'" to an unknown-key error when that leaf exists elsewhere."""
    from nemo_distill.config.overrides import wrong_depth_hint

    if not err.message.startswith("unknown key") or "did you mean" in err.message:
        return err
    try:
        defaults = dataclasses.asdict(schema())
    except Exception:  # a schema without complete defaults: no hint
        return err
    hint = wrong_depth_hint(defaults, err.key_path.split("."))
    return ConfigError(err.key_path, f"unknown key{hint}{err.message.removeprefix('unknown key')}") if hint else err


def validate(cfg: DictConfig | dict, schema: type[T]) -> T:
    """Resolve interpolations and build the typed ``schema`` object (see module docstring)."""
    if isinstance(cfg, DictConfig):
        raw = protect_template_fields(OmegaConf.to_container(cfg, resolve=False), schema)
        try:
            container = OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
        except Exception as err:  # omegaconf's InterpolationResolutionError etc. name the key
            raise ConfigError(str(getattr(err, "full_key", "") or ""), f"cannot resolve interpolation: {err}") from err
    else:
        raw = container = cfg
    try:
        return build_dataclass(schema, container)
    except ConfigError as err:
        raise _unknown_key_hint(_blame_source_keys(err, schema, raw, container), schema) from err


def with_schema_defaults(cfg: DictConfig, schema: type) -> DictConfig:
    """``cfg`` on top of the schema's defaults, so overrides may name any key the schema has."""
    from nemo_distill.config.loader import merge_configs

    from nemo_distill.config.interpolation import protect_text

    defaults = protect_text(dataclasses.asdict(schema()))
    return OmegaConf.create(merge_configs(defaults, OmegaConf.to_container(cfg, resolve=False)))


def to_dictconfig(config_object: Any) -> DictConfig:
    """The fully-defaulted config as a DictConfig (for printing and saving ``config.yaml``)."""
    # every string is a final value: escaped so that no ``${...}`` in it is read as an interpolation
    return OmegaConf.create(escape_all_strings(dataclasses.asdict(config_object)))
