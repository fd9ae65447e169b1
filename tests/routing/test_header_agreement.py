"""``ainode rules explain FILE`` and the live router see the same header on every corpus file.

The live path is the node's own: ingest parses the received file (``parse_received_file``), builds
the series header, the index stores it as JSON, and the router evaluates ``series_inputs`` of the
study read back from the index.  The dry-run path is ``collect_studies``, what ``rules explain
FILE`` evaluates.  Both must give equal inputs, decisions and explanations, for the shipped rules
and for rules that ask whether binary (OB/OW/UN) attributes exist.

Before issue 17 the dry run had its own builder (``node/routing/headers.py``) that dropped every
binary element and every sequence with one unconvertible value: its header differed from the
stored one on 45 of the 99 corpus files ingest accepts (e.g. ``CT_small.dcm`` lost the GE blobs
``(0043,1028)``/``(0043,102A)``, ``eCT_Supplemental.dcm`` its palette data, ``badVR.dcm`` its
whole ReferencedRTPlanSequence, so an ``exists`` rule on it routed differently).  This test then
failed; ``test_binary_attribute_is_present_but_empty`` pins the semantics it now agrees on.
Reading the file only up to the pixels would also fail it (``CT_small.dcm``, ``MR_small.dcm``
and ``ct_image.dcm`` carry Data Set Trailing Padding after the Pixel Data).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

import dicom_rules
from dicom_rules import SeriesInput
from node.cli.rules import collect_studies
from node.errors import IngestError
from node.imaging.dicom_json import BULK_THRESHOLD, header_from_dataset, header_from_file
from node.ingest.header import parse_received_file
from node.routing import DEFAULT_RULES, series_inputs
from node.store.index import Index, IngestRecord
from node.types import Instance

#: ``exists`` on binary attributes (short OW palette data, trailing padding, a short private OB
#: blob: present without a Value, so never true, but explain says "present but empty" rather
#: than "tag absent") and on a sequence the old dry-run builder dropped.
BINARY_RULES = """
version: 1
rules:
  - name: palette
    when: {all: [{RedPaletteColorLookupTableData: {exists: true}}]}
    then: {model: m-palette}
  - name: trailing-padding
    when: {all: [{DataSetTrailingPadding: {exists: true}}]}
    then: {model: m-padding}
  - name: ge-private-blob
    when: {all: [{"0043[GEMS_PARM_01]28": {exists: true}}]}
    then: {model: m-private}
  - name: plan-referenced
    when: {all: [{ReferencedRTPlanSequence: {exists: true}}]}
    then: {model: m-rt}
"""


def _corpus_files(corpus: Path) -> list[Path]:
    lines = (corpus / "MANIFEST").read_text(encoding="utf-8").splitlines()
    return [corpus / line.split(None, 3)[3] for line in lines if line and not line.startswith("#")]


def _live(path: Path, db: Path) -> list[SeriesInput] | None:
    """What the router evaluates once ``path`` is received (None: ingest refuses the file)."""
    try:
        header = parse_received_file(path, path.stat().st_size)
    except IngestError:
        return None
    data = path.read_bytes()
    instance = Instance(
        study_uid=header.study_uid,
        series_uid=header.series_uid,
        sop_uid=header.sop_uid,
        sop_class_uid=header.sop_class_uid,
        transfer_syntax_uid=header.transfer_syntax_uid,
        path=path,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        modality=header.modality,
        body_part=header.body_part,
    )
    index = Index(db)
    try:
        index.commit(
            [
                IngestRecord(
                    instance,
                    "stored",
                    instance.sha256,
                    "test",
                    0.0,
                    series_description=header.series_description,
                    series_header=header_from_dataset(header.dataset),
                )
            ]
        )
        study = index.get_study(header.study_uid)
    finally:
        index.close()
    assert study is not None
    return series_inputs(study)


def _explained(path: Path) -> list[SeriesInput]:
    """What ``ainode rules explain FILE`` evaluates."""
    studies, unreadable = collect_studies([path])
    assert not unreadable, unreadable
    (series,) = studies.values()
    return series


def test_router_and_explain_agree_on_every_corpus_file(corpus: Path, tmp_path: Path) -> None:
    rule_sets = {
        "shipped": dicom_rules.load(DEFAULT_RULES),
        "binary": dicom_rules.parse(BINARY_RULES),
    }
    compared = refused = 0
    fired: set[str] = set()
    reasons: set[tuple[str, str]] = set()
    disagree: list[str] = []
    for n, path in enumerate(_corpus_files(corpus)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the malformed files on purpose
            live = _live(path, tmp_path / f"{n}.sqlite")
            if live is None:
                refused += 1
                continue
            explained = _explained(path)
        compared += 1
        name = str(path.relative_to(corpus))
        if live != explained:
            disagree.append(f"{name}: header")
            continue
        for label, rules in rule_sets.items():
            got = dicom_rules.explain(
                rules, live
            ).to_json()  # what `rules explain` prints, reasons included
            if got != dicom_rules.explain(rules, explained).to_json():
                disagree.append(f"{name}: {label} rules")
            fired.update(d["rule"] for d in got["decisions"])
            if label == "binary":
                reasons.update(
                    (v["rule"], v["reason"].rsplit(": ", 1)[-1]) for v in got["series"][0]["rules"]
                )
    assert not disagree, disagree
    assert compared >= 95 and refused <= 10, (compared, refused)
    # the binary rules see both cases on the corpus, so their agreement means something
    assert "plan-referenced" in fired
    for rule in ("palette", "trailing-padding", "ge-private-blob"):
        assert {(rule, "tag absent"), (rule, "tag present but empty")} <= reasons, rule


def _sample(tmp_path: Path) -> Path:
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.Modality = "OT"
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "OB", b"\x01\x02")  # short private blob: kept
    ds.add_new(0x00091002, "OB", b"\x00" * (BULK_THRESHOLD + 2))  # bulk: left out
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "sample.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_binary_attribute_is_present_but_empty(tmp_path: Path) -> None:
    """A short binary value is in the header (InlineBinary, no Value); a long one is not."""
    path = _sample(tmp_path)
    header = header_from_file(path)
    assert header["00091001"] == {"vr": "OB", "InlineBinary": "AQI="}
    assert "00091002" not in header
    (live,) = _live(path, tmp_path / "index.sqlite") or []
    assert live.header == header
    rules = dicom_rules.parse(
        """
version: 1
rules:
  - name: short-blob
    when: {all: [{"0009[ACME]01": {exists: true}}]}
    then: {model: m}
  - name: long-blob
    when: {all: [{"0009[ACME]02": {missing: true}}]}
    then: {model: m}
"""
    )
    (series,) = dicom_rules.explain(rules, [live]).to_json()["series"]
    reasons = {v["rule"]: v["reason"] for v in series["rules"]}
    # present without a value (the old dry-run builder dropped it: "tag absent")
    assert reasons["short-blob"].endswith("tag present but empty"), reasons
    assert [d.rule for d in dicom_rules.route(rules, [live])] == ["long-blob"]


@pytest.mark.parametrize("name", ["ct/single-slices/CT_small.dcm", "mr/single-slices/MR_small.dcm"])
def test_elements_after_the_pixels_are_read(corpus: Path, name: str) -> None:
    """Data Set Trailing Padding follows Pixel Data: the node stores it, explain must see it."""
    assert "FFFCFFFC" in header_from_file(corpus / name)
