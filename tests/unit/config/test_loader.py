from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nemo_distill.config import ConfigError, load_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_three_level_defaults_chain_later_wins(tmp_path):
    write(tmp_path / "base.yaml", "a: 1\nb: {x: 1, y: 2}\nc: base\n")
    write(tmp_path / "mid/mid.yaml", "defaults: ../base.yaml\nb: {y: 20}\nc: mid\n")
    leaf = write(tmp_path / "leaf.yaml", "defaults: mid/mid.yaml\nb: {z: 30}\n")
    cfg = load_config(leaf)
    assert OmegaConf.to_container(cfg) == {"a": 1, "b": {"x": 1, "y": 20, "z": 30}, "c": "mid"}


def test_list_defaults_merge_in_order(tmp_path):
    write(tmp_path / "one.yaml", "a: 1\nb: 1\nd: {k: 1}\n")
    write(tmp_path / "two.yaml", "b: 2\nd: {j: 2}\n")
    leaf = write(tmp_path / "leaf.yaml", "defaults: [one.yaml, two.yaml]\nc: 3\n")
    assert OmegaConf.to_container(load_config(leaf)) == {"a": 1, "b": 2, "c": 3, "d": {"k": 1, "j": 2}}


def test_override_marker_replaces_section(tmp_path):
    write(tmp_path / "base.yaml", "opt: {name: adam, lr: 1, betas: [0.9, 0.99]}\nkeep: {x: 1}\n")
    leaf = write(tmp_path / "leaf.yaml", "defaults: base.yaml\nopt: {_override_: true, name: sgd}\nkeep: {y: 2}\n")
    cfg = OmegaConf.to_container(load_config(leaf))
    assert cfg["opt"] == {"name": "sgd"}
    assert cfg["keep"] == {"x": 1, "y": 2}


def test_resolvers_do_math(tmp_path):
    leaf = write(
        tmp_path / "c.yaml",
        "n: 4\nk: 3\nsum: ${add:${n},${k},1}\nprod: ${mul:${n},${k}}\nratio: ${div:${n},8}\nbig: ${max:${n},${k},7}\n",
    )
    cfg = load_config(leaf)
    assert (cfg.sum, cfg.prod, cfg.ratio, cfg.big) == (8, 12, 0.5, 7)


def test_circular_defaults_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "defaults: b.yaml\n")
    write(tmp_path / "b.yaml", "defaults: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_bad_defaults_type(tmp_path):
    leaf = write(tmp_path / "c.yaml", "defaults: {a: 1}\n")
    with pytest.raises(ConfigError, match="defaults"):
        load_config(leaf)


@pytest.mark.parametrize(
    "text, key, lines",
    [
        ("policy:\n  a: 1\nloss_fn:\n  k: 2\npolicy:\n  b: 3\n", "policy", (5, 1)),  # a whole top-level block
        ("policy:\n  optimizer:\n    lr: 1\n    lr: 2\n", "policy.optimizer.lr", (4, 3)),
        ("items:\n  - a: 1\n    a: 2\n", "items[0].a", (3, 2)),
    ],
)
def test_duplicated_key_names_file_key_and_lines(tmp_path, text, key, lines):
    path = write(tmp_path / "dup.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key_path == key
    assert f"{path}: line {lines[0]}: written twice in one mapping (first at line {lines[1]})" in str(info.value)


def test_duplicated_key_in_a_defaults_parent_names_the_parent(tmp_path):
    write(tmp_path / "base.yaml", "a: 1\na: 2\n")
    child = write(tmp_path / "child.yaml", "defaults: base.yaml\nb: 1\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: line 2"):
        load_config(child)


def test_latex_like_dollar_braces_stay_text_and_references_still_resolve(tmp_path):
    path = write(
        tmp_path / "c.yaml",
        'template: "Solve ${problem}$ in ${x y}"\nsize: 4\nsection:\n  double: ${mul:${section.size},2}\n  size: 3\n'
        'copy: ${section.size}\nescaped: "\\\\${section.size}"\n',
    )
    resolved = OmegaConf.to_container(load_config(path), resolve=True)
    assert resolved["template"] == "Solve ${problem}$ in ${x y}"
    assert resolved["section"]["double"] == 6 and resolved["copy"] == 3
    assert resolved["escaped"] == "${section.size}"
