"""``cluster.offload``: always / never / auto, and auto's memory rule against hand-computed numbers."""

from __future__ import annotations

import pytest

from nemo_distill.distributed.config import ClusterConfig
from nemo_distill.distributed.offload import AUTO_RESERVE_FRACTION, ResidentMemoryError, fits_resident, resolve_offload

GIB = 2**30


def test_default_is_auto_and_the_field_is_typed():
    assert ClusterConfig().offload == "auto"


@pytest.mark.parametrize("uses_gpus", [False, True])
def test_explicit_modes(uses_gpus):
    assert resolve_offload("always", colocated=True, uses_gpus=uses_gpus) is True
    assert resolve_offload("never", colocated=True, uses_gpus=uses_gpus) is False
    for mode in ("auto", "always", "never"):  # separate GPUs per role: nothing to move
        assert resolve_offload(mode, colocated=False, uses_gpus=uses_gpus) is False


def test_auto_on_cpu_keeps_the_call_pattern_without_measuring():
    def never_called():
        raise AssertionError("auto on CPU must not measure GPU memory")

    assert resolve_offload("auto", colocated=True, uses_gpus=False, memory=never_called) is True


def test_auto_on_gpu_decides_from_the_tightest_rank():
    # H200 (139 GiB), 0.6B student / teacher / generation loaded (~10 GiB used), 4.8 GB of AdamW moments.
    roomy = {"free_bytes": 129 * GIB, "total_bytes": 139 * GIB, "optimizer_bytes": int(4.8e9)}
    assert resolve_offload("auto", colocated=True, uses_gpus=True, memory=lambda: [roomy]) is False
    # 80 GiB GPU with 50 GiB free and 24 GiB of moments: 50 - 24 = 26 < 0.4 * 80 = 32 -> move every step
    tight = {"free_bytes": 50 * GIB, "total_bytes": 80 * GIB, "optimizer_bytes": 24 * GIB}
    assert resolve_offload("auto", colocated=True, uses_gpus=True, memory=lambda: [roomy, tight]) is True


def test_overlap_keeps_every_role_resident_or_says_why_not():
    # colocated overlap_generation: the roles run at once, so nothing may move
    roomy = {"free_bytes": 129 * GIB, "total_bytes": 139 * GIB, "optimizer_bytes": int(4.8e9)}
    tight = {"free_bytes": 50 * GIB, "total_bytes": 80 * GIB, "optimizer_bytes": 24 * GIB}
    assert resolve_offload("auto", colocated=True, uses_gpus=False, resident_required=True) is False  # CPU: resident
    assert resolve_offload("auto", colocated=True, uses_gpus=True, memory=lambda: [roomy], resident_required=True) is False
    assert resolve_offload("never", colocated=True, uses_gpus=True, memory=lambda: [tight], resident_required=True) is False
    assert resolve_offload("auto", colocated=False, uses_gpus=True, resident_required=True) is False
    with pytest.raises(ResidentMemoryError) as info:
        resolve_offload("auto", colocated=True, uses_gpus=True, memory=lambda: [roomy, tight], resident_required=True)
    message = str(info.value)  # the tight rank's numbers, and the three ways out
    assert "50.0 GiB free of 80.0 GiB" in message and "(24.0 GiB)" in message and "40%" in message
    assert "cluster.offload=never" in message and "cluster.colocated=false" in message and "overlap_generation=false" in message
    with pytest.raises(ValueError, match="cluster.offload=always"):
        resolve_offload("always", colocated=True, uses_gpus=True, resident_required=True)


def test_fits_resident_boundary():
    total = 100 * GIB
    reserve = int(AUTO_RESERVE_FRACTION * total)
    assert fits_resident(reserve + 10, total, 10)
    assert not fits_resident(reserve + 9, total, 10)


def test_unknown_mode_names_the_key():
    with pytest.raises(ValueError, match=r"cluster.offload='sometimes'.*auto.*always.*never"):
        resolve_offload("sometimes", colocated=True, uses_gpus=True)
