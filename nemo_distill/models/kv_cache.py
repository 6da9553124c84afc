"""The KV cache argument of an HF causal LM's ``forward``, whose name changed between transformers versions."""

from __future__ import annotations

import inspect

import torch


def cache_keyword(model: torch.nn.Module) -> str:
    """``cache`` from transformers 5.2x on, ``past_key_values`` before: the name of the KV cache in the
    forward's arguments and output. Read from the HF model itself, not from a wrapper such as peft's.

    Raises ``TypeError`` when no HF model inside ``model`` takes a KV cache.
    """
    from transformers import PreTrainedModel

    for module in model.modules():
        if not isinstance(module, PreTrainedModel):
            continue
        parameters = inspect.signature(module.forward).parameters
        for name in ("cache", "past_key_values"):
            if name in parameters:
                return name
    raise TypeError(f"{type(model).__name__}.forward takes no KV cache argument")
