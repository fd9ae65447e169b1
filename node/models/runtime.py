"""Where and how networks run: device choice, torch threads, sliding windows, isolation + timeout.

``run_isolated`` (node/models/isolation.py, re-exported here) runs one function in a fresh worker
process with a deadline, so a model that hangs or crashes ends that process only.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from node.errors import ModelError
from node.models.isolation import run_isolated

__all__ = [
    "load_torchscript_file",
    "configure_threads",
    "run_isolated",
    "select_device",
    "sliding_window",
    "stage_timer",
]

log = logging.getLogger(__name__)


def select_device(preference: str = "auto") -> torch.device:
    """The torch device for inference: ``auto`` = first CUDA device when available, else CPU.

    ``preference`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (node/models/devices.py).

    Raises
    ------
    ModelError
        Not one of those, or a CUDA device was asked for explicitly but is not available.
    """
    from node.models.devices import parse_device

    kind, index = parse_device(preference)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ModelError(
            f"inference.device is {preference!r} but torch sees no CUDA device; "
            "set inference.device to 'auto' or 'cpu'"
        )
    if index is not None and index >= torch.cuda.device_count():
        raise ModelError(
            f"inference.device is {preference!r} but torch sees only "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device("cuda", index) if index is not None else torch.device("cuda")


def load_torchscript_file(path: Path, device: torch.device) -> torch.nn.Module:
    """Load a TorchScript archive (``torch.jit.save``) or an exported program (``.pt2``).

    torch 2.13 deprecates TorchScript in favour of ``torch.export``, but TorchScript is what
    MONAI bundles and most published models ship, so its deprecation warning is silenced here
    (and only here).

    Raises
    ------
    ModelError
        The file is not a TorchScript archive / exported program.
    """
    try:
        if path.suffix == ".pt2":
            program = torch.export.load(str(path))
            module: torch.nn.Module = program.module()
            return module.to(device)
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"`torch\.jit\.load` is deprecated", category=DeprecationWarning
            )
            module = torch.jit.load(  # type: ignore[no-untyped-call]  # untyped in torch
                str(path), map_location=device
            )
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"{path.name} is not a TorchScript archive: {exc}") from exc
    return module


def configure_threads(threads: int) -> None:
    """Set torch's intra-op threads (``inference.torch_threads``; 0 keeps torch's default)."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@contextmanager
def stage_timer(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the wall time of the ``with`` block to ``timings[stage]`` (seconds)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def sliding_window(
    network: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    *,
    roi_size: Sequence[int] | None,
    overlap: float = 0.25,
    batch_size: int = 1,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Run ``network`` on ``image`` (N, C, *spatial) without gradients, tiled when large.

    With ``roi_size`` set, ``monai.inferers.sliding_window_inference`` tiles the image into
    overlapping windows (Gaussian-free constant blending) and pads images smaller than a window;
    the output stays on the image's device so large volumes need not fit on the GPU at once.
    Without ``roi_size`` the whole image goes through in one pass.
    """
    from monai.inferers.utils import sliding_window_inference

    with torch.inference_mode():
        if roi_size is None:
            x = image if device is None else image.to(device)
            return network(x).to(image.device)
        out = sliding_window_inference(
            image,
            roi_size=list(roi_size),
            sw_batch_size=batch_size,
            predictor=network,
            overlap=overlap,
            sw_device=device,
            device=image.device,
        )
    if not isinstance(out, torch.Tensor):
        raise ModelError("a network with several outputs needs its own predict()")
    return out
