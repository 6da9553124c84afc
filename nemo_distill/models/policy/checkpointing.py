"""Policy checkpoints: what a user loads, and what a resume restores exactly.

Layout of ``<path>/``::

    model/        HF safetensors + config + tokenizer (LoRA merged): AutoModelForCausalLM.from_pretrained
    adapter/      LoRA only: the adapter in peft format (PeftModel.from_pretrained(base, adapter/))
    dcp/          torch.distributed.checkpoint of the sharded model and optimizer (every rank writes its shard)
    extra/rank_R.pt  scheduler and RNG states of rank R

``save``/``load`` are collectives: every rank of the worker group calls them.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from nemo_distill.models.loading import resolve_model_path

if TYPE_CHECKING:
    from nemo_distill.models.policy.worker import PolicyWorker

_PEFT_PREFIX = "base_model.model."
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "generation_config.json")


def full_state_dict(worker: "PolicyWorker") -> dict[str, torch.Tensor]:
    """Unsharded CPU state dict on rank 0 (empty elsewhere). A collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(worker.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def to_hf_weights(worker: "PolicyWorker", state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft names -> HF names with each LoRA delta merged into its base weight: W + (alpha/r) B A."""
    if not worker.lora_enabled:
        return dict(state)
    scale = worker.cfg.lora.alpha / worker.cfg.lora.rank
    merged: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if ".lora_" in name:
            continue
        hf_name = name.removeprefix(_PEFT_PREFIX).replace(".base_layer.", ".")
        if ".base_layer." in name:
            stem = name.replace(".base_layer.weight", "")
            lora_a = state.get(f"{stem}.lora_A.default.weight")
            lora_b = state.get(f"{stem}.lora_B.default.weight")
            if lora_a is not None and lora_b is not None and name.endswith(".weight"):
                tensor = tensor + scale * (lora_b.float() @ lora_a.float()).to(tensor.dtype)
        merged[hf_name] = tensor
    return merged


def _write_hf_folder(worker: "PolicyWorker", weights: dict[str, torch.Tensor], folder: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoConfig

    folder.mkdir(parents=True, exist_ok=True)
    source = Path(resolve_model_path(worker.model_name))
    config = AutoConfig.from_pretrained(source)
    if getattr(config, "tie_word_embeddings", False):
        weights = {k: v for k, v in weights.items() if k != "lm_head.weight"}  # tied: loads from the embedding
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(folder)
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)


def _write_adapter(worker: "PolicyWorker", state: dict[str, torch.Tensor], folder: Path) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    adapter = get_peft_model_state_dict(worker.model, state_dict=state)
    save_file({k: v.contiguous() for k, v in adapter.items()}, str(folder / "adapter_model.safetensors"))
    peft_config = worker.model.peft_config["default"]
    peft_config.base_model_name_or_path = resolve_model_path(worker.model_name)
    peft_config.save_pretrained(str(folder))


def save(worker: "PolicyWorker", path: Path, *, save_optimizer: bool) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    full = full_state_dict(worker)
    rank = dist.get_rank()
    if rank == 0:
        path.mkdir(parents=True, exist_ok=True)
        _write_hf_folder(worker, to_hf_weights(worker, full), path / "model")
        if worker.lora_enabled:
            _write_adapter(worker, full, path / "adapter")
        (path / "policy_info.json").write_text(json.dumps({"model_name": worker.model_name, "lora": worker.lora_enabled,
                                                             "world_size": dist.get_world_size()}))
    del full
    dist.barrier()
    if save_optimizer and worker.optimizer is not None:
        model_state, optim_state = get_state_dict(worker.model, worker.optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(path / "dcp"))
    else:
        dcp.save({"model": get_model_state_dict(worker.model)}, checkpoint_id=str(path / "dcp"))
    extra = {"rng_python": random.getstate(), "rng_numpy": np.random.get_state(), "rng_torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        extra["rng_cuda"] = torch.cuda.get_rng_state()
    if worker.scheduler is not None:
        extra["scheduler"] = worker.scheduler.state_dict()
    (path / "extra").mkdir(parents=True, exist_ok=True)
    torch.save(extra, path / "extra" / f"rank_{rank}.pt")
    dist.barrier()


def load(worker: "PolicyWorker", path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict, set_model_state_dict, set_state_dict

    if not (path / "dcp").is_dir():
        raise FileNotFoundError(f"{path} is not a policy checkpoint (no dcp/ folder)")
    with_optimizer = worker.optimizer is not None and (path / "dcp" / ".metadata").is_file() and _has_optimizer(path / "dcp")
    if with_optimizer:
        model_state, optim_state = get_state_dict(worker.model, worker.optimizer)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=str(path / "dcp"))
        set_state_dict(worker.model, worker.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    else:
        state = {"model": get_model_state_dict(worker.model)}
        dcp.load(state, checkpoint_id=str(path / "dcp"))
        set_model_state_dict(worker.model, state["model"])
    extra_path = path / "extra" / f"rank_{dist.get_rank()}.pt"
    if extra_path.is_file():
        extra = torch.load(extra_path, weights_only=False)
        random.setstate(extra["rng_python"])
        np.random.set_state(extra["rng_numpy"])
        torch.set_rng_state(extra["rng_torch"])
        if "rng_cuda" in extra and torch.cuda.is_available():
            torch.cuda.set_rng_state(extra["rng_cuda"])
        if worker.scheduler is not None and "scheduler" in extra:
            worker.scheduler.load_state_dict(extra["scheduler"])
    dist.barrier()


def _has_optimizer(dcp_dir: Path) -> bool:
    import torch.distributed.checkpoint as dcp

    metadata = dcp.FileSystemReader(str(dcp_dir)).read_metadata()
    return any(key.startswith("optim") for key in metadata.state_dict_metadata)
