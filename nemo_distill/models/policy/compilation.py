"""``compile_decoder_layers``: torch.compile each decoder layer's forward, nothing else.

Why per layer and only ``forward``: the layers are the model's repeated unit, so one compiled graph
serves all of them (they share one code object; parameters are graph inputs, not constants), and
compiling the bound ``forward`` rather than the module keeps FSDP2's all-gather / reshard hooks and
HF's activation-checkpointing wrapper outside the graph, where they run as in eager mode. The
embeddings, the output head and the chunked log-softmax / top-k stay eager (their shapes and
chunking vary per call). Shapes: the first new sequence length compiles a static graph, the next
one a dynamic graph that serves every later length, so a run pays about two compiles.
"""

from __future__ import annotations

import torch
from torch import nn

from nemo_distill.models.policy.parallel import decoder_layers


def compile_decoder_layers(model: nn.Module) -> int:
    """Replace every decoder layer's ``forward`` by its ``torch.compile``d version; returns the layer count."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.forward = torch.compile(layer.forward)
    return len(layers)
