"""Runtime: device choice, threads, sliding-window inference, isolated runs with a deadline."""

from __future__ import annotations

import time

import pytest
import torch

from node.errors import ModelError
from node.models.isolation import run_isolated
from node.models.runtime import configure_threads, select_device, sliding_window
from tests.models import workers
from tests.models.builders import Threshold3d, unet


def test_select_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelError, match="not one of auto, cpu, cuda, cuda:N"):
        select_device("quantum")


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_cuda_requested_without_gpu() -> None:
    with pytest.raises(ModelError, match="no CUDA device"):
        select_device("cuda:0")


def test_configure_threads() -> None:
    before = torch.get_num_threads()
    try:
        configure_threads(1)
        assert torch.get_num_threads() == 1
        configure_threads(0)  # 0 = leave as is
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_sliding_window_matches_whole_image_for_pointwise_net() -> None:
    net = Threshold3d().eval()
    x = torch.rand(1, 1, 40, 50, 30)
    whole = sliding_window(net, x, roi_size=None)
    tiled = sliding_window(net, x, roi_size=(16, 16, 16), overlap=0.5)
    assert tiled.shape == whole.shape == (1, 2, 40, 50, 30)
    torch.testing.assert_close(tiled, whole)


def test_sliding_window_on_unet_is_deterministic() -> None:
    net = unet()
    x = torch.rand(1, 1, 48, 48, 48, generator=torch.Generator().manual_seed(1))
    a = sliding_window(net, x, roi_size=(32, 32, 32))
    b = sliding_window(net, x, roi_size=(32, 32, 32))
    assert a.shape == (1, 2, 48, 48, 48)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_run_isolated_returns_result() -> None:
    assert run_isolated(workers.add, 2, 3, timeout_seconds=120, what="adder") == 5


def test_run_isolated_reports_exception() -> None:
    with pytest.raises(ModelError, match="adder failed: ValueError: .*bad input"):
        run_isolated(workers.fail, "bad input", timeout_seconds=120, what="adder")


def test_crash_does_not_take_the_caller_down() -> None:
    with pytest.raises(ModelError, match="crashed: its worker process ended with exit code -6"):
        run_isolated(workers.crash, timeout_seconds=120, what="model 'x'")
    assert run_isolated(workers.add, 1, 1, timeout_seconds=120, what="adder") == 2


def test_timeout_stops_the_worker() -> None:
    start = time.monotonic()
    with pytest.raises(ModelError, match="timed out after 8 s"):
        run_isolated(workers.hang, 300.0, timeout_seconds=8, what="model 'slow'")
    assert time.monotonic() - start < 60
