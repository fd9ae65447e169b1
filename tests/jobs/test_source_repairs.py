"""A job on a series with non-conformant headers records what result building repaired."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from node.jobs.pipeline import run_series
from node.samples.writers import write_ct_series
from node.types import Job
from tests.models.builders import write_body_model


def test_run_series_records_source_repairs(tmp_path: Path) -> None:
    write_body_model(tmp_path / "models", name="tiny-body", roi="[8, 32, 32]")
    voxels = np.full((8, 32, 32), -1000.0, dtype=np.float32)
    voxels[2:6, 8:24, 8:24] = 40.0  # a "body" the model labels
    paths = write_ct_series(voxels, spacing=(2.5, 1.0, 1.0), out_dir=tmp_path / "ct")
    for path in paths:
        ds = pydicom.dcmread(path)
        item = Dataset()
        item.CodeValue = "CT01"
        item.CodingSchemeDesignator = "99LOCAL"  # CodeMeaning (Type 1) missing
        ds.ProcedureCodeSequence = DicomSequence([item])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.StudyDescription = "D" * 80  # LO: at most 64
        ds.save_as(path, enforce_file_format=True)
    job = Job(
        job_id="repairs-1",
        study_uid=str(ds.StudyInstanceUID),
        series_uids=(str(ds.SeriesInstanceUID),),
        model="tiny-body",
        rule="ct",
    )
    out = run_series(
        job,
        paths,
        context={"model_paths": [str(tmp_path / "models")], "device": "cpu"},
        out_dir=tmp_path / "results",
        relative_to=tmp_path,
    )
    repairs = out["source_repairs"]
    assert "ProcedureCodeSequence: dropped item 1 lacking CodeMeaning" in repairs
    assert any(r.startswith("StudyDescription:") and r.endswith("dropped") for r in repairs)
    written = [pydicom.dcmread(tmp_path / o.path) for o in out["objects"]]
    assert written and all("ProcedureCodeSequence" not in d for d in written)
