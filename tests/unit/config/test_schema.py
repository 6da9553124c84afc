from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from omegaconf import OmegaConf

from nemo_distill.config import ConfigError, to_dictconfig, validate


@dataclass
class Inner:
    k: int = 64
    kind: Literal["forward", "reverse"] = "forward"
    lr: float = field(default=1e-3, metadata={"gt": 0})
    names: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    maybe: int | None = None

    def __post_init__(self):
        if self.k > 1000:
            raise ValueError("k must be at most 1000")


@dataclass
class Root:
    inner: Inner = field(default_factory=Inner)
    flag: bool = False


def test_defaults_fill_in():
    out = validate(OmegaConf.create({"inner": {"k": 3}}), Root)
    assert out.inner.k == 3 and out.inner.kind == "forward" and out.flag is False


def test_unknown_key_suggests():
    with pytest.raises(ConfigError, match=r"inner\.kk.*did you mean 'k'"):
        validate({"inner": {"kk": 3}}, Root)


def test_type_error_names_key_value_type():
    with pytest.raises(ConfigError) as info:
        validate({"inner": {"k": "abc"}}, Root)
    assert "inner.k" in str(info.value) and "'abc'" in str(info.value) and "int" in str(info.value)
    assert info.value.key_path == "inner.k"


def test_literal_lists_allowed():
    with pytest.raises(ConfigError, match=r"inner\.kind.*\['forward', 'reverse'\]"):
        validate({"inner": {"kind": "sideways"}}, Root)


def test_bounds_and_post_init():
    with pytest.raises(ConfigError, match=r"inner\.lr.*> 0"):
        validate({"inner": {"lr": 0.0}}, Root)
    with pytest.raises(ConfigError, match="at most 1000"):
        validate({"inner": {"k": 5000}}, Root)


def test_int_promotes_to_float_but_bool_is_not_int():
    assert validate({"inner": {"lr": 1}}, Root).inner.lr == 1.0
    with pytest.raises(ConfigError, match="inner.k"):
        validate({"inner": {"k": True}}, Root)


def test_optional_and_list_items():
    assert validate({"inner": {"maybe": None}}, Root).inner.maybe is None
    with pytest.raises(ConfigError, match=r"inner\.names\[1\]"):
        validate({"inner": {"names": ["a", 2]}}, Root)


def test_roundtrip_to_dictconfig():
    out = validate({"inner": {"k": 7}}, Root)
    assert to_dictconfig(out).inner.k == 7
