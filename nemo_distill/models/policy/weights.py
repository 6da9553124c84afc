"""Full (unsharded) weights under HF names, streamed one tensor at a time from a sharded model.

Used for weight refit (object-store buckets) and for the ``model/`` folder of a checkpoint. Every
function here is a COLLECTIVE over all ranks of the worker group (each DTensor is all-gathered in
turn), so every rank must iterate the stream to its end in the same order; only the writer rank
keeps the tensors. Peak extra memory: one full tensor on every rank plus what the writer holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from nemo_distill.models.policy import lora

HF_SHARD_BYTES = 2 * 2**30  # safetensors file size of a saved HF folder


def _full(tensor: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """All-gather a DTensor (a collective) into a tensor on ``device`` that owns its memory.

    A one-rank DTensor's ``full_tensor()`` (and a plain tensor's ``.to`` its own device) can return
    the parameter's own storage; copy then, or later optimizer steps would change what was exported.
    """
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
    full = full.detach().to(device)
    if full.untyped_storage().data_ptr() == local.untyped_storage().data_ptr():
        full = full.clone()
    return full


def _exported_keys(model: nn.Module, state: dict[str, torch.Tensor], lora_scale: float | None) -> Iterator[tuple[str, str]]:
    """``(state_dict_key, hf_name)`` of every exported weight, in state-dict order (adapters merged away).

    Only parameters, each once: a tied ``lm_head.weight`` is the embedding's Parameter object, which
    ``named_parameters`` lists under its first name only (the same on every rank, so the gathers
    still match); loaders re-tie it.
    """
    parameter_names = {name for name, _ in model.named_parameters()}
    for key in state:
        if key not in parameter_names or (lora_scale is not None and lora.is_adapter_key(key)):
            continue
        yield key, (lora.hf_name(key) if lora_scale is not None else key)


def hf_weight_specs(model: nn.Module, *, lora_scale: float | None) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """``(hf_name, full_shape, dtype)`` of what :func:`iter_hf_weights` yields, without any gather."""
    state = model.state_dict()
    return [(name, tuple(state[key].shape), state[key].dtype) for key, name in _exported_keys(model, state, lora_scale)]


def iter_hf_weights(model: nn.Module, *, lora_scale: float | None, keep: bool, device: torch.device | str = "cpu",
                    only: set[str] | None = None) -> Iterator[tuple[str, torch.Tensor | None]]:
    """Yield ``(hf_name, full_tensor)`` for every parameter of ``model`` (buffers and tied duplicates
    excluded), gathered onto ``device``.

    With LoRA (``lora_scale`` not None) adapter tensors are merged into their base weights and not
    yielded themselves. ``keep=False`` (non-writer ranks) yields ``None`` instead of the tensor but
    still takes part in every gather. ``only`` restricts the stream to those HF names (the same set
    on every rank, so the gathers still match).
    """
    state = model.state_dict()
    for key, name in _exported_keys(model, state, lora_scale):
        if only is not None and name not in only:
            continue
        full = _full(state[key], device)
        adapter_keys = lora.adapter_keys_of(key) if lora_scale is not None else None
        if adapter_keys is not None and adapter_keys[0] in state:
            lora_a, lora_b = (_full(state[adapter], device) for adapter in adapter_keys)
            full = lora.merge(full, lora_a, lora_b, lora_scale) if keep else full
        yield name, (full if keep else None)


def full_adapter_state(model: nn.Module, *, keep: bool) -> dict[str, torch.Tensor]:
    """Full LoRA adapter tensors under the wrapped model's names (empty on non-writer ranks). A collective."""
    adapter = {}
    for name, tensor in model.state_dict().items():
        if lora.is_adapter_key(name):
            full = _full(tensor)
            if keep:
                adapter[name] = full
    return adapter


def write_hf_weights(weights: Iterator[tuple[str, torch.Tensor | None]], folder: Path, *, tied_embeddings: bool,
                     shard_bytes: int = HF_SHARD_BYTES) -> None:
    """Write a weight stream as HF safetensors in ``folder``: ``model.safetensors``, or numbered shards plus
    ``model.safetensors.index.json`` when larger than ``shard_bytes``. Writer rank only: the other ranks
    run their stream through :func:`drain`.

    A tied ``lm_head.weight`` is left out: ``from_pretrained`` re-ties it to the embedding.
    """
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    shard: dict[str, torch.Tensor] = {}
    shard_size = 0
    files: list[tuple[str, list[str]]] = []

    def flush() -> None:
        nonlocal shard, shard_size
        if not shard:
            return
        filename = f"model-part-{len(files):05d}.safetensors"
        save_file(shard, str(folder / filename), metadata={"format": "pt"})
        files.append((filename, list(shard)))
        shard, shard_size = {}, 0

    for name, tensor in weights:
        if tied_embeddings and name == "lm_head.weight":
            continue
        nbytes = tensor.numel() * tensor.element_size()
        if shard and shard_size + nbytes > shard_bytes:
            flush()
        shard[name] = tensor.contiguous()
        shard_size += nbytes
    flush()
    if len(files) == 1:
        os.replace(folder / files[0][0], folder / "model.safetensors")
        return
    weight_map = {}
    for index, (filename, names) in enumerate(files):
        final = f"model-{index + 1:05d}-of-{len(files):05d}.safetensors"
        os.replace(folder / filename, folder / final)
        weight_map.update({name: final for name in names})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))


def drain(weights: Iterator) -> None:
    """Run a weight stream to its end on a non-writer rank (its gathers must match the writer's)."""
    for _ in weights:
        pass
