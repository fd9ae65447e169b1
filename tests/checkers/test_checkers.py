"""The project's own checkers (tools/checkers) pass good objects and catch broken ones.

Good: the dcmqi liver SEG over its three CT slices (public, in the corpus).  Broken on purpose:
that SEG without segment labels and with 1 of its 3 per-frame items; a SEG pointing at a slice
that does not exist; highdicom's TID 1500 SR without its SCOORD or without its tracking UID (both
crash OHIF 3.13.2); an SR with a broken content tree.  Real findings in public files: PixelMed's
wrong-relationship errors in highdicom's sr_document.dcm, dcmqi's volumetric-only SR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.conftest import INSTALL_CHECKERS

LIVER_CT = "ct/abdomen-liver-ct-ge-lightspeed-3sl"
LIVER_SEG = "reference-results/dcmqi-liver-seg/liver.dcm"
HD = "reference-results/highdicom"


def run(
    tools: Path, name: str, *args: object, env: dict[str, str] | None = None
) -> tuple[int, str]:
    proc = subprocess.run(
        [str(tools / name), *map(str, args)], capture_output=True, text=True, timeout=300, env=env
    )
    return proc.returncode, proc.stdout + proc.stderr


def dcmjs_reports(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def measurement_group(sr: Dataset) -> Dataset:
    container = next(
        i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"
    )
    return container.ContentSequence[0]


@pytest.mark.slow
def test_good_seg_passes_every_checker(checker_tools: Path, corpus: Path) -> None:
    seg, sources = corpus / LIVER_SEG, corpus / LIVER_CT
    rc, out = run(checker_tools, "check-dicom", seg)
    assert rc == 0 and "check-dicom: 1 file(s), 0 error(s)" in out, out
    rc, out = run(checker_tools, "check-refs", "--sources", sources, seg)
    assert rc == 0 and "0 error(s)" in out, out
    rc, out = run(checker_tools, "check-dcmjs", "--strict", "--sources", sources, seg)
    (report,) = dcmjs_reports(out)
    assert rc == 0 and report["ok"] and report["paintedImages"] == 3, out


def test_broken_seg_fails_check_dicom_and_check_dcmjs(
    checker_tools: Path, corpus: Path, tmp_path: Path
) -> None:
    seg = pydicom.dcmread(corpus / LIVER_SEG)
    for segment in seg.SegmentSequence:
        del segment.SegmentLabel
    seg.PerFrameFunctionalGroupsSequence = seg.PerFrameFunctionalGroupsSequence[:1]
    broken = save(seg, tmp_path / "broken-seg.dcm")
    rc, out = run(checker_tools, "check-dicom", broken)
    assert rc == 1 and "SegmentLabel" in out, out
    rc, out = run(checker_tools, "check-dcmjs", "--sources", corpus / LIVER_CT, broken)
    (report,) = dcmjs_reports(out)
    assert rc == 1 and not report["ok"], out
    assert any("PerFrameFunctionalGroupsSequence has 1 items" in e for e in report["errors"])  # type: ignore[attr-defined]


def test_dangling_reference_fails_check_refs(
    checker_tools: Path, corpus: Path, tmp_path: Path
) -> None:
    seg = pydicom.dcmread(corpus / LIVER_SEG)
    item = seg.PerFrameFunctionalGroupsSequence[1].DerivationImageSequence[0].SourceImageSequence[0]
    item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.1.1"
    seg.PatientID = "SOMEONE-ELSE"
    broken = save(seg, tmp_path / "dangling.dcm")
    rc, out = run(checker_tools, "check-refs", "--sources", corpus / LIVER_CT, broken)
    assert rc == 1, out
    assert "1.2.826.0.1.3680043.10.1.1" in out and "is not among the sources" in out
    assert "PatientID 'SOMEONE-ELSE' differs" in out


def test_check_dcmjs_fails_ohif_crash_conditions(
    checker_tools: Path, corpus: Path, tmp_path: Path
) -> None:
    rc, out = run(checker_tools, "check-dcmjs", corpus / HD / "sr_document.dcm")
    assert rc == 0 and dcmjs_reports(out)[0]["displayableGroups"] == 1, out

    no_scoord = pydicom.dcmread(corpus / HD / "sr_document.dcm")
    group = measurement_group(no_scoord)
    group.ContentSequence = [i for i in group.ContentSequence if i.ValueType != "SCOORD"]
    no_uid = pydicom.dcmread(corpus / HD / "sr_document.dcm")
    group = measurement_group(no_uid)
    group.ContentSequence = [i for i in group.ContentSequence if i.ValueType != "UIDREF"]
    files = [save(no_scoord, tmp_path / "no-scoord.dcm"), save(no_uid, tmp_path / "no-uid.dcm")]
    files.append(corpus / "reference-results/dcmqi-tid1500-sr-example/sr.dcm")  # volumetric only
    rc, out = run(checker_tools, "check-dcmjs", *files)
    reports = dcmjs_reports(out)
    assert rc == 1 and [r["ok"] for r in reports] == [False, False, False], out
    assert "has no SCOORD/SCOORD3D" in str(reports[0]["errors"])
    assert "lacks Tracking Identifier (112039) or Tracking Unique Identifier" in str(
        reports[1]["errors"]
    )
    assert "has no SCOORD/SCOORD3D" in str(reports[2]["errors"])


def test_check_sr_reports_a_broken_tree(checker_tools: Path, corpus: Path, tmp_path: Path) -> None:
    sr = pydicom.dcmread(corpus / HD / "sr_document.dcm")
    del measurement_group(sr).ContentSequence[0].RelationshipType
    broken = save(sr, tmp_path / "broken-tree.dcm")
    rc, out = run(checker_tools, "check-sr", "--no-pixelmed", broken)
    assert rc == 1 and "[dsrdump] E:" in out, out
    rc, out = run(checker_tools, "check-sr", corpus / HD / "ct_image.dcm")
    assert rc == 1 and "not a DICOM SR" in out, out


@pytest.mark.slow
def test_check_sr_pixelmed_finds_the_wrong_relationship_in_highdicoms_sr(
    checker_tools: Path, corpus: Path
) -> None:
    rc, out = run(checker_tools, "check-sr", "--quiet", corpus / HD / "sr_document.dcm")
    assert rc == 1, out
    assert "[pixelmed] Error" in out and "expected HAS CONCEPT MOD - found HAS PROPERTIES" in out


@pytest.mark.slow
def test_usage_errors_and_missing_pieces_exit_2_naming_the_installer(
    checker_tools: Path, corpus: Path, tmp_path: Path
) -> None:
    for name in ("check-dicom", "check-sr", "check-refs", "check-dcmjs", "ohif-snapshot"):
        assert run(checker_tools, name)[0] == 2, name
        rc, out = run(checker_tools, name, "--help")
        assert rc == 0 and "usage" in out.lower(), name
    rc, out = run(checker_tools, "check-dicom", corpus / "MANIFEST.md", tmp_path / "absent.dcm")
    assert rc == 1 and "not a DICOM Part 10 file" in out and "no such file" in out, out

    bare = tmp_path / "bin"  # a PATH with python3 and node but no dicom3tools
    bare.mkdir()
    (bare / "python3").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bare)}
    rc, out = run(checker_tools, "check-dicom", corpus / LIVER_SEG, env=env)
    assert rc == 2 and INSTALL_CHECKERS in out, out
    empty = {**os.environ, "AINODE_CHECKERS_CACHE": str(tmp_path / "empty-cache")}
    rc, out = run(checker_tools, "check-dcmjs", corpus / LIVER_SEG, env=empty)
    assert rc == 2 and INSTALL_CHECKERS in out, out
    proc = subprocess.run(
        [str(checker_tools / "install"), "--check"], capture_output=True, text=True, env=empty
    )
    assert proc.returncode == 1 and "npm modules missing" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_ohif_snapshot_fails_an_sr_that_crashes_ohif(
    checker_tools: Path, corpus: Path, tmp_path: Path
) -> None:
    study = tmp_path / "study"
    study.mkdir()
    (study / "ct.dcm").write_bytes((corpus / HD / "ct_image.dcm").read_bytes())
    sr = pydicom.dcmread(corpus / HD / "sr_document.dcm")
    group = measurement_group(sr)
    group.ContentSequence = [i for i in group.ContentSequence if i.ValueType != "SCOORD"]
    save(sr, study / "sr.dcm")
    rc, out = run(checker_tools, "ohif-snapshot", "--out", tmp_path / "shot.png", study)
    assert rc == 1, out
    assert "Something went wrong" in out and "after opening the SR" in out, out
    assert (tmp_path / "shot.png").stat().st_size > 10_000
