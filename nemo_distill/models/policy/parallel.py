"""How a HF decoder model is laid out on a (dp, cp, tp) device mesh: mesh, TP plan, FSDP2.

* Tensor parallel (DTensor): q/k/v/gate/up Colwise, o/down Rowwise in every decoder layer, so
  attention and the MLP run on a head / column shard and one all-reduce closes each block. An
  untied ``lm_head`` is Colwise with vocabulary-sharded local outputs (gathered for the loss, kept
  sharded for top-k); a tied one (SmolLM2) stays replicated because its weight is the embedding's.
* FSDP2 ``fully_shard`` wraps every decoder layer, then the root (or, ``dtensor_cfg.fsdp_units``, only
  the root: one unit), over the data-parallel ranks
  (dp x cp flattened when context parallel is on: cp ranks hold the same weights and see different
  sequence chunks of the same samples, so their gradients are summed like dp ranks'). On GPU a
  trainable model keeps fp32 master weights, computes in bf16 and reduces gradients in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

_COLWISE = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
_ROWWISE = ("o_proj", "down_proj")


@dataclass
class MeshLayout:
    """This rank's place on the (dp, cp, tp) mesh and the process groups it talks to."""

    mesh: object  # DeviceMesh with dims ("dp", "cp", "tp")
    dp_size: int
    cp_size: int
    tp_size: int
    dp_rank: int
    cp_rank: int
    tp_rank: int
    fsdp_mesh: object  # 1-D mesh FSDP2 shards over: "dp", or "dp_cp" flattened when cp > 1

    @property
    def dp_group(self):
        return self.mesh["dp"].get_group()

    @property
    def cp_group(self):
        return self.mesh["cp"].get_group() if self.cp_size > 1 else None

    @property
    def tp_group(self):
        return self.mesh["tp"].get_group() if self.tp_size > 1 else None


def build_mesh(device_type: str, world_size: int, *, tp_size: int, cp_size: int) -> MeshLayout:
    """Split ``world_size`` ranks into ``dp x cp x tp`` (tp fastest-varying, so a TP group is adjacent ranks)."""
    from torch.distributed.device_mesh import init_device_mesh

    if world_size % (tp_size * cp_size):
        raise ValueError(
            f"{world_size} workers cannot be split into dtensor_cfg.tensor_parallel_size={tp_size} x "
            f"dtensor_cfg.context_parallel_size={cp_size} groups; the worker count must be a multiple of {tp_size * cp_size}"
        )
    dp_size = world_size // (tp_size * cp_size)
    mesh = init_device_mesh(device_type, (dp_size, cp_size, tp_size), mesh_dim_names=("dp", "cp", "tp"))
    fsdp_mesh = mesh["dp", "cp"]._flatten("dp_cp") if cp_size > 1 else mesh["dp"]
    return MeshLayout(
        mesh=mesh, dp_size=dp_size, cp_size=cp_size, tp_size=tp_size,
        dp_rank=mesh["dp"].get_local_rank(), cp_rank=mesh["cp"].get_local_rank(), tp_rank=mesh["tp"].get_local_rank(),
        fsdp_mesh=fsdp_mesh,
    )


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a (possibly peft-wrapped) HF causal LM."""
    for module in model.modules():
        layers = getattr(module, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers) and hasattr(layers[0], "self_attn"):
            return list(layers)
    raise ValueError(f"cannot find decoder layers (a ModuleList 'layers' of blocks with 'self_attn') in {type(model).__name__}")


@dataclass
class TensorParallelResult:
    """What :func:`apply_tensor_parallel` did that the training step must know about."""

    vocab_sharded: bool  # lm_head returns LOCAL logits [b, t, V / tp]; shard r holds ids [r V/tp, (r+1) V/tp)
    # Replicated modules that run on a head shard (Qwen3's per-head q_norm / k_norm): each TP rank
    # only sees its own heads, so their gradients are partial sums that must be added over TP ranks.
    head_local_modules: list[nn.Module]


def apply_tensor_parallel(model: nn.Module, tp_mesh) -> TensorParallelResult:
    """Shard attention / MLP projections over ``tp_mesh`` (and an untied ``lm_head`` over the vocabulary)."""
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    config = model.config
    tp = tp_mesh.size()
    for name in ("num_attention_heads", "num_key_value_heads", "intermediate_size"):
        value = getattr(config, name, None)
        if value is not None and value % tp:
            raise ValueError(f"dtensor_cfg.tensor_parallel_size={tp} does not divide the model's {name}={value}")
    head_local_modules = []
    for layer in decoder_layers(model):
        plan = {}
        for parent in ("self_attn", "mlp"):
            for child, module in getattr(layer, parent).named_children():
                if child not in _COLWISE + _ROWWISE:
                    if any(True for _ in module.parameters()):
                        head_local_modules.append(module)  # e.g. q_norm: replicated weight, head-sharded input
                    continue
                if not isinstance(module, nn.Linear):
                    raise ValueError(
                        f"tensor parallel expects plain nn.Linear projections, found {type(module).__name__} at "
                        f"{parent}.{child} (LoRA adapters cannot be tensor-parallel here: use tensor_parallel_size=1 with lora)"
                    )
                if child in _COLWISE:
                    plan[f"{parent}.{child}"] = ColwiseParallel()
                elif child in _ROWWISE:
                    plan[f"{parent}.{child}"] = RowwiseParallel()
        parallelize_module(layer, tp_mesh, plan)
    # Attention reshapes q/k/v with the model's head counts; each TP rank holds 1/tp of the heads.
    # HF reads the head count from the projection output (view(*input_shape, -1, head_dim)), so
    # nothing else needs patching.
    if bool(getattr(config, "tie_word_embeddings", False)) or config.vocab_size % tp:
        return TensorParallelResult(vocab_sharded=False, head_local_modules=head_local_modules)
    # Shard the lm_head module directly: parallelize_module on the root would leave the root's other
    # parameters outside FSDP2's management.
    parallelize_module(model.get_output_embeddings(), tp_mesh, ColwiseParallel(output_layouts=Shard(-1), use_local_output=True))
    return TensorParallelResult(vocab_sharded=True, head_local_modules=head_local_modules)


def sum_head_local_grads(modules: list[nn.Module], tp_group) -> None:
    """Add up, over TP ranks, the partial gradients of replicated modules that ran on a head shard.

    Call after backward, before clipping. The local gradient shards line up across TP ranks (they
    are sharded over dp only), so an all-reduce of the local tensors is the full sum.
    """
    if tp_group is None:
        return
    for module in modules:
        for param in module.parameters():
            if param.grad is not None:
                grad = param.grad.to_local() if hasattr(param.grad, "to_local") else param.grad
                dist.all_reduce(grad, group=tp_group)


def apply_fsdp2(model: nn.Module, fsdp_mesh, *, mixed_precision: bool, cpu_offload: bool, units: str = "layers") -> None:
    """``fully_shard`` each decoder layer, then the root (embeddings, final norm, lm_head); with
    ``units="model"`` only the root, so the whole model is one unit (``DTensorConfig.fsdp_units``)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    if units not in ("layers", "model"):
        raise ValueError(f"FSDP2 units must be 'layers' or 'model', got {units!r}")
    kwargs: dict = {"mesh": fsdp_mesh}
    if mixed_precision:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    if units == "layers":
        for layer in decoder_layers(model):
            fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)


def resolve_fsdp_units(units: str, *, trainable: bool, fsdp_ranks: int, cpu_offload: bool = False,
                       activation_checkpointing: bool = False) -> str:
    """``DTensorConfig.fsdp_units`` with "auto" decided for this model: on a one-rank FSDP2 mesh "model" when
    it trains and "none" (no ``fully_shard``) when it is frozen; "layers" on more ranks, with ``cpu_offload``
    (FSDP2's offload policy is what brings the weights to the device), and for a model that trains with
    ``activation_checkpointing`` (asked for memory: one unit holds every layer's gradients until the end
    of backward, +2.9 GiB for a 0.6B model)."""
    if units != "auto":
        return units
    if fsdp_ranks > 1 or cpu_offload:
        return "layers"
    if not trainable:
        return "none"
    return "layers" if activation_checkpointing else "model"
