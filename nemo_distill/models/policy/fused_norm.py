"""``fused_rms_norm``: the decoder's RMSNorm modules as one ``torch.nn.functional.rms_norm`` call each.

Why: HF's eager RMSNorm (Llama, Qwen2, Qwen3, Mistral) is a chain of elementwise kernels: a float32
copy, ``pow``, ``mean``, ``add``, ``rsqrt``, two ``mul`` and a cast back forward, about twice as many
in backward, and autograd keeps float32 copies of the input for backward. A Qwen3 layer runs four of
them (input, post-attention, and the per-head ``q_norm`` / ``k_norm``), so in a launch-bound
training step they are a large share of the kernel launches. On CUDA ``F.rms_norm`` dispatches to
torch's fused kernel (one launch forward, one backward, float32 statistics, saves the input and
the per-row ``rstd`` only). On CPU torch decomposes it into the same elementwise ops as HF, so there
it changes nothing but where the output is rounded.

Numerics: statistics in float32 as HF. HF rounds the normalised value to the input dtype and then
multiplies by the weight; the fused kernel rounds once, after the product. In float32 the two agree
to rounding; in bf16 they differ by at most about one bf16 step, and the fused result is the closer
one to a float64 reference (``tests/unit/models/policy/test_fused_norm.py``).

Only the classes in ``STANDARD_RMS_NORMS`` are switched: their forward is exactly the formula above.
Others (Gemma's ``1 + weight``, norms with a bias) keep HF's forward. A module whose weight dtype
differs from its input's (no mixed-precision cast) falls back to HF's forward for that call, since
the fused kernel needs one dtype and HF's product would promote.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

# HF classes whose forward is: x32 = x.float(); x32 * rsqrt(mean(x32^2) + eps); weight * that.to(x.dtype)
STANDARD_RMS_NORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "Qwen3MoeRMSNorm"})


def _fused_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """``hidden_states`` [..., dim] -> same shape and dtype; one fused kernel on CUDA."""
    if self.weight.dtype != hidden_states.dtype:
        return self._hf_forward(hidden_states)
    return F.rms_norm(hidden_states, (hidden_states.shape[-1],), self.weight, self.variance_epsilon)


def use_fused_rms_norm(model: nn.Module) -> int:
    """Switch every standard RMSNorm module of ``model`` to ``F.rms_norm``; returns how many were switched.

    Idempotent: a module already switched is counted once and not wrapped again.
    """
    switched = 0
    for module in model.modules():
        if type(module).__name__ not in STANDARD_RMS_NORMS or not hasattr(module, "variance_epsilon"):
            continue
        if not hasattr(module, "_hf_forward"):
            module._hf_forward = module.forward
            module.forward = types.MethodType(_fused_forward, module)
        switched += 1
    return switched
