"""HostRows: a [B, T, ...] host result filled a micro-batch of rows at a time (the teacher's top-k, log-probs)."""

import pytest
import torch

from nemo_distill.models.policy.device_memory import HostRows


def _fill(device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    pieces = [torch.randn(2, 5, 3, generator=generator), torch.randn(3, 2, 3, generator=generator),
              torch.randn(1, 4, 3, generator=generator)]
    rows = HostRows((6, 5, 3), torch.float32, device)
    for piece in pieces:
        rows.put(piece.to(device))
    return rows.result(), pieces


def _expected(pieces: list[torch.Tensor]) -> torch.Tensor:
    padded = [torch.cat([piece, piece.new_zeros(piece.shape[0], 5 - piece.shape[1], 3)], dim=1) for piece in pieces]
    return torch.cat(padded)


def test_rows_land_in_order_and_trimmed_columns_stay_zero():
    result, pieces = _fill(torch.device("cpu"))
    assert result.device.type == "cpu" and result.dtype == torch.float32
    torch.testing.assert_close(result, _expected(pieces), rtol=0, atol=0)


def test_rows_are_converted_to_the_result_dtype():
    rows = HostRows((2, 3), torch.int32, torch.device("cpu"))
    rows.put(torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.int64))
    result = rows.result()
    assert result.dtype == torch.int32
    assert result.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_too_many_rows_or_columns_and_missing_rows_are_refused():
    rows = HostRows((2, 3), torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match="do not fit"):
        rows.put(torch.zeros(1, 4))
    rows.put(torch.ones(1, 3))
    with pytest.raises(ValueError, match="do not fit"):
        rows.put(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="1 of 2 rows"):
        rows.result()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (pinned memory, asynchronous copies)")
def test_gpu_rows_arrive_in_pinned_memory_after_result():
    result, pieces = _fill(torch.device("cuda"))
    assert result.is_pinned()
    torch.testing.assert_close(result, _expected(pieces), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (pinned memory, asynchronous copies)")
def test_gpu_puts_of_full_and_trimmed_rows_do_not_wait_for_the_device():
    """The copies queue behind ~1 s of GPU work without the host waiting; ``result()`` waits for them.
    (A trimmed micro-batch copied into a strided slice would be staged through pageable memory and block.)"""
    import time

    device = torch.device("cuda")
    pieces = [torch.randn(2, 6, 2, device=device), torch.randn(2, 3, 2, device=device)]  # the second one trimmed
    rows = HostRows((4, 6, 2), torch.float32, device)
    torch.cuda.synchronize()
    torch.cuda._sleep(2_000_000_000)  # GPU clock cycles: about a second of queued work
    started = time.perf_counter()
    for piece in pieces:
        rows.put(piece)
    queued = time.perf_counter() - started
    result = rows.result()
    waited = time.perf_counter() - started
    assert queued < 0.2 < waited, (queued, waited)
    torch.testing.assert_close(result[:2], pieces[0].cpu(), rtol=0, atol=0)
    torch.testing.assert_close(result[2:, :3], pieces[1].cpu(), rtol=0, atol=0)
    assert not result[2:, 3:].any()
