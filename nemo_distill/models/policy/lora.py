"""LoRA (peft) on the student: wrap before sharding, name mapping, merging, adapter files.

peft renames the wrapped model's parameters: ``model.layers.0.self_attn.q_proj.weight`` becomes
``base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight`` with the adapter in
``...q_proj.lora_A.default.weight`` (``[r, in]``) and ``...lora_B.default.weight`` (``[out, r]``).
The merged weight a generation engine or ``from_pretrained`` needs is ``W + (alpha / r) * B @ A``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from nemo_distill.models.policy.config import LoraConfig

PEFT_PREFIX = "base_model.model."
ADAPTER_NAME = "default"
BASE_MODEL_FILE = "base_model.json"  # in the adapter folder: which base model the adapter belongs to


def apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Wrap ``model`` with trainable adapters; every base parameter is frozen."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules, task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def lora_scale(cfg: LoraConfig) -> float:
    return cfg.alpha / cfg.rank


def is_adapter_key(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or ".lora_embedding_" in name or ".lora_magnitude_" in name


def hf_name(peft_name: str) -> str:
    """peft parameter name -> the plain HF name of the (merged) weight."""
    return peft_name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")


def adapter_keys_of(base_key: str) -> tuple[str, str] | None:
    """``(lora_A key, lora_B key)`` for a ``...base_layer.weight`` key, else None."""
    if not base_key.endswith(".base_layer.weight"):
        return None
    stem = base_key.removesuffix(".base_layer.weight")
    return f"{stem}.lora_A.{ADAPTER_NAME}.weight", f"{stem}.lora_B.{ADAPTER_NAME}.weight"


def merge(base_weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float) -> torch.Tensor:
    """``W + scale * B @ A`` computed in fp32, returned in ``W``'s dtype. Shapes: W ``[out, in]``, A ``[r, in]``, B ``[out, r]``."""
    return (base_weight.float() + scale * (lora_b.float() @ lora_a.float())).to(base_weight.dtype)


def write_adapter(model: nn.Module, adapter_state: dict[str, torch.Tensor], folder: Path, base_model_path: str) -> None:
    """Write ``adapter_model.safetensors`` + ``adapter_config.json`` (``PeftModel.from_pretrained(base, folder)``)
    and ``base_model.json`` naming the base model folder.

    ``adapter_state``: full (unsharded) tensors under the wrapped model's parameter names.
    """
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    adapter = get_peft_model_state_dict(model, state_dict=adapter_state, adapter_name=ADAPTER_NAME)
    save_file({name: tensor.contiguous() for name, tensor in adapter.items()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    peft_config = model.peft_config[ADAPTER_NAME]
    peft_config.base_model_name_or_path = base_model_path
    peft_config.save_pretrained(str(folder))
    (folder / BASE_MODEL_FILE).write_text(json.dumps({"base_model": base_model_path}, indent=2))
