"""Which ``${...}`` in a config string is an interpolation and which is plain text.

OmegaConf alone treats every ``${...}`` as an interpolation, so a LaTeX-like template
``"Solve ${problem}$"`` fails to resolve and ``${policy.model_name}`` inside a prompt template is
silently replaced. The rule here is:

1. A string field whose name ends in ``_template`` (or that is declared with
   ``field(metadata={"interpolate": False})``) is text: nothing in it is ever interpolated.
2. Elsewhere, ``${...}`` is an interpolation only when it is

   * a resolver call ``${name:args}`` of a registered resolver (``add``, ``mul``, ``div``,
     ``max``, ``oc.env``, ...): ``${mul:${distillation.num_prompts_per_step},2}``;
   * a dotted key reference ``${section.key}`` (at least one dot) or a relative one ``${.key}``:
     ``${policy.max_total_sequence_length}``. A reference to a missing key is an error.

   Anything else (``${problem}``, ``${x y}``, an unclosed ``${``) stays text as written.
3. Escape: ``\\${...}`` is always text (OmegaConf's own escape), e.g. ``\\${policy.model_name}``
   to write that literally outside a template field. A resolver-like ``${name:...}`` with an
   unknown resolver is an error (most likely a typo), so write ``\\${name:...}`` for such text.

:func:`protect_text` applies rule 2 to plain containers before OmegaConf sees them (the config
loader and the override parser call it); :func:`protect_template_fields` applies rule 1 with the
schema at hand (:func:`nemo_distill.config.schema.validate` calls it). The resolved config that
``--print-config`` prints and checkpoints save as ``config.yaml`` holds final values, so any
``${`` left in them is written escaped (``\\${``) and reads back as the same text.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Union

from omegaconf import OmegaConf

from nemo_distill.config.errors import ConfigError

_RESOLVER_CALL = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*:")
_ABSOLUTE_REF = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)+$")  # section.key (at least one dot)
_RELATIVE_REF = re.compile(r"^\.+[\w-]+(\.[\w-]+)*$")  # .key, ..sibling.key


def _spans(text: str) -> list[tuple[int, int, bool]]:
    """``(start, end, escaped)`` of every top-level ``${...}`` in ``text`` (``end`` exclusive).

    A ``${`` with no matching ``}`` gives ``end = -1``.
    """
    spans, index = [], 0
    while (start := text.find("${", index)) != -1:
        escaped = start > 0 and text[start - 1] == "\\"
        depth, end = 0, -1
        for position in range(start + 1, len(text)):
            if text[position] == "{":
                depth += 1
            elif text[position] == "}":
                depth -= 1
                if depth == 0:
                    end = position + 1
                    break
        spans.append((start, end, escaped))
        if end == -1:
            break
        index = end
    return spans


def is_interpolation(expression: str, key_path: str = "") -> bool:
    """Whether ``${expression}`` is an interpolation under rule 2 (see module docstring)."""
    call = _RESOLVER_CALL.match(expression)
    if call:
        if OmegaConf.has_resolver(call.group(1)):
            return True
        if _ABSOLUTE_REF.match(call.group(1)) or " " in expression:
            return False  # e.g. "${a.b: c}" is not a call of a resolver we could have
        raise ConfigError(
            key_path,
            f"'${{{expression}}}' calls an unknown resolver '{call.group(1)}' (known: add, mul, div, max, oc.env, ...); "
            f"write '\\${{{expression}}}' if it is meant as text",
        )
    return bool(_ABSOLUTE_REF.match(expression) or _RELATIVE_REF.match(expression))


def _escape(text: str, keep: typing.Callable[[str], bool]) -> str:
    """``text`` with ``\\`` put before every unescaped ``${...}`` for which ``keep(inner)`` is false."""
    pieces, last = [], 0
    for start, end, escaped in _spans(text):
        if escaped:
            continue
        inner = text[start + 2 : end - 1] if end != -1 else None
        if inner is not None and keep(inner):
            continue
        pieces.append(text[last:start] + "\\")
        last = start
    return "".join(pieces) + text[last:]


def protect_text(node: Any, key_path: str = "") -> Any:
    """A copy of plain ``node`` (dicts, lists, scalars) with every non-interpolation ``${`` escaped."""
    if isinstance(node, dict):
        return {key: protect_text(value, f"{key_path}.{key}" if key_path else str(key)) for key, value in node.items()}
    if isinstance(node, list):
        return [protect_text(value, f"{key_path}[{index}]") for index, value in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        return _escape(node, lambda inner: is_interpolation(inner, key_path))
    return node


def escape_all(text: str) -> str:
    """``text`` with every unescaped ``${`` escaped: the string is literal text to OmegaConf."""
    return _escape(text, lambda inner: False) if "${" in text else text


def escape_all_strings(node: Any) -> Any:
    """:func:`escape_all` on every string of a plain container (final values, e.g. for printing)."""
    if isinstance(node, dict):
        return {key: escape_all_strings(value) for key, value in node.items()}
    if isinstance(node, list):
        return [escape_all_strings(value) for value in node]
    return escape_all(node) if isinstance(node, str) else node


def _dataclass_of(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        for option in typing.get_args(tp):
            if dataclasses.is_dataclass(option):
                return option
    return None


def is_text_field(field: dataclasses.Field) -> bool:
    """Rule 1: ``*_template`` fields and fields declared with ``metadata={"interpolate": False}``."""
    return field.name.endswith("_template") or field.metadata.get("interpolate", True) is False


def protect_template_fields(container: dict, schema: type) -> dict:
    """A copy of ``container`` whose text fields (rule 1) are fully escaped, found by walking ``schema``."""
    hints = typing.get_type_hints(schema)
    result = dict(container)
    for field in dataclasses.fields(schema):
        if field.name not in result:
            continue
        value = result[field.name]
        if isinstance(value, str) and is_text_field(field):
            result[field.name] = escape_all(value)
        elif isinstance(value, dict) and (section := _dataclass_of(hints[field.name])) is not None:
            result[field.name] = protect_template_fields(value, section)
    return result
