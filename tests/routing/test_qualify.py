"""Which volume a model gets, or why it gets none (headers only, before any job)."""

from __future__ import annotations

from pathlib import Path

from dicom_rules import VolumeSelect
from node.imaging.split import split_series
from node.models.base import ModelInfo, OutputKind, Task
from node.routing.qualify import choose_volume
from node.types import NotApplicable
from tests.imaging.synthetic import constructed_series, write_mr_frames


def _info(**kw: object) -> ModelInfo:
    return ModelInfo(
        name="m",
        version="1",
        task=Task.SEGMENTATION,
        outputs=(OutputKind.LABEL_MAP,),
        **kw,  # type: ignore[arg-type]
    )


def _split(tmp_path: Path, name: str, modality: str = "MR"):  # type: ignore[no-untyped-def]
    return split_series(
        write_mr_frames(tmp_path / name, constructed_series()[name], modality=modality)
    )


def test_mr_never_reaches_a_ct_only_model(tmp_path: Path) -> None:
    split = _split(tmp_path, "plain-stack")
    q = choose_volume(split.volumes, refusal=_info(modalities=("CT",)).refusal)
    assert (q.volume_id, q.reason) == (None, NotApplicable.MODALITY)
    assert "modality 'MR' not in ['CT']" in (q.detail or "")


def test_single_slice_is_not_applicable_to_a_3d_model(corpus: Path) -> None:
    split = split_series([corpus / "ct" / "single-slices" / "CT_small.dcm"])
    q = choose_volume(split.volumes, refusal=_info(modalities=("CT",), dims=(3,)).refusal)
    assert q.reason is NotApplicable.DIMENSIONS


def test_survey_is_a_localizer_even_without_image_type(tmp_path: Path) -> None:
    split = _split(tmp_path, "three-plane-survey")
    q = choose_volume(split.volumes, refusal=_info(dims=(3, 2)).refusal)
    assert q.reason is NotApplicable.LOCALIZER


def test_select_echo_and_default_order(tmp_path: Path) -> None:
    split = _split(tmp_path, "multi-echo")
    refusal = _info(modalities=("MR",)).refusal
    assert choose_volume(split.volumes, refusal=refusal).volume_id.endswith("/echo=1")  # type: ignore[union-attr]
    q = choose_volume(split.volumes, select=VolumeSelect(echo=2), refusal=refusal)
    assert q.volume_id is not None and q.volume_id.endswith("/echo=2")
    none = choose_volume(split.volumes, select=VolumeSelect(orientation=("SAGITTAL",)))
    assert none.reason is NotApplicable.NO_VOLUME


def test_missing_slices_and_min_slices(tmp_path: Path) -> None:
    gap = _split(tmp_path, "missing-slices")
    q = choose_volume(gap.volumes, refusal=_info().refusal)
    assert q.reason is NotApplicable.GEOMETRY and "missing slices" in (q.detail or "")
    small = _split(tmp_path, "time-series")  # 5 slices per volume
    q = choose_volume(small.volumes, refusal=_info(min_slices=8).refusal)
    assert q.reason is NotApplicable.SLICES


def test_undecodable_instance_named_unless_partial_allowed(tmp_path: Path, corpus: Path) -> None:
    split = _split(tmp_path, "plain-stack")
    dropped = [("1.2.3.4", "Pixel Data holds 10 bytes where the header needs 512")]
    refusal = _info().refusal
    q = choose_volume(split.volumes, dropped=dropped, refusal=refusal)
    assert q.reason is NotApplicable.UNDECODABLE and "instance 1.2.3.4" in (q.detail or "")
    q = choose_volume(
        split.volumes, dropped=dropped, select=VolumeSelect(partial=True), refusal=refusal
    )
    assert q.volume_id is not None and q.dropped == (f"1.2.3.4: {dropped[0][1]}",)
