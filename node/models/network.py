"""A torch network run as a ``Model``, described by a small YAML spec (TorchScript sidecar or a
bundle's ``ainode.yaml``).

The spec says what the network accepts and how to feed it; the pipeline is fixed:
``Volume`` -> float32 -> resample to ``spacing`` -> normalise -> (1, 1, *spatial) tensor ->
sliding-window (``roi_size``) or whole-image forward -> segmentation: argmax over channels
(one channel: logit > 0), resampled back onto the source grid (nearest); classification:
softmax over the spatially averaged logits -> class probabilities.

Example sidecar (``tiny.yaml`` next to ``tiny.ts``)::

    name: tiny-lung
    version: "1.0"
    task: segmentation
    modalities: [CT]
    body_parts: [CHEST]
    dims: [3]
    spacing: [2.0, 2.0, 2.0]
    normalise: {kind: window, center: -600, width: 1500}
    roi_size: [64, 64, 64]
    labels:
      1: {name: Lung, category: [91723000, SCT, Anatomical Structure],
          type: [39607008, SCT, Lung]}
"""

from __future__ import annotations

import contextlib
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from node.errors import ModelError
from node.imaging.normalise import percentile_scale, window, zscore
from node.imaging.resample import resample_array
from node.models.anatomy import canonical_body_parts
from node.models.base import Model, ModelInfo, OutputKind, Task
from node.models.runtime import sliding_window, stage_timer
from node.types import Code, Prediction, SegmentDescription, Volume

__all__ = ["LabelSpec", "ModelSpec", "NetworkModel", "NormaliseSpec", "read_spec"]

NetworkLoader = Callable[[torch.device], Callable[[torch.Tensor], torch.Tensor]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NormaliseSpec(_Strict):
    """How voxels are scaled before the network (see node.imaging.normalise)."""

    kind: Literal["none", "window", "zscore", "percentile"] = "none"
    center: float = 0.0
    width: float = Field(default=1.0, gt=0)
    low: float = 0.5
    high: float = 99.5


class LabelSpec(_Strict):
    """One output label of a segmentation network (PS3.3 C.8.20.2 segment codes)."""

    name: str
    category: tuple[str, str, str] = ("91723000", "SCT", "Anatomical Structure")
    type: tuple[str, str, str] = ("85756007", "SCT", "Tissue")
    color: tuple[int, int, int] = (255, 0, 0)


class ModelSpec(_Strict):
    """The YAML contract of a network model; unknown keys are errors."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str = "0"
    task: Task = Task.SEGMENTATION
    description: str = ""
    file: str | None = None  # TorchScript sidecars: the network file, default <stem>.ts/.pt
    card: str | None = None  # markdown file, relative to the spec
    is_demo: bool = False
    modalities: list[str] = Field(default_factory=list)
    body_parts: list[str] = Field(default_factory=list)
    dims: list[Literal[2, 3]] = Field(default_factory=lambda: [3])  # type: ignore[arg-type]  # pydantic validates the default
    spacing: list[float] | None = None
    normalise: NormaliseSpec = Field(default_factory=NormaliseSpec)
    roi_size: list[int] | None = None
    overlap: float = Field(default=0.25, ge=0, lt=1)
    labels: dict[int, LabelSpec] = Field(default_factory=dict)
    classes: list[str] = Field(default_factory=list)
    #: detection bundles: also write the boxes as a SEG (one segment per box) beside the SR
    box_segments: bool = False
    # what the model can read, checked by the router before a job exists (issue 24)
    min_slices: int = Field(default=1, ge=1)
    max_slices: int | None = Field(default=None, ge=1)
    max_slice_spacing_mm: float | None = Field(default=None, gt=0)
    orientations: list[Literal["AXIAL", "CORONAL", "SAGITTAL", "OBLIQUE"]] = Field(
        default_factory=list
    )
    accepts_localizers: bool = False
    accepts_filled_gaps: bool = True


def read_spec(path: Path, *, defaults: dict[str, Any] | None = None) -> ModelSpec:
    """Read and validate a model spec YAML file (``defaults`` fill keys the file leaves out).

    Raises
    ------
    ModelError
        The file cannot be read, is not YAML, or breaks the schema (message gives the key).
    """
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except (OSError, YAMLError) as exc:
        raise ModelError(f"{path}: cannot read model spec: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ModelError(f"{path}: a model spec must be a mapping of keys")
    merged = {**(defaults or {}), **data}
    try:
        return ModelSpec.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = f"unknown key '{key}'" if err["type"] == "extra_forbidden" else f"{key}: {err['msg']}"
        raise ModelError(f"{path}: {msg}") from exc


def _outputs(task: Task) -> tuple[OutputKind, ...]:
    if task is Task.SEGMENTATION:
        return (OutputKind.LABEL_MAP,)
    if task is Task.CLASSIFICATION:
        return (OutputKind.PROBABILITIES,)
    raise ModelError(
        f"task {task.value!r} needs its own Model class; specs support "
        "segmentation and classification"
    )


def spec_info(spec: ModelSpec, *, source: str, card: str = "") -> ModelInfo:
    """The ``ModelInfo`` that ``ainode models list`` shows for a spec."""
    return ModelInfo(
        name=spec.name,
        version=spec.version,
        task=spec.task,
        outputs=_outputs(spec.task),
        modalities=tuple(m.upper() for m in spec.modalities),
        body_parts=canonical_body_parts(spec.body_parts, where=f"model {spec.name!r}"),
        dims=tuple(spec.dims),
        is_demo=spec.is_demo,
        description=spec.description,
        card=card,
        source=source,
        min_slices=spec.min_slices,
        max_slices=spec.max_slices,
        max_slice_spacing_mm=spec.max_slice_spacing_mm,
        orientations=tuple(spec.orientations),
        accepts_localizers=spec.accepts_localizers,
        accepts_filled_gaps=spec.accepts_filled_gaps,
    )


class NetworkModel(Model):
    """Runs a torch network per its ``ModelSpec``; the network is loaded on first use."""

    def __init__(
        self, info: ModelInfo, spec: ModelSpec, loader: NetworkLoader, *, device: torch.device
    ) -> None:
        self.info = info
        self.spec = spec
        self.device = device
        self._loader = loader
        self._network: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._lock = threading.Lock()

    def load(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Load the network now (otherwise the first ``predict`` does)."""
        with self._lock:
            if self._network is None:
                try:
                    network = self._loader(self.device)
                except ModelError:
                    raise
                except pickle.UnpicklingError as exc:
                    # torch.load(weights_only=True) met a pickle that wants to run code
                    raise ModelError(
                        f"model {self.info.name!r} refused: its weights file is not a plain "
                        f"state dict ({exc.__class__.__name__}); only tensors are loaded"
                    ) from exc
                except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
                    raise ModelError(f"model {self.info.name!r} failed to load: {exc}") from exc
                if isinstance(network, torch.nn.Module):
                    with contextlib.suppress(NotImplementedError):  # exported programs: no eval()
                        network.eval()
                self._network = network
            return self._network

    def _prepare(self, volume: Volume) -> tuple[npt.NDArray[np.float32], tuple[float, ...]]:
        spec = self.spec
        data = volume.voxels
        spacing: tuple[float, ...] = volume.spacing
        if not volume.is_3d:
            data, spacing = data[0], volume.spacing[1:]
        if spec.spacing is not None:
            target = tuple(spec.spacing[-data.ndim :])
            data = resample_array(data, spacing, target, order=1)  # float32 out
            spacing = target
        data = data.astype(np.float32, copy=False)
        norm = spec.normalise
        if norm.kind == "window":
            data = window(data, norm.center, norm.width)
        elif norm.kind == "zscore":
            data = zscore(data)
        elif norm.kind == "percentile":
            data = percentile_scale(data, low=norm.low, high=norm.high)
        return np.ascontiguousarray(data, dtype=np.float32), spacing

    def predict(self, volume: Volume) -> Prediction:
        """Run the network on ``volume``, timing load (1st call), pre, forward and post.

        Raises
        ------
        ModelError
            The volume is not accepted, or the network failed to load or to run.
        """
        reason = self.accepts(volume)
        if reason is not None:
            raise ModelError(f"model {self.info.name!r} cannot run on this series: {reason}")
        timings: dict[str, float] = {}
        if self._network is None:
            with stage_timer(timings, "load"):
                self.load()
        network = self.load()
        with stage_timer(timings, "preprocess"):
            data, model_spacing = self._prepare(volume)
            image = torch.from_numpy(data)[None, None]
        with stage_timer(timings, "forward"):
            try:
                logits = sliding_window(
                    network,
                    image,
                    roi_size=self.spec.roi_size[-data.ndim :] if self.spec.roi_size else None,
                    overlap=self.spec.overlap,
                    device=self.device,
                )
            except RuntimeError as exc:
                raise ModelError(
                    f"model {self.info.name!r} failed while predicting: {exc}"
                ) from exc
        with stage_timer(timings, "postprocess"):
            prediction = self._postprocess(volume, logits, model_spacing, timings)
        return prediction

    def _postprocess(
        self,
        volume: Volume,
        logits: torch.Tensor,
        model_spacing: tuple[float, ...],
        timings: dict[str, float],
    ) -> Prediction:
        spec = self.spec
        common: dict[str, Any] = {
            "model_name": self.info.name,
            "model_version": self.info.version,
            "task": spec.task.value,
            "is_demo": spec.is_demo,
            "timings_seconds": timings,
        }
        if spec.task is Task.CLASSIFICATION:
            flat = logits.reshape(logits.shape[0], logits.shape[1], -1).mean(dim=2)[0]
            probs = torch.softmax(flat.float(), dim=0).cpu().numpy()
            names = spec.classes or [str(i) for i in range(len(probs))]
            if len(names) != len(probs):
                raise ModelError(
                    f"model {self.info.name!r} gives {len(probs)} outputs for {len(names)} classes"
                )
            return Prediction(
                **common,
                class_probabilities={n: float(p) for n, p in zip(names, probs, strict=True)},
            )
        if logits.shape[1] == 1:  # one-channel (sigmoid) network: label 1 where the logit > 0
            labels = (logits[0, 0] > 0).to(torch.uint8).cpu().numpy()
        else:
            labels = torch.argmax(logits[0], dim=0).to(torch.uint8).cpu().numpy()
        source_spacing = volume.spacing if volume.is_3d else volume.spacing[1:]
        target_shape = volume.voxels.shape if volume.is_3d else volume.voxels.shape[1:]
        if labels.shape != target_shape:
            labels = resample_array(
                labels, model_spacing, source_spacing, shape=target_shape, order=0
            )
        label_map = labels.reshape(volume.voxels.shape).astype(np.uint8, copy=False)
        segments = tuple(
            SegmentDescription(
                label=value,
                name=label.name,
                category=Code(*label.category),
                property_type=Code(*label.type),
                color_rgb=label.color,
            )
            for value, label in sorted(spec.labels.items())
        )
        return Prediction(**common, label_map=label_map, segments=segments)
