"""Policy checkpoints: what a user loads, and what a resume restores exactly.

Layout of ``<path>/``::

    model/            HF safetensors + config + tokenizer, LoRA merged: AutoModelForCausalLM.from_pretrained(path/"model")
    adapter/          LoRA only: peft format (PeftModel.from_pretrained(base, path/"adapter")) + base_model.json
    dcp/              torch.distributed.checkpoint of the sharded model (+ optimizer): every rank writes its shard,
                      and a worker group of a different size can read it back (DCP reshards)
    extra/scheduler.json        LR scheduler state (the same on every rank): plain JSON numbers
    extra/rng_rank_<R>.pt       Python / NumPy / torch (/ CUDA) RNG states of rank R, as plain tensors
    policy_info.json  model name, LoRA flag, world size, whether the optimizer was saved

``save`` and ``load`` are collectives: every rank of the worker group calls them.

Resume is automatic, so nothing in ``checkpoint_dir`` may run code when it is read: the scheduler
and RNG files hold only JSON / tensors and are read with ``torch.load(weights_only=True)``; a file
that needs arbitrary unpickling (a crafted ``rng_rank_0.pt``, or a pre-JSON ``scheduler.pt`` that
holds objects) is refused with an :class:`UnsafeCheckpointFileError` naming it.
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

from nemo_distill.config.errors import UserError
from nemo_distill.models.loading import load_tokenizer, resolve_model_path
from nemo_distill.models.policy import weights

if TYPE_CHECKING:
    from nemo_distill.models.policy.worker import PolicyWorker

log = logging.getLogger(__name__)

INFO_FILE = "policy_info.json"
SCHEDULER_FILE = "scheduler.json"
_LEGACY_SCHEDULER_FILE = "scheduler.pt"  # written before scheduler.json; read with weights_only=True
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
    save_rng_state(path / "extra" / f"rng_rank_{dist.get_rank()}.pt")
    if is_writer:
        if worker.scheduler is not None:
            save_scheduler_state(worker.scheduler, path / "extra" / SCHEDULER_FILE)
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
    if worker.scheduler is not None:
        load_scheduler_state(worker.scheduler, path / "extra")
    rng_file = path / "extra" / f"rng_rank_{dist.get_rank()}.pt"
    if rng_file.is_file():
        load_rng_state(rng_file)
    else:
        log.warning("checkpoint %s has no RNG state for rank %d (saved by %d ranks)", path, dist.get_rank(), info.world_size)
    dist.barrier()


# -- scheduler and RNG state: data only, never code ----------------------------------------------


class UnsafeCheckpointFileError(UserError, ValueError):
    """A checkpoint file that cannot be read without arbitrary unpickling (it could run code).

    A :class:`UserError`: the fix is to delete the file, so entry points print it as an ``error:`` line.
    """

    def __init__(self, path: Path, detail: str):
        self.path, self.detail = path, detail
        super().__init__(
            f"refusing to load {path}: it is not a plain tensor/JSON file, and unpickling it could run arbitrary "
            f"code ({detail}). Delete it (or the whole checkpoint folder) if you did not write it; a file from a checkpoint "
            f"written before scheduler/RNG state became plain data can be deleted too (resume then skips that state)."
        )

    def __reduce__(self):  # raised in a worker: Ray pickles it back to the driver
        return (type(self), (self.path, self.detail))


def _safe_torch_load(path: Path) -> object:
    import pickle

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:  # weights_only refuses any global it does not allow
        raise UnsafeCheckpointFileError(path, str(err).splitlines()[0]) from None


def save_scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler, file: Path) -> None:
    """``scheduler.state_dict()`` as JSON (step counters, base and last LRs).

    ``lr_lambdas`` is left out: LambdaLR stores ``None`` for plain functions, and ours are rebuilt
    from the config on every start.
    """
    state = {key: value for key, value in scheduler.state_dict().items() if key != "lr_lambdas"}
    file.write_text(json.dumps(state, indent=2, allow_nan=False))


def load_scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler, extra_dir: Path) -> None:
    """Restore from ``scheduler.json`` (or a legacy ``scheduler.pt``, read with ``weights_only=True``)."""
    json_file, legacy_file = extra_dir / SCHEDULER_FILE, extra_dir / _LEGACY_SCHEDULER_FILE
    if json_file.is_file():
        state = json.loads(json_file.read_text())
        if "lr_lambdas" in scheduler.state_dict():
            state["lr_lambdas"] = [None] * len(scheduler.state_dict()["lr_lambdas"])  # None: keep our lambdas
    elif legacy_file.is_file():
        state = _safe_torch_load(legacy_file)
    else:
        log.warning("checkpoint %s has no scheduler state; the LR schedule restarts", extra_dir.parent)
        return
    if not isinstance(state, dict):
        raise ValueError(f"{json_file if json_file.is_file() else legacy_file} must hold a mapping, got {type(state).__name__}")
    scheduler.load_state_dict(state)


def save_rng_state(file: Path) -> None:
    """This process's Python / NumPy / torch (/ CUDA) RNG states, as ints, floats and tensors only."""
    py_version, py_state, py_gauss = random.getstate()
    np_algo, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    rng: dict[str, object] = {
        "python_version": py_version,
        "python_state": torch.tensor(py_state, dtype=torch.int64),  # 625 uint32 words
        "python_gauss": py_gauss,
        "numpy_algo": np_algo,
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),  # 624 uint32 words
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_cached_gaussian": float(np_cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, file)


def load_rng_state(file: Path) -> None:
    """Restore what :func:`save_rng_state` wrote (read with ``weights_only=True``)."""
    rng = _safe_torch_load(file)
    if not isinstance(rng, dict) or "python_state" not in rng:
        raise UnsafeCheckpointFileError(file, "it is not an RNG file written by this version (expected a dict with 'python_state')")
    random.setstate((rng["python_version"], tuple(int(word) for word in rng["python_state"].tolist()), rng["python_gauss"]))
    np.random.set_state((rng["numpy_algo"], rng["numpy_keys"].numpy().astype(np.uint32), rng["numpy_pos"],
                         rng["numpy_has_gauss"], rng["numpy_cached_gaussian"]))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
