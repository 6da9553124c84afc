"""Property: whatever override a user types, a config that is invalid fails with a ConfigError naming a key path.

Every leaf of the distillation schema (and some keys that do not exist, at the wrong depth or
misspelt) is set to values of every kind (negative, zero, huge, NaN, inf, bools, text, lists,
null, unparseable text). The whole pre-Ray pipeline runs: load -> defaults -> overrides -> typed
validation -> the cross-section check. It may accept the config, or raise ``ConfigError`` whose
``key_path`` is non-empty and appears in the message; any other exception type is a bug.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nemo_distill.algorithms.distillation_config import DistillationMasterConfig, check_distillation_config
from nemo_distill.config import ConfigError
from nemo_distill.config.cli import parse_command_line

REPO = Path(__file__).resolve().parents[3]
BASE_CONFIG = str(REPO / "configs" / "distillation_math.yaml")


def _leaf_paths(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [path for key, value in node.items() for path in _leaf_paths(value, f"{prefix}.{key}" if prefix else key)]
    return [prefix]


LEAVES = sorted(_leaf_paths(dataclasses.asdict(DistillationMasterConfig())))
WRONG_KEYS = ["policy.activation_checkpointing", "distillation.topk_logit_k", "nope", "policy.optimizer.lrr", "cluster.gpus"]
SAFE_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-./ {}$", max_size=12)


def _format(value: object) -> str:
    """``value`` in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else "-inf" if value == -math.inf else repr(value))
    if isinstance(value, str):
        return "'" + value + "'"
    if isinstance(value, list):
        return "[" + ",".join(_format(item) for item in value) + "]"
    return str(value)


VALUES = st.one_of(
    st.integers(-(10**12), 10**12).map(_format),
    st.sampled_from([-1, 0, 1, 2, 7]).map(_format),
    st.floats(allow_nan=True, allow_infinity=True).map(_format),
    st.booleans().map(_format),
    st.none().map(_format),
    SAFE_TEXT.map(_format),
    st.lists(st.integers(-3, 3), max_size=3).map(_format),
    st.sampled_from(["[1,", "'unclosed", "${mull:1,2}", "${nope.key}", "a b", "{x: 1}", "=", ""]),
)
OVERRIDES = st.tuples(st.sampled_from(["", "+", "++", "~"]), st.sampled_from(LEAVES + WRONG_KEYS), VALUES).map(
    lambda parts: f"{parts[0]}{parts[1]}" if parts[0] == "~" else f"{parts[0]}{parts[1]}={parts[2]}"
)


def _run(overrides: list[str]) -> None:
    parse_command_line(overrides, DistillationMasterConfig, default_config=BASE_CONFIG, description="property test",
                       check=check_distillation_config)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OVERRIDES, min_size=1, max_size=3))
@example(["distillation.num_prompts_per_step=-4"])
@example(["policy.activation_checkpointing=true"])
@example(["policy.optimizer.lr=inf"])
@example(["distillation.topk_logits_k=0"])
@example(["distillation.context_distillation.teacher_prefix_template='${problem}$ {problem} {trace}'"])
def test_every_invalid_override_is_a_config_error_naming_a_key(overrides):
    try:
        _run(overrides)
    except ConfigError as err:
        assert err.key_path, f"{overrides}: ConfigError without a key path: {err}"
        assert err.key_path in str(err)
    # any other exception type propagates and fails the property
