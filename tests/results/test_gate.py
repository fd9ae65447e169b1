"""The gate blocks broken objects with a clear ResultError; deterministic rebuilds."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from node.errors import ResultError
from node.results import build_result_files, build_results, check_results, result_uid
from tests.results.conftest import WHEN, Case


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_gate_accepts_the_built_objects(chest_case: Case) -> None:
    check_results(chest_case.results, chest_case.sources)


def test_gate_blocks_seg_referencing_a_missing_source(chest_case: Case) -> None:
    seg = copy.deepcopy(chest_case.of("SEG")[0])
    item = seg.PerFrameFunctionalGroupsSequence[3].DerivationImageSequence[0]
    item.SourceImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    with pytest.raises(ResultError, match=r"frame 4 references SOP instance 1\.2\.3\.4\.5\.6\.7"):
        check_results([seg], chest_case.sources)


def test_gate_blocks_frame_count_mismatch(chest_case: Case) -> None:
    seg = copy.deepcopy(chest_case.of("SEG")[0])
    del seg.PerFrameFunctionalGroupsSequence[-1]
    with pytest.raises(ResultError, match="per-frame items"):
        check_results([seg], chest_case.sources)


def test_gate_blocks_frame_off_its_source_plane(chest_case: Case) -> None:
    seg = copy.deepcopy(chest_case.of("SEG")[0])
    pos = seg.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    pos.ImagePositionPatient = [float(v) for v in pos.ImagePositionPatient[:2]] + [999.0]
    with pytest.raises(ResultError, match="not on its source image"):
        check_results([seg], chest_case.sources)


def test_gate_blocks_sr_without_its_seg_and_foreign_study(chest_case: Case) -> None:
    (sr,) = chest_case.of("SR")
    with pytest.raises(ResultError, match="not a source instance nor a result of this job"):
        check_results([sr], chest_case.sources)  # the SEG it references is not delivered
    moved = copy.deepcopy(chest_case.of("OT")[0])
    moved.StudyInstanceUID = "1.2.3"
    with pytest.raises(ResultError, match="not in the source study"):
        check_results([moved], chest_case.sources)


def test_gate_blocks_missing_required_attribute_and_bad_pixels(chest_case: Case) -> None:
    sc = copy.deepcopy(chest_case.of("OT")[0])
    del sc.ConversionType
    with pytest.raises(ResultError, match="lacks required attribute.*ConversionType"):
        check_results([sc], chest_case.sources)
    sc = copy.deepcopy(chest_case.of("OT")[0])
    sc.PixelData = sc.PixelData[:-300]
    with pytest.raises(ResultError, match="Pixel Data has"):
        check_results([sc], chest_case.sources)


def test_build_results_raises_when_the_gate_fails(chest_case: Case) -> None:
    # A label map referencing a slice whose source file is not given cannot be written.
    with pytest.raises(ResultError, match="not among the source files"):
        build_results(
            chest_case.prediction,
            chest_case.volume,
            chest_case.sources[:-1],
            job_id="x",
            content_datetime=WHEN,
        )


def test_rebuild_is_byte_identical_and_uids_depend_on_job(chest_case: Case) -> None:
    again = build_results(
        chest_case.prediction,
        chest_case.volume,
        chest_case.sources,
        job_id="job-chest",
        content_datetime=WHEN,
    )
    assert [_bytes(d) for d in again] == [p.read_bytes() for p in chest_case.files]
    other = build_results(
        chest_case.prediction,
        chest_case.volume,
        chest_case.sources,
        job_id="job-other",
        content_datetime=WHEN,
    )
    assert not {d.SOPInstanceUID for d in other} & {d.SOPInstanceUID for d in again}


def test_result_files_are_the_objects_bytes(chest_case: Case) -> None:
    files = build_result_files(
        chest_case.prediction,
        chest_case.volume,
        chest_case.sources,
        job_id="job-chest",
        content_datetime=WHEN,
    )
    assert [f.data for f in files] == [p.read_bytes() for p in chest_case.files]
    assert [f.dataset.SOPInstanceUID for f in files] == [
        d.SOPInstanceUID for d in chest_case.results
    ]


def test_gate_parses_seg_and_sr_back_from_the_given_bytes(chest_case: Case) -> None:
    (seg,) = chest_case.of("SEG")
    (sr,) = chest_case.of("SR")
    good = [_bytes(seg), _bytes(sr)]
    check_results([seg, sr], chest_case.sources, encoded=good)
    broken = pydicom.dcmread(io.BytesIO(good[0]))
    del broken.SegmentSequence[0].SegmentNumber  # highdicom cannot read this back
    with pytest.raises(ResultError, match="does not parse as a Segmentation"):
        check_results([seg, sr], chest_case.sources, encoded=[_bytes(broken), good[1]])
    with pytest.raises(ResultError, match="1 encoded objects given for 2 results"):
        check_results([seg, sr], chest_case.sources, encoded=good[:1])


def test_result_uid_is_a_valid_deterministic_uid() -> None:
    a = result_uid(job_id="j", model_version="1", index=0, role="sop")
    assert a == result_uid(job_id="j", model_version="1", index=0, role="sop")
    assert a != result_uid(job_id="j", model_version="2", index=0, role="sop")
    assert a != result_uid(job_id="j", model_version="1", index=1, role="sop")
    assert a.startswith("2.25.") and len(a) <= 64
    assert pydicom.uid.UID(a).is_valid


def test_files_on_disk_are_readable(chest_case: Case) -> None:
    for path in chest_case.files:
        assert isinstance(path, Path)
        assert pydicom.dcmread(path).SOPInstanceUID


def test_empty_label_map_writes_no_seg(chest_case: Case) -> None:
    from dataclasses import replace

    import numpy as np

    assert chest_case.prediction.label_map is not None
    pred = replace(
        chest_case.prediction,
        label_map=np.zeros_like(chest_case.prediction.label_map),
        heatmaps=(),
        findings=(),
        class_probabilities={},
    )
    out = build_results(
        pred, chest_case.volume, chest_case.sources, job_id="empty", content_datetime=WHEN
    )
    assert [d.Modality for d in out] == ["SR"]  # the report text only
