"""What a model is to ainode: identity, what it accepts, and ``predict(volume) -> Prediction``.

Models never see pydicom: ``node/imaging`` gives them a ``Volume`` (voxels + geometry + source
references) and they return a ``Prediction`` (node/types.py).
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field

from node.types import NotApplicable, Prediction, PriorInput, SeriesVolume, Volume

__all__ = ["Model", "ModelInfo", "OutputKind", "Task"]


class Task(enum.StrEnum):
    """What a model does (the seed's deep-learning method families)."""

    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"
    DETECTION = "detection"
    ENHANCEMENT = "enhancement"
    REPORT = "report"
    REGISTRATION = "registration"


class OutputKind(enum.StrEnum):
    """Which ``Prediction`` fields a model fills (results choose SEG/SR/SC from these)."""

    LABEL_MAP = "label_map"
    PROBABILITIES = "probabilities"
    FINDINGS = "findings"
    HEATMAP = "heatmap"
    DERIVED_IMAGE = "derived_image"
    TEXT = "text"
    REGISTRATION = "registration"


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
    # what the model can read, checked by the router on headers before a job exists (issue 24)
    min_slices: int = 1
    max_slices: int | None = None
    max_slice_spacing_mm: float | None = None
    orientations: tuple[str, ...] = ()  # AXIAL, CORONAL, SAGITTAL, OBLIQUE; empty = any
    accepts_localizers: bool = False
    accepts_filled_gaps: bool = True  # small gaps filled by interpolation (node/imaging/split)

    def refusal(self, volume: SeriesVolume) -> tuple[NotApplicable, str] | None:
        """Why this model cannot read ``volume`` (reason and a sentence), or None when it can.

        Checked on headers only (``node.imaging.split``), so a series the model cannot read
        never becomes a job.
        """
        modality = (volume.modality or "").upper()
        if self.modalities and modality not in self.modalities:
            return NotApplicable.MODALITY, (
                f"modality {volume.modality!r} not in {list(self.modalities)}"
            )
        if volume.is_localizer and not self.accepts_localizers:
            return NotApplicable.LOCALIZER, f"localizer ({volume.localizer_reason})"
        if volume.problem is not None:
            return NotApplicable.GEOMETRY, volume.problem
        if volume.filled_slices and not self.accepts_filled_gaps:
            return NotApplicable.GEOMETRY, f"{volume.filled_slices} missing slice(s) filled"
        dim = 3 if volume.is_3d else 2
        if dim not in self.dims:
            return NotApplicable.DIMENSIONS, (
                f"model takes {'/'.join(map(str, sorted(self.dims)))}D input, volume is {dim}D "
                f"({volume.slices} slice{'s' if volume.slices != 1 else ''})"
            )
        if dim == 3 and volume.slices < self.min_slices:
            return NotApplicable.SLICES, (
                f"{volume.slices} slices, the model needs at least {self.min_slices}"
            )
        if self.max_slices is not None and volume.slices > self.max_slices:
            return NotApplicable.SLICES, (
                f"{volume.slices} slices, the model reads at most {self.max_slices}"
            )
        if (
            dim == 3
            and self.max_slice_spacing_mm is not None
            and volume.slice_spacing is not None
            and volume.slice_spacing > self.max_slice_spacing_mm + 1e-6
        ):
            return NotApplicable.SLICE_SPACING, (
                f"slices {volume.slice_spacing:g} mm apart, the model reads at most "
                f"{self.max_slice_spacing_mm:g} mm"
            )
        if self.orientations and volume.orientation not in self.orientations:
            return NotApplicable.ORIENTATION, (
                f"{volume.orientation} slices, the model reads {list(self.orientations)}"
            )
        return None


class Model(abc.ABC):
    """Base class of every model the registry can run."""

    info: ModelInfo
    #: True: the job of a rule with ``priors`` calls ``predict_with_prior`` (docs/followup.md).
    uses_prior: bool = False

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

    def predict_with_prior(
        self, volume: Volume, prior: PriorInput | None, prior_reason: str | None
    ) -> Prediction:
        """Run the model on ``volume`` with the newest fetched prior series (``uses_prior``).

        ``prior`` is None when the job's rule asked for priors and none came; ``prior_reason``
        then says why (``node.types.NO_PRIOR`` or ``"prior could not be retrieved: ..."``), for
        the result to state.  The default ignores the prior.
        """
        return self.predict(volume)
