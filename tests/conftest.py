"""Fixtures shared by all tests: tiny random models (real SmolLM2 tokenizer) built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny random Qwen3 (hidden 64, 2 layers) in HF format."""
    from nemo_distill.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen3"), arch="qwen3", seed=0)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """A tiny random Llama (hidden 64, 2 layers) in HF format."""
    from nemo_distill.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), arch="llama", seed=0)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> str:
    """A larger tiny Qwen3 (hidden 128) with the same vocabulary, to act as a teacher."""
    from nemo_distill.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_teacher"), arch="qwen3", hidden_size=128, seed=1)
