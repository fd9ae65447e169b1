"""What a model is to ainode: identity, what it accepts, and ``predict(volume) -> Prediction``.

Models never see pydicom: ``node/imaging`` gives them a ``Volume`` (voxels + geometry + source
references) and they return a ``Prediction`` (node/types.py).
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field

from node.types import Prediction, Volume

__all__ = ["Model", "ModelInfo", "OutputKind", "Task"]


class Task(enum.StrEnum):
    """What a model does (the seed's deep-learning method families)."""

    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"
    DETECTION = "detection"
    ENHANCEMENT = "enhancement"
    REPORT = "report"


class OutputKind(enum.StrEnum):
    """Which ``Prediction`` fields a model fills (results choose SEG/SR/SC from these)."""

    LABEL_MAP = "label_map"
    PROBABILITIES = "probabilities"
    FINDINGS = "findings"
    HEATMAP = "heatmap"
    DERIVED_IMAGE = "derived_image"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model's identity and contract, shown by ``ainode models list`` and the console."""

    name: str
    version: str
    task: Task
    outputs: tuple[OutputKind, ...]
    modalities: tuple[str, ...] = ()  # empty = any
    body_parts: tuple[str, ...] = ()  # canonical body parts (dicom_rules); empty = any
    dims: tuple[int, ...] = (3,)  # 2 and/or 3
    is_demo: bool = False
    description: str = ""
    card: str = ""  # MODEL_CARD.md text
    source: str = "builtin"  # builtin | entry-point | bundle | torchscript | onnx
    metrics: dict[str, float] = field(default_factory=dict)
    device_uid: str | None = None  # set by the registry on load (node/models/identity.py)


class Model(abc.ABC):
    """Base class of every model the registry can run."""

    info: ModelInfo

    def accepts(self, volume: Volume) -> str | None:
        """None when this model can run on ``volume``; otherwise the reason it cannot."""
        info = self.info
        if info.modalities and (volume.modality or "").upper() not in info.modalities:
            return f"modality {volume.modality!r} not in {list(info.modalities)}"
        dim = 3 if volume.is_3d else 2
        if dim not in info.dims:
            return f"model takes {'/'.join(map(str, info.dims))}D input, series is {dim}D"
        return None

    @abc.abstractmethod
    def predict(self, volume: Volume) -> Prediction:
        """Run the model on one volume."""
