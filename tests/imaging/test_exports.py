"""The public names of node.imaging and what dicom_files picks up."""

from __future__ import annotations

import shutil
from pathlib import Path

import node.imaging


def test_all_names_resolve() -> None:
    assert sorted(node.imaging.__all__) == sorted(
        [
            "HU_WINDOWS",
            "dicom_files",
            "load_volume",
            "percentile_scale",
            "resample_array",
            "resample_volume",
            "resampled_shape",
            "window",
            "zscore",
        ]
    )
    for name in node.imaging.__all__:
        assert getattr(node.imaging, name) is not None


def test_dicom_files_expands_folders(corpus: Path, tmp_path: Path) -> None:
    src = corpus / "ct/abdomen-liver-ct-ge-lightspeed-3sl"
    shutil.copytree(src, tmp_path / "a" / "b")
    (tmp_path / "a" / "DICOMDIR").write_bytes(b"x")
    (tmp_path / "a" / ".hidden").write_bytes(b"x")
    single = tmp_path / "single.dcm"
    shutil.copy(next(src.iterdir()), single)
    files = node.imaging.dicom_files([tmp_path / "a", single])
    assert [f.name for f in files] == sorted(p.name for p in src.iterdir()) + ["single.dcm"]
