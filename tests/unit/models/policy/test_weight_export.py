"""Refit's export dtype: a policy told the engine's dtype (``set_refit_dtype``) plans, packs and exports
its floating weights in it, and a bf16 CPU generation worker loads them bit for bit."""

from __future__ import annotations

import torch

from nemo_distill.models.generation.refit import MIB
from policy_spawn import run_ranks


def export_in_bf16(rank: int, model_dir: str) -> dict:
    from nemo_distill.models.generation import hf_backend
    from nemo_distill.models.generation.config import GenerationConfig
    from nemo_distill.models.generation.weight_transfer import unpack_bucket
    from nemo_distill.models.policy.config import DTensorConfig, PolicyConfig
    from nemo_distill.models.policy.worker import PolicyWorker

    hf_backend.cpu_has_native_bf16 = lambda: True  # this process only: whatever the CPU, the engine is bf16
    engine = hf_backend.HFGenerationWorker(model_dir, GenerationConfig(cpu_bfloat16=True), precision="float32")
    policy = PolicyWorker(PolicyConfig(model_name=model_dir, precision="float32", dtensor_cfg=DTensorConfig(enabled=False)))
    result = {"engine_dtype": engine.weights_dtype(),
              "default_dtypes": {spec.dtype for layout in policy.weight_bucket_layouts(MIB) for spec in layout.tensors}}
    policy.set_refit_dtype(engine.weights_dtype())
    layouts = policy.weight_bucket_layouts(MIB)
    result["dtypes"] = {spec.dtype for layout in layouts for spec in layout.tensors}
    result["exported"] = policy.state_dict_for_export()
    result["fp32"] = {name: tensor.detach().clone() for name, tensor in policy.model.state_dict().items()}
    for layout in layouts:  # the broadcast transport's packing, then the engine's load
        engine.update_weights([unpack_bucket(layout, policy._pack_on_device(layout, is_writer=True))], strict=False)
    result["engine"] = {name: param.detach().clone() for name, param in engine.model.named_parameters()}
    policy.shutdown()
    return result


def test_policy_exports_in_the_refit_dtype_and_a_bf16_engine_loads_it(tiny_model_dir):
    result = run_ranks(export_in_bf16, 1, tiny_model_dir)[0]
    assert result["engine_dtype"] == torch.bfloat16
    assert result["default_dtypes"] == {torch.float32}  # before: the policy's compute dtype
    assert result["dtypes"] == {torch.bfloat16}
    exported = result["exported"]
    assert {tensor.dtype for tensor in exported.values()} == {torch.bfloat16}
    for name, tensor in exported.items():
        assert torch.equal(tensor, result["fp32"][name].to(torch.bfloat16)), name
    assert result["engine"].keys() <= exported.keys() and len(result["engine"]) > 0
    for name, param in result["engine"].items():
        assert torch.equal(param, exported[name]), name
