"""Policy checkpoints: what a user loads, and what a resume restores exactly.

Layout of ``<path>/``::

    model/            HF safetensors + config + tokenizer, LoRA merged: AutoModelForCausalLM.from_pretrained(path/"model")
    adapter/          LoRA only: peft format (PeftModel.from_pretrained(base, path/"adapter")) + base_model.json
    dcp/              torch.distributed.checkpoint of the sharded model (+ optimizer): every rank writes its shard,
                      and a worker group of a different size can read it back (DCP reshards)
    extra/scheduler.pt          LR scheduler state (the same on every rank)
    extra/rng_rank_<R>.pt       Python / NumPy / torch (/ CUDA) RNG states of rank R
    policy_info.json  model name, LoRA flag, world size, whether the optimizer was saved

``save`` and ``load`` are collectives: every rank of the worker group calls them.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from nemo_distill.models.loading import load_tokenizer, resolve_model_path
from nemo_distill.models.policy import weights

if TYPE_CHECKING:
    from nemo_distill.models.policy.worker import PolicyWorker

log = logging.getLogger(__name__)

INFO_FILE = "policy_info.json"
_COPIED_MODEL_FILES = ("generation_config.json",)


@dataclass
class CheckpointInfo:
    """``policy_info.json``: what a checkpoint holds."""

    model_name: str
    lora: bool
    world_size: int
    has_optimizer: bool


def is_policy_checkpoint(path: str | Path) -> bool:
    return (Path(path) / INFO_FILE).is_file() and (Path(path) / "dcp").is_dir()


def read_info(path: str | Path) -> CheckpointInfo:
    info_file = Path(path) / INFO_FILE
    if not info_file.is_file():
        raise FileNotFoundError(f"{path} is not a policy checkpoint: {INFO_FILE} is missing")
    return CheckpointInfo(**json.loads(info_file.read_text()))


def _write_model_folder(worker: "PolicyWorker", folder: Path, is_writer: bool) -> None:
    """``model/``: merged HF weights streamed from the shards, config, tokenizer. A collective."""
    import shutil

    from transformers import AutoConfig

    stream = weights.iter_hf_weights(worker.model, lora_scale=worker.lora_scale, keep=is_writer)
    if not is_writer:
        weights.drain(stream)
        return
    source = Path(resolve_model_path(worker.model_name))
    config = AutoConfig.from_pretrained(source)
    weights.write_hf_weights(stream, folder, tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)))
    config.save_pretrained(folder)
    load_tokenizer(worker.model_name, worker.cfg.tokenizer).save_pretrained(folder)
    for name in _COPIED_MODEL_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)


def save(worker: "PolicyWorker", path: Path, *, save_optimizer: bool) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    is_writer = dist.get_rank() == 0
    with_optimizer = save_optimizer and worker.optimizer is not None
    if is_writer:
        path.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    _write_model_folder(worker, path / "model", is_writer)
    if worker.lora_enabled:
        adapter_state = weights.full_adapter_state(worker.model, keep=is_writer)
        if is_writer:
            from nemo_distill.models.policy.lora import write_adapter

            write_adapter(worker.model, adapter_state, path / "adapter", resolve_model_path(worker.model_name))
    if with_optimizer:
        model_state, optim_state = get_state_dict(worker.model, worker.optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(path / "dcp"))
    else:
        dcp.save({"model": get_model_state_dict(worker.model)}, checkpoint_id=str(path / "dcp"))
    (path / "extra").mkdir(parents=True, exist_ok=True)
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, path / "extra" / f"rng_rank_{dist.get_rank()}.pt")
    if is_writer:
        if worker.scheduler is not None:
            torch.save(worker.scheduler.state_dict(), path / "extra" / "scheduler.pt")
        info = CheckpointInfo(model_name=worker.model_name, lora=worker.lora_enabled,
                              world_size=dist.get_world_size(), has_optimizer=with_optimizer)
        (path / INFO_FILE).write_text(json.dumps(asdict(info), indent=2))
    dist.barrier()


def load(worker: "PolicyWorker", path: Path) -> None:
    """Restore model shards, and for a trainable worker the optimizer, scheduler and this rank's RNG."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict, set_model_state_dict, set_state_dict

    info = read_info(path)
    if info.lora != worker.lora_enabled:
        raise ValueError(f"checkpoint {path} was saved with lora={info.lora} but this worker has lora.enabled={worker.lora_enabled}")
    if worker.optimizer is not None and info.has_optimizer:
        model_state, optim_state = get_state_dict(worker.model, worker.optimizer)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=str(path / "dcp"))
        set_state_dict(worker.model, worker.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    else:
        if worker.optimizer is not None:
            log.warning("checkpoint %s has no optimizer state; the optimizer starts fresh", path)
        state = {"model": get_model_state_dict(worker.model)}
        dcp.load(state, checkpoint_id=str(path / "dcp"))
        set_model_state_dict(worker.model, state["model"])
    if worker.scheduler is not None and (path / "extra" / "scheduler.pt").is_file():
        worker.scheduler.load_state_dict(torch.load(path / "extra" / "scheduler.pt", weights_only=False))
    rng_file = path / "extra" / f"rng_rank_{dist.get_rank()}.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=False)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    else:
        log.warning("checkpoint %s has no RNG state for rank %d (saved by %d ranks)", path, dist.get_rank(), info.world_size)
    dist.barrier()
