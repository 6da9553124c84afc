"""build_adamw: every AdamW kernel gives the same update and the same (interchangeable) state dict."""

from __future__ import annotations

import pytest
import torch

from nemo_distill.config.errors import ConfigError
from nemo_distill.config.schema import build_dataclass
from nemo_distill.models.policy.config import OptimizerConfig, PolicyConfig
from nemo_distill.models.policy.optimizer import build_adamw, resolve_implementation


def _train(implementation: str, steps: int = 3) -> tuple[list[torch.Tensor], dict]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    optimizer = build_adamw(params, OptimizerConfig(lr=1e-2, weight_decay=0.1, implementation=implementation))
    for step in range(steps):
        optimizer.zero_grad()
        loss = (params[0] ** 2).sum() * (step + 1) + params[1].sin().sum()
        loss.backward()
        optimizer.step()
    assert bool(optimizer.defaults["fused"]) == (implementation == "fused")
    assert bool(optimizer.defaults["foreach"]) == (implementation in ("foreach", "auto"))  # auto on CPU: foreach
    return [param.detach().clone() for param in params], optimizer.state_dict()


def test_auto_is_fused_only_when_every_parameter_is_on_a_gpu():
    cpu = [torch.nn.Parameter(torch.zeros(2))]
    assert resolve_implementation("auto", cpu) == "foreach"
    assert resolve_implementation("auto", []) == "foreach"
    assert resolve_implementation("for_loop", cpu) == "for_loop"


@pytest.mark.parametrize("implementation", ["fused", "for_loop", "auto"])
def test_every_kernel_matches_foreach(implementation):
    reference, reference_state = _train("foreach")
    params, state = _train(implementation)
    for got, want in zip(params, reference):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert reference[0].abs().sum() > 0  # the parameters did move
    assert state["state"].keys() == reference_state["state"].keys()
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(state["state"][0][key], reference_state["state"][0][key], rtol=1e-6, atol=1e-8)


def test_state_dict_of_one_kernel_loads_into_another():
    _, fused_state = _train("fused")
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    optimizer = build_adamw(params, OptimizerConfig(implementation="foreach"))
    optimizer.load_state_dict(fused_state)
    assert optimizer.state_dict()["state"][1]["step"] == fused_state["state"][1]["step"]
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults["fused"]


def test_unknown_implementation_names_the_key():
    with pytest.raises(ConfigError, match="optimizer.implementation"):
        build_dataclass(PolicyConfig, {"optimizer": {"implementation": "fast"}}, "policy")
