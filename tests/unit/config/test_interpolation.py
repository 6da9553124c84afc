"""The ``${...}`` rule: resolver calls and dotted references interpolate; everything else is text."""

import pytest
from omegaconf import OmegaConf

from nemo_distill.config import ConfigError
from nemo_distill.config.interpolation import escape_all, is_interpolation, protect_text


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("policy.model_name", True),
        ("a.b.c", True),
        (".sibling", True),
        ("..parent.key", True),
        ("mul:${a.b},2", True),
        ("oc.env:HOME", True),
        ("problem", False),  # no dot: text (LaTeX-like ${problem}$)
        ("x y", False),
        ("\\frac{1}{2}", False),
        ("", False),
        ("a.b: c", False),
    ],
)
def test_is_interpolation(expression, expected):
    assert is_interpolation(expression) is expected


def test_unknown_resolver_is_an_error_naming_the_key_and_the_escape():
    with pytest.raises(ConfigError) as info:
        protect_text({"a": {"b": ["ok", "${mull:1,2}"]}})
    assert info.value.key_path == "a.b[1]" and "unknown resolver 'mull'" in str(info.value) and "\\${mull:1,2}" in str(info.value)


@pytest.mark.parametrize(
    "text, resolved",
    [
        ("Solve ${problem}$", "Solve ${problem}$"),
        ("${x y} and ${p.v}", "${x y} and 3"),
        ("unclosed ${p.v", "unclosed ${p.v"),
        ("\\${p.v} stays", "${p.v} stays"),
        ("${add:${p.v},1}", 4),
        ("$5 and {braces}", "$5 and {braces}"),
    ],
)
def test_protected_strings_resolve_as_documented(text, resolved):
    cfg = OmegaConf.create(protect_text({"t": text, "p": {"v": 3}}))
    assert OmegaConf.to_container(cfg, resolve=True)["t"] == resolved


def test_escape_all_makes_any_string_literal():
    for text in ["${p.v}", "a ${x y} b", "\\${p.v}", "${add:1,2}"]:
        cfg = OmegaConf.create({"t": escape_all(text), "p": {"v": 3}})
        assert OmegaConf.to_container(cfg, resolve=True)["t"] == text.replace("\\${", "${")
