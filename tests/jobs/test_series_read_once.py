"""The job pipeline parses each source header once for both the Volume and the result sources."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from pydicom.valuerep import PersonName

from node.imaging import load_volume
from node.imaging.decode import read_before_pixels
from node.jobs.pipeline import _read_series
from node.results.sources import load_sources
from tests.ingest.synthetic import write_ct_series


def test_read_series_matches_separate_reads(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "ct", 12, size=32, seed=4)
    volume, sources = _read_series(paths)
    alone = load_volume(paths)
    np.testing.assert_array_equal(volume.voxels, alone.voxels)
    assert volume.sources == alone.sources and volume.spacing == alone.spacing
    assert set(sources.by_uid) == set(load_sources(paths).by_uid)
    assert all("PixelData" not in ds for ds in sources.by_uid.values())


def test_given_headers_are_used_not_read_again(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "ct", 4, size=16, seed=5)
    read = {p: read_before_pixels(p) for p in paths}
    shifted = {p: (copy.deepcopy(ds), off) for p, (ds, off) in read.items()}
    for ds, _ in shifted.values():
        ds.RescaleIntercept = int(ds.RescaleIntercept) + 100
        ds.PatientName = "Given^Header"
    volume = load_volume(paths, read=shifted)
    np.testing.assert_array_equal(volume.voxels, load_volume(paths).voxels + 100)
    sources = load_sources(paths, datasets={p: ds for p, (ds, _) in shifted.items()})
    assert {ds.PatientName for ds in sources.by_uid.values()} == {PersonName("Given^Header")}
