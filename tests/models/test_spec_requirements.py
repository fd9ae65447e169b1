"""A model spec says what the model can read; the router's check (ModelInfo.refusal) uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.errors import ModelError
from node.models.network import read_spec, spec_info
from node.types import NotApplicable, SeriesVolume


def _volume(**kw: object) -> SeriesVolume:
    base: dict[str, object] = dict(
        volume_id="1.2", series_uid="1.2", label=(), modality="MR", body_part=None,
        orientation="AXIAL", rows=64, columns=64, slices=20, pixel_spacing=(1.0, 1.0),
        slice_spacing=5.0, slice_thickness=5.0,
    )  # fmt: skip
    base.update(kw)
    return SeriesVolume(**base)  # type: ignore[arg-type]


def test_spec_requirements_reach_the_refusal(tmp_path: Path) -> None:
    spec_file = tmp_path / "brain.yaml"
    spec_file.write_text(
        "name: brain-seg\nmodalities: [MR]\ndims: [3]\nmin_slices: 16\nmax_slices: 300\n"
        "max_slice_spacing_mm: 3\norientations: [AXIAL, CORONAL]\n"
    )
    info = spec_info(read_spec(spec_file), source="torchscript")
    assert info.refusal(_volume(slices=20, slice_spacing=2.0)) is None
    assert info.refusal(_volume(slice_spacing=5.0))[0] is NotApplicable.SLICE_SPACING  # type: ignore[index]
    assert info.refusal(_volume(slices=8, slice_spacing=2.0))[0] is NotApplicable.SLICES  # type: ignore[index]
    sag = _volume(orientation="SAGITTAL", slice_spacing=2.0)
    assert info.refusal(sag)[0] is NotApplicable.ORIENTATION  # type: ignore[index]
    ct = _volume(modality="CT", slice_spacing=2.0)
    assert info.refusal(ct)[0] is NotApplicable.MODALITY  # type: ignore[index]
    scout = _volume(is_localizer=True, localizer_reason="ImageType LOCALIZER", slice_spacing=2.0)
    assert info.refusal(scout)[0] is NotApplicable.LOCALIZER  # type: ignore[index]


def test_bad_requirement_is_a_precise_error(tmp_path: Path) -> None:
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text("name: bad\norientations: [AXAIL]\n")
    with pytest.raises(ModelError, match="orientations"):
        read_spec(spec_file)
