import pytest
from omegaconf import OmegaConf

from nemo_distill.config import ConfigError, apply_overrides


@pytest.fixture
def cfg():
    return OmegaConf.create({"a": {"b": 1, "c": 2}, "name": "x", "items": [1]})


def test_set_existing_key(cfg):
    assert apply_overrides(cfg, ["a.b=5"]).a.b == 5


def test_set_missing_key_suggests(cfg):
    with pytest.raises(ConfigError, match=r"a\.bb.*did you mean 'b'"):
        apply_overrides(cfg, ["a.bb=5"])


def test_add_new_key_and_nested(cfg):
    out = apply_overrides(cfg, ["+a.d=3", "+new.deep=4"])
    assert out.a.d == 3 and out.new.deep == 4


def test_add_existing_key_is_error(cfg):
    with pytest.raises(ConfigError, match="already exists"):
        apply_overrides(cfg, ["+a.b=3"])


def test_force_add_sets_or_adds(cfg):
    out = apply_overrides(cfg, ["++a.b=9", "++z=1"])
    assert out.a.b == 9 and out.z == 1


def test_delete(cfg):
    out = apply_overrides(cfg, ["~a.c"])
    assert "c" not in out.a
    with pytest.raises(ConfigError, match="cannot delete"):
        apply_overrides(cfg, ["~a.zz"])


def test_delete_with_value_must_match(cfg):
    assert "c" not in apply_overrides(cfg, ["~a.c=2"]).a
    with pytest.raises(ConfigError, match="does not match"):
        apply_overrides(cfg, ["~a.c=3"])


def test_values_lists_null_quoted(cfg):
    out = apply_overrides(cfg, ["items=[1,2,'three']", "name=null", "a.b='hello world'", "a.c=1e-5"])
    assert list(out["items"]) == [1, 2, "three"]
    assert out.name is None
    assert out.a.b == "hello world"
    assert out.a.c == pytest.approx(1e-5)


def test_original_untouched(cfg):
    apply_overrides(cfg, ["a.b=5"])
    assert cfg.a.b == 1


def test_unparseable_override(cfg):
    with pytest.raises(ConfigError, match="cannot parse"):
        apply_overrides(cfg, ["a.b=[1,2"])


def test_leaf_at_the_wrong_depth_names_the_full_path():
    cfg = OmegaConf.create({"policy": {"dtensor_cfg": {"activation_checkpointing": False}, "optimizer": {"lr": 1.0}},
                            "teacher": {"dtensor_cfg": {"activation_checkpointing": False}}})
    with pytest.raises(ConfigError) as info:
        apply_overrides(cfg, ["policy.activation_checkpointing=true"])
    assert info.value.key_path == "policy.activation_checkpointing"
    # the path under the section the user wrote comes first
    assert "did you mean 'policy.dtensor_cfg.activation_checkpointing' or 'teacher.dtensor_cfg.activation_checkpointing'" in str(info.value)
    with pytest.raises(ConfigError, match=r"did you mean 'policy\.optimizer\.lr'"):
        apply_overrides(cfg, ["lr=3"])


def test_override_value_with_dollar_braces_is_text_unless_a_reference(cfg):
    out = apply_overrides(cfg, ["name='${problem}$'", "+copy=${a.b}"])
    assert OmegaConf.to_container(out, resolve=True)["name"] == "${problem}$"
    assert out["copy"] == 1
    with pytest.raises(ConfigError, match=r"name.*unknown resolver 'mull'"):
        apply_overrides(cfg, ["name=${mull:1,2}"])
