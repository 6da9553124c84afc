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


@dataclass
class Loop:
    num_prompts: int = field(default=4, metadata={"ge": 1})
    per_prompt: int = field(default=2, metadata={"ge": 1})


@dataclass
class Trainer:
    global_batch: int = field(default=8, metadata={"ge": 1})
    odd: int = field(default=1, metadata={"ge": 1})
    prefix_template: str = "{problem}"
    plain_text: str = field(default="", metadata={"interpolate": False})
    checkpointing: bool = False


@dataclass
class Derived:
    trainer: Trainer = field(default_factory=Trainer)  # checked before loop: the derived key fails first
    loop: Loop = field(default_factory=Loop)


def _derived(**loop) -> OmegaConf:
    return OmegaConf.create({"trainer": {"global_batch": "${mul:${loop.num_prompts},${loop.per_prompt}}"}, "loop": loop})


def test_a_bad_source_of_a_derived_key_is_reported_under_the_key_the_user_set():
    with pytest.raises(ConfigError) as info:
        validate(_derived(num_prompts=-4, per_prompt=2), Derived)
    assert info.value.key_path == "loop.num_prompts"
    assert "value -4 must be >= 1" in str(info.value) and "trainer.global_batch" in str(info.value)


def test_a_derived_key_whose_sources_are_fine_names_both():
    cfg = OmegaConf.create({"trainer": {"odd": "${add:${loop.num_prompts},-10}"}, "loop": {"num_prompts": 4}})
    with pytest.raises(ConfigError) as info:
        validate(cfg, Derived)
    assert info.value.key_path == "trainer.odd" and "derived as ${add:${loop.num_prompts},-10} from loop.num_prompts" in str(info.value)


def test_template_fields_are_never_interpolated():
    cfg = OmegaConf.create({"trainer": {"prefix_template": "${loop.num_prompts} ${problem}$", "plain_text": "${loop.per_prompt}"}})
    out = validate(cfg, Derived)
    assert out.trainer.prefix_template == "${loop.num_prompts} ${problem}$" and out.trainer.plain_text == "${loop.per_prompt}"
    # printing and reloading keeps them literal
    again = validate(to_dictconfig(out), Derived)
    assert again == out


def test_unknown_key_at_the_wrong_depth_names_the_full_path():
    with pytest.raises(ConfigError, match=r"unknown key \(did you mean 'trainer\.checkpointing'\?\)"):
        validate({"loop": {"checkpointing": True}}, Derived)


def test_missing_reference_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError) as info:
        validate(OmegaConf.create({"trainer": {"odd": "${loop.nope}"}}), Derived)
    assert info.value.key_path == "trainer.odd" and "loop.nope" in str(info.value)
