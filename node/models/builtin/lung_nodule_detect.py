"""``lung-nodule-detect``: lung-nodule candidates, scored per candidate (demo).

Candidates come from two generators on the input grid:

* connected components (26-connected) of the segmentation model's nodule label;
* compact dense structures inside the lungs (above -500 HU, 30-3000 mm^3, not touching a
  nodule component): nodules below about 7 mm, which the 2.5 mm segmentation grid misses.

Each candidate is measured (centre, long-axis diameter, volume) and described by nine features
(size, segmentation probability, shape, density; ``FEATURES``).  A logistic-regression scorer
fitted on training-seed phantoms turns them into the per-nodule score; candidates below the
operating point (chosen on a separate validation set) are dropped.  Scorer and operating point
are read from ``assets/lung-nodule-detect/metrics.json``; without them the score is the highest
nodule probability in the component.

With a prior study (a rule with ``priors``, ``predict_with_prior``) the findings are compared with
the prior's nodules (docs/followup.md, "Tracking"): those of ainode's own SR of the prior, else
found by running this detector on the prior series; the prior is registered to the current
series (``chest-ct-register``) and the nodules matched and measured by ``node.models.tracking``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from node.errors import ModelError
from node.imaging.prior_findings import read_prior_findings
from node.models.base import Model, ModelInfo, OutputKind, Task
from node.models.builtin._common import (
    components_in_box,
    heldout_metrics,
    load_card,
    load_metrics,
    shift_box,
    voxel_to_patient,
)
from node.models.builtin.lung_nodule_followup import compare_with_prior
from node.models.builtin.lung_nodule_seg import (
    MIN_SLICES,
    MORPHOLOGICALLY_ABNORMAL,
    NODULE,
    LungNoduleSegmentation,
    SegmentationOutput,
)
from node.types import (
    NO_PRIOR,
    Code,
    Finding,
    Prediction,
    PriorFinding,
    PriorInput,
    SegmentDescription,
    Volume,
)

__all__ = [
    "FEATURES",
    "CandidateScorer",
    "LungNoduleDetection",
    "NoduleCandidate",
    "PriorRegistration",
    "dense_candidates",
    "find_nodules",
    "lung_side",
]

NAME = "lung-nodule-detect"
VERSION = "1.2.0"
RIGHT_LUNG = Code("3341006", "SCT", "Right lung")
LEFT_LUNG = Code("44029006", "SCT", "Left lung")
MAX_FINDINGS = 50
_DEFAULT_MIN_SCORE = 0.5
_DEFAULT_MIN_VOLUME_MM3 = 15.0
_DENSE_HU = -500.0
_DENSE_MAX_VOLUME_MM3 = 3000.0
_DENSE_MIN_VOLUME_MM3 = 30.0


def lung_side(volume: Volume, xyz: tuple[float, float, float]) -> Code:
    """Left or right lung of a patient point: DICOM patient +x points to the patient's left
    (PS3.3 C.7.6.2.1.1), compared with the volume's middle."""
    mid_x = voxel_to_patient(volume, tuple(np.asarray(volume.voxels.shape) / 2.0))[0]
    return LEFT_LUNG if xyz[0] > mid_x else RIGHT_LUNG


#: Registers a prior series onto the current one: (prior, current) -> 4 x 4 prior patient mm ->
#: current patient mm, and the name of what registered it.
PriorRegistration = Callable[[Volume, Volume], tuple[npt.NDArray[np.float64], str]]

#: Candidate features, in the order the scorer's weights use.
FEATURES = (
    "log_volume_mm3",
    "seg_max_probability",
    "seg_mean_probability",
    "elongation",  # sqrt(smallest / largest principal variance): 1 sphere, ~0 tube
    "flatness",  # sqrt(middle / largest principal variance)
    "sphere_fill",  # volume / volume of the sphere of the long-axis diameter
    "mean_hu_over_1000",
    "inscribed_radius_mm",
    "from_segmentation",
)


@dataclass(frozen=True, slots=True, eq=False)
class NoduleCandidate:
    """One candidate structure, measured on the input grid."""

    mask: npt.NDArray[np.bool_]  # input-grid mask restricted to ``bbox``
    bbox: tuple[slice, slice, slice]
    center_index: tuple[float, float, float]
    score: float
    volume_mm3: float
    diameter_mm: float
    features: tuple[float, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class CandidateScorer:
    """Logistic regression on standardised ``FEATURES``: p = sigmoid(w . (f - mean) / scale + b)."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CandidateScorer:
        """Scorer from its ``metrics.json`` entry."""
        return cls(
            mean=tuple(float(v) for v in data["mean"]),
            scale=tuple(float(v) for v in data["scale"]),
            weights=tuple(float(v) for v in data["weights"]),
            bias=float(data["bias"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The ``metrics.json`` entry."""
        return {
            "features": list(FEATURES),
            "mean": [round(v, 6) for v in self.mean],
            "scale": [round(v, 6) for v in self.scale],
            "weights": [round(v, 6) for v in self.weights],
            "bias": round(self.bias, 6),
        }

    def score(self, features: tuple[float, ...]) -> float:
        """Probability that the candidate is a nodule."""
        z = self.bias + sum(
            w * (f - m) / s
            for w, f, m, s in zip(self.weights, features, self.mean, self.scale, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def _long_axis_mm(points: npt.NDArray[np.float64]) -> float:
    """Largest distance between two points (mm); subsampled above 1500 points."""
    if len(points) < 2:
        return 0.0
    if len(points) > 1500:
        # the extreme points lie on the convex hull; a strided subset of boundary points suffices
        points = points[:: int(np.ceil(len(points) / 1500))]
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max())


def _measure(
    mask: npt.NDArray[np.bool_],
    bbox: tuple[slice, slice, slice],
    *,
    voxels: npt.NDArray[np.floating],
    seg: SegmentationOutput,
    spacing: tuple[float, float, float],
    from_segmentation: bool,
) -> NoduleCandidate:
    """Centre, size and features of one component (``mask`` within ``bbox``)."""
    sp = np.asarray(spacing, dtype=np.float64)
    count = int(mask.sum())
    volume = count * float(np.prod(sp))
    idx = np.argwhere(mask).astype(np.float64) + np.array([s.start for s in bbox])
    center = idx.mean(axis=0)
    model_idx = tuple(
        np.clip(
            np.rint((idx[:, k] - a.offset) / a.step if a.step else 0 * idx[:, k]), 0, a.size - 1
        ).astype(np.int64)
        for k, a in enumerate(seg.grid.axes)
    )
    probs = seg.probabilities[2].numpy()[model_idx]
    eroded = ndimage.binary_erosion(mask)
    boundary = np.argwhere(mask & ~eroded).astype(np.float64) * sp
    diameter = max(_long_axis_mm(boundary), float(sp.min()))
    mm = idx * sp
    cov = np.cov(mm.T) if count > 1 else np.zeros((3, 3))
    cov = cov + np.diag(sp**2 / 12.0)  # a single voxel is a small box, not a point
    ev = np.sort(np.linalg.eigvalsh(cov))
    inscribed = float(ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing).max())
    features = (
        math.log(max(volume, 1e-3)),
        float(probs.max()),
        float(probs.mean()),
        math.sqrt(ev[0] / ev[2]),
        math.sqrt(ev[1] / ev[2]),
        volume / (math.pi / 6.0 * diameter**3),
        float(np.asarray(voxels[bbox], dtype=np.float64)[mask].mean()) / 1000.0,
        inscribed,
        1.0 if from_segmentation else 0.0,
    )
    return NoduleCandidate(
        mask=mask,
        bbox=(bbox[0], bbox[1], bbox[2]),
        center_index=(float(center[0]), float(center[1]), float(center[2])),
        score=float(probs.max()),
        volume_mm3=volume,
        diameter_mm=diameter,
        features=features,
    )


def _components(
    binary: npt.NDArray[np.bool_],
    *,
    spacing: tuple[float, float, float],
    min_volume_mm3: float,
    max_volume_mm3: float = math.inf,
) -> list[tuple[npt.NDArray[np.bool_], tuple[slice, slice, slice]]]:
    """26-connected components of ``binary`` within the volume range, as (mask, bbox) pairs.

    Only the box holding every set voxel is labelled (nodules fill a small part of a CT).
    """
    found = components_in_box(binary)
    if found is None:
        return []
    comps, n, box = found
    voxel_mm3 = float(np.prod(spacing))
    sizes = np.bincount(comps.ravel(), minlength=n + 1) * voxel_mm3
    out = []
    for i, bbox in enumerate(ndimage.find_objects(comps), start=1):
        if bbox is None or not (min_volume_mm3 <= sizes[i] <= max_volume_mm3):
            continue
        out.append((comps[bbox] == i, shift_box(bbox, box)))
    return out


def find_nodules(
    labels: npt.NDArray[np.uint8],
    seg: SegmentationOutput,
    spacing: tuple[float, float, float],
    *,
    min_volume_mm3: float,
    voxels: npt.NDArray[np.floating] | None = None,
) -> list[NoduleCandidate]:
    """Connected components of label 2 with their measurements (highest seg score first).

    Parameters
    ----------
    labels
        Input-grid label map of the segmentation model.
    seg
        The segmentation output (model-grid probabilities and grid mapping) for the scores.
    spacing
        Input voxel spacing (slice, row, column) mm.
    min_volume_mm3
        Components smaller than this are ignored.
    voxels
        Input HU voxels for the density feature (None: label-only features, density 0).

    Returns
    -------
    list[NoduleCandidate]
        Candidates, highest segmentation score first.
    """
    vox = voxels if voxels is not None else np.zeros(labels.shape, dtype=np.float32)
    out = [
        _measure(m, bb, voxels=vox, seg=seg, spacing=spacing, from_segmentation=True)
        for m, bb in _components(labels == 2, spacing=spacing, min_volume_mm3=min_volume_mm3)
    ]
    out.sort(key=lambda c: -c.score)
    return out


def dense_candidates(
    voxels: npt.NDArray[np.floating],
    labels: npt.NDArray[np.uint8],
    seg: SegmentationOutput,
    spacing: tuple[float, float, float],
    *,
    found: list[NoduleCandidate],
    min_volume_mm3: float,
) -> list[NoduleCandidate]:
    """Compact dense structures inside the lungs, away from the candidates already ``found``.

    The lungs are the lung and nodule labels with holes filled per slice (a small nodule the
    segmentation missed may be labelled background).  Catches nodules too small for the
    segmentation grid; vessels come along too, and the scorer's shape features tell them apart.
    """
    lungs = labels > 0
    if not lungs.any():
        return []
    box = ndimage.find_objects(lungs.astype(np.uint8))[0]
    assert box is not None
    inside = np.stack([ndimage.binary_fill_holes(sl) for sl in lungs[box]])
    taken = np.zeros(labels.shape, dtype=bool)
    for c in found:
        taken[c.bbox] |= c.mask
    near = ndimage.binary_dilation(taken[box], iterations=2)
    dense = (np.asarray(voxels[box]) > _DENSE_HU) & inside & ~near
    out = []
    for m, bb in _components(
        dense,
        spacing=spacing,
        min_volume_mm3=max(min_volume_mm3, _DENSE_MIN_VOLUME_MM3),
        max_volume_mm3=_DENSE_MAX_VOLUME_MM3,
    ):
        z, y, x = (slice(s.start + o.start, s.stop + o.start) for s, o in zip(bb, box, strict=True))
        out.append(
            _measure(m, (z, y, x), voxels=voxels, seg=seg, spacing=spacing, from_segmentation=False)
        )
    return out


class LungNoduleDetection(Model):
    """Lung nodules as findings with centre, diameter, volume and score (demo)."""

    #: a rule with ``priors`` calls ``predict_with_prior`` (nodule tracking)
    uses_prior = True

    def __init__(
        self,
        segmentation: LungNoduleSegmentation | None = None,
        *,
        register: PriorRegistration | None = None,
    ) -> None:
        metrics = load_metrics(NAME)
        op = metrics.get("operating_point", {})
        self.min_score = float(op.get("min_score", _DEFAULT_MIN_SCORE))
        self.min_volume_mm3 = float(op.get("min_volume_mm3", _DEFAULT_MIN_VOLUME_MM3))
        scorer = metrics.get("scorer")
        self.scorer: CandidateScorer | None = (
            CandidateScorer.from_json(scorer) if isinstance(scorer, dict) else None
        )
        self.info = ModelInfo(
            name=NAME,
            version=VERSION,
            task=Task.DETECTION,
            outputs=(OutputKind.FINDINGS, OutputKind.LABEL_MAP),
            modalities=("CT",),
            body_parts=("CHEST",),
            dims=(3,),
            min_slices=8,
            max_slice_spacing_mm=10.0,
            orientations=("AXIAL",),
            is_demo=True,
            description="Lung-nodule detection: segmentation + dense-structure candidates, scored",
            card=load_card(NAME),
            metrics=heldout_metrics(NAME),
        )
        self._seg = segmentation or LungNoduleSegmentation()
        self._register = register or self._register_with_model
        self._registration: Any = None  # ChestCtRegistration, built on first use

    def accepts(self, volume: Volume) -> str | None:
        """None for a CT series of at least ``MIN_SLICES`` slices, else the reason."""
        return self._seg.accepts(volume)

    def candidates(self, volume: Volume) -> tuple[list[NoduleCandidate], dict[str, float]]:
        """All scored candidates above the minimum volume (no score cut), and the timings.

        A series of fewer than ``MIN_SLICES`` slices has no 3D nodules to measure: no candidates.
        """
        if volume.voxels.shape[0] < MIN_SLICES:
            return [], {}
        seg = self._seg.segment(volume)
        t0 = time.perf_counter()
        labels = self._seg.input_labels(volume, seg)
        voxels = np.asarray(volume.voxels)
        cands = find_nodules(
            labels, seg, volume.spacing, min_volume_mm3=self.min_volume_mm3, voxels=voxels
        )
        if self.scorer is not None:
            scorer = self.scorer
            cands += dense_candidates(
                voxels,
                labels,
                seg,
                volume.spacing,
                found=cands,
                min_volume_mm3=self.min_volume_mm3,
            )
            cands = [
                NoduleCandidate(
                    mask=c.mask,
                    bbox=c.bbox,
                    center_index=c.center_index,
                    score=scorer.score(c.features),
                    volume_mm3=c.volume_mm3,
                    diameter_mm=c.diameter_mm,
                    features=c.features,
                )
                for c in cands
            ]
            cands.sort(key=lambda c: -c.score)
        timings = dict(seg.timings_seconds)
        timings["postprocess"] = time.perf_counter() - t0
        return cands, timings

    def findings(
        self, volume: Volume
    ) -> tuple[list[Finding], list[NoduleCandidate], dict[str, float]]:
        """Findings at the operating point, the matching candidates and the timings."""
        cands, timings = self.candidates(volume)
        kept = [c for c in cands if c.score >= self.min_score][:MAX_FINDINGS]
        mid_x = voxel_to_patient(volume, tuple(np.asarray(volume.voxels.shape) / 2.0))[0]
        found = []
        for n, c in enumerate(kept, start=1):
            xyz = voxel_to_patient(volume, c.center_index)
            found.append(
                Finding(
                    tracking_id=f"nodule-{n}",
                    finding_type=NODULE,
                    center_xyz=xyz,
                    center_voxel=(
                        int(round(c.center_index[0])),
                        int(round(c.center_index[1])),
                        int(round(c.center_index[2])),
                    ),
                    score=round(c.score, 4),
                    diameter_mm=round(c.diameter_mm, 2),
                    volume_mm3=round(c.volume_mm3, 1),
                    segment_label=n,
                    # DICOM patient +x points to the patient's left (PS3.3 C.7.6.2.1.1)
                    finding_site=LEFT_LUNG if xyz[0] > mid_x else RIGHT_LUNG,
                )
            )
        return found, kept, timings

    def predict(self, volume: Volume) -> Prediction:
        """Detect nodules; the label map holds one label per finding (label n = ``nodule-n``)."""
        found, kept, timings = self.findings(volume)
        label_map = np.zeros(volume.voxels.shape, dtype=np.uint8)
        for n, c in enumerate(kept, start=1):
            label_map[c.bbox][c.mask] = n
        segments = tuple(
            SegmentDescription(
                label=f.segment_label or 0,
                name=f"Nodule {f.segment_label}",
                category=MORPHOLOGICALLY_ABNORMAL,
                property_type=NODULE,
                color_rgb=(216, 101, 79),
                tracking_id=f.tracking_id,
            )
            for f in found
        )
        return Prediction(
            model_name=NAME,
            model_version=VERSION,
            task=Task.DETECTION.value,
            is_demo=True,
            label_map=label_map,
            segments=segments,
            findings=tuple(found),
            timings_seconds=timings,
        )

    def predict_with_prior(
        self, volume: Volume, prior: PriorInput | None, prior_reason: str | None
    ) -> Prediction:
        """``predict``, with each finding compared with the prior study's nodules.

        Without a prior the prediction is ``predict``'s plus ``prior_note`` (``prior_reason``:
        "no prior available" or "prior could not be retrieved: ...").
        """
        prediction = self.predict(volume)
        findings, resolved, note = self.compare(volume, prediction.findings, prior, prior_reason)
        uids = {f.segment_label: f.tracking_uid for f in findings if f.tracking_uid}
        segments = tuple(replace(s, tracking_uid=uids.get(s.label)) for s in prediction.segments)
        return replace(
            prediction, findings=findings, segments=segments, resolved=resolved, prior_note=note
        )

    def prior_findings(self, prior: PriorInput) -> tuple[tuple[PriorFinding, ...], str]:
        """The prior's nodules and where they come from: ainode's own SR of the prior study
        (``prior.result_files``), else this detector run on the prior series."""
        read = read_prior_findings(prior.result_files, prior.volume, model_name=NAME)
        if read is not None:
            return read, "ainode's SR of the prior study"
        found, _, _ = self.findings(prior.volume)
        return tuple(
            PriorFinding(
                tracking_id=f.tracking_id,
                center_xyz=f.center_xyz,
                diameter_mm=f.diameter_mm,
                volume_mm3=f.volume_mm3,
            )
            for f in found
        ), f"{NAME} {VERSION} run on the prior series"

    def compare(
        self,
        volume: Volume,
        findings: Sequence[Finding],
        prior: PriorInput | None,
        prior_reason: str | None,
    ) -> tuple[tuple[Finding, ...], tuple[Finding, ...], str]:
        """Findings with their tracking, the resolved prior nodules and the prior statement.

        Parameters
        ----------
        volume
            The current series.
        findings
            Its nodules (this detector's, or a model's that uses them).
        prior
            The prior series (None: none came).
        prior_reason
            Why none came (``NO_PRIOR`` or "prior could not be retrieved: ...").

        Returns
        -------
        tuple
            The findings (``tracking`` set when compared), the resolved prior nodules inside
            the current volume, and the sentence the result states about the prior.
        """
        if prior is None:
            return tuple(findings), (), prior_reason or NO_PRIOR
        try:
            matrix, registered_by = self._register(prior.volume, volume)
        except ModelError as exc:
            return tuple(findings), (), f"prior not compared: {exc}"
        prior_nodules, source = self.prior_findings(prior)
        return compare_with_prior(
            volume,
            findings,
            prior,
            prior_nodules=prior_nodules,
            prior_to_current=matrix,
            described=f"prior nodules from {source}; registered by {registered_by}",
            lung_side=lung_side,
        )

    def _register_with_model(
        self, prior: Volume, current: Volume
    ) -> tuple[npt.NDArray[np.float64], str]:
        """prior -> current by the ``chest-ct-register`` demo model (docs/followup.md)."""
        if self._registration is None:
            from node.models.builtin.ct_register import ChestCtRegistration

            self._registration = ChestCtRegistration()
        registration = self._registration.register(prior, current)
        name = f"{registration.model_name} {registration.model_version}"
        return np.asarray(registration.moving_to_fixed, dtype=np.float64), name
