"""Which device a model runs on: ``auto | cpu | cuda | cuda:N``, for torch and onnxruntime.

``inference.device`` (and ``--device`` of ``ainode worker`` / ``ainode predict``) names one device
for every model of a node.  torch networks get a ``torch.device`` (``node.models.runtime.
select_device``); ONNX networks get an onnxruntime provider list from the same preference:

============  ==========================================  ===================================
preference    torch                                       onnxruntime providers
============  ==========================================  ===================================
``auto``      ``cuda`` when torch sees a GPU, else CPU    TensorRT, CUDA (when the installed
                                                          onnxruntime has them), then CPU
``cpu``       CPU                                         CPU
``cuda[:N]``  that GPU; an error when torch has no CUDA   TensorRT / CUDA on GPU N, then CPU;
                                                          an error when neither has a GPU
============  ==========================================  ===================================

So ``auto`` picks a GPU when torch *or* onnxruntime sees one (a CPU torch with
``onnxruntime-gpu`` runs ONNX models on the GPU and torch models on the CPU).
"""

from __future__ import annotations

import functools
from typing import Any

from node.errors import ModelError

__all__ = ["describe_device", "onnx_providers", "parse_device"]

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def parse_device(preference: str) -> tuple[str, int | None]:
    """``("auto" | "cpu" | "cuda", index)`` from a device preference string.

    Raises
    ------
    ModelError
        Not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    pref = preference.strip().lower()
    if pref in ("", "auto"):
        return "auto", None
    if pref == "cpu":
        return "cpu", None
    if pref == "cuda":
        return "cuda", None
    if pref.startswith("cuda:") and pref[5:].isdigit():
        return "cuda", int(pref[5:])
    raise ModelError(f"device {preference!r} is not one of auto, cpu, cuda, cuda:N")


@functools.cache
def _available_onnx_providers() -> tuple[str, ...]:
    import onnxruntime

    return tuple(onnxruntime.get_available_providers())


def onnx_providers(preference: str) -> list[str | tuple[str, dict[str, Any]]]:
    """onnxruntime execution providers for a device preference, best first.

    Raises
    ------
    ModelError
        A CUDA device was asked for but the installed onnxruntime has no GPU provider.
    """
    kind, index = parse_device(preference)
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    gpu = [p for p in _GPU_PROVIDERS if p in _available_onnx_providers()]
    if kind == "cuda" and not gpu:
        raise ModelError(
            f"device is {preference!r} but onnxruntime has no GPU provider "
            f"(available: {', '.join(_available_onnx_providers())}); install onnxruntime-gpu "
            "or set the device to 'auto' or 'cpu'"
        )
    options = {"device_id": index or 0}
    return [*((p, dict(options)) for p in gpu), "CPUExecutionProvider"]


def describe_device(preference: str) -> dict[str, Any]:
    """What each runtime would use for ``preference`` (shown by ``ainode models list --json``).

    Never raises: an unusable preference is reported in ``error``.
    """
    from node.models.runtime import select_device

    out: dict[str, Any] = {"preference": preference, "torch": None, "onnxruntime": None}
    errors = []
    try:
        out["torch"] = str(select_device(preference))
    except ModelError as exc:
        errors.append(str(exc))
    try:
        out["onnxruntime"] = [p if isinstance(p, str) else p[0] for p in onnx_providers(preference)]
    except (ModelError, ImportError) as exc:
        errors.append(str(exc))
    out["error"] = "; ".join(errors) or None
    return out
