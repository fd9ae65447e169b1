"""Mutation strategies and targets shared by the bounded fuzz tests and ``bench/fuzz.py``.

Each target takes one input and returns normally when the code under test behaved: it either
accepted the input or refused it with the documented error type (carrying positions where the
format has them).  Anything else raises ``AssertionError`` (or the unexpected exception itself).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable

from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

import dicom_rules
from node.config import parse_config
from node.errors import ConfigError, IngestError, MalformedInstanceError, MissingAttributeError
from node.imaging.dicom_json import header_from_dataset
from node.ingest.header import dataset_offset, is_valid_uid, parse_received
from tests.security import hostile

__all__ = [
    "CONFIG_SEED",
    "RULES_SEED",
    "check_config",
    "check_header",
    "check_rules",
    "dicom_seeds",
    "mutated",
    "mutated_text",
]


def dicom_seeds() -> list[bytes]:
    """Valid files the header fuzzer mutates: plain image, nested sequences, text values."""
    plain = hostile.base_dataset()
    nested = hostile.base_dataset()
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-D3000", "SRT", "Chest"
    nested.AnatomicRegionSequence = Sequence([inner])
    nested.SeriesDescription = "CT THORAX"
    nested.SpecificCharacterSet = "ISO_IR 100"
    implicit = hostile.base_dataset()
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return [hostile.encode(plain), hostile.encode(nested), hostile.encode(implicit)]


_LINE_COL = re.compile(r"^.+:\d+:\d+: \S")


def _mutate(data: bytes, ops: list[tuple[int, int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, pos, n, blob in ops:
        if not out:
            break
        i = pos % len(out)
        if kind == 0:  # flip bytes
            for k in range(i, min(len(out), i + 1 + n % 4)):
                out[k] ^= blob[0] if blob else 0xFF
        elif kind == 1:  # truncate
            del out[i:]
        elif kind == 2:  # insert
            out[i:i] = blob
        elif kind == 3:  # delete a run
            del out[i : i + 1 + n % 64]
        elif kind == 4:  # overwrite a 4-byte length-like field with an extreme value
            out[i : i + 4] = (b"\xff\xff\xff\xff", b"\0\0\0\0", b"\xfe\xff\xff\x7f")[n % 3]
        else:  # duplicate a run (repeated elements, items)
            out[i:i] = out[i : i + 1 + n % 256]
    return bytes(out)


_OPS = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.integers(0, 1 << 20),
        st.integers(0, 1 << 16),
        st.binary(min_size=1, max_size=16),
    ),
    min_size=1,
    max_size=6,
)


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Byte-level mutations (flips, truncation, insertions, deletions, extreme lengths)."""
    return st.tuples(st.sampled_from(seeds), _OPS).map(lambda t: _mutate(t[0], t[1]))


def mutated_text(seed: str) -> st.SearchStrategy[str]:
    """Line-level and character-level mutations of a YAML document."""
    lines = seed.splitlines()

    def apply(ops: list[tuple[int, int, str]]) -> str:
        out = list(lines)
        for kind, pos, text in ops:
            if not out:
                out = [text]
                continue
            i = pos % len(out)
            if kind == 0:
                del out[i]
            elif kind == 1:
                out.insert(i, text)
            elif kind == 2:
                line = out[i]
                j = pos % (len(line) + 1)
                out[i] = line[:j] + text + line[j:]
            elif kind == 3:
                out[i] = out[i].replace(":", text, 1)
            elif kind == 4:
                out[i] = "  " + out[i]
            else:
                out.insert(i, out[i])
        return "\n".join(out) + "\n"

    text_parts = st.one_of(
        st.sampled_from(
            [
                ":",
                "- ",
                "{",
                "}",
                "[",
                "]",
                "&a",
                "*a",
                "!!python/object:os.system",
                "'",
                '"',
                "\t",
                "?",
                "|",
                ">",
                "%",
                "@",
                "$",
                "${x}",
                "\x00",
                "\ufeff",
                "1e999",
                "-1",
                "~",
            ]
        ),
        st.text(max_size=12),
    )
    return st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 10_000), text_parts), min_size=1, max_size=5
    ).map(apply)


def check_header(data: bytes) -> None:
    """parse_received: a Header with valid UIDs, or MalformedInstance/MissingAttribute errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on odd values; serve ignores them too
        try:
            header = parse_received(data)
        except (MalformedInstanceError, MissingAttributeError) as exc:
            assert str(exc) and exc.dicom_status in (0xC000, 0xA900), exc
            return
        for uid in (header.study_uid, header.series_uid, header.sop_uid, header.sop_class_uid):
            assert is_valid_uid(uid), uid
        assert "/" not in header.study_uid + header.series_uid + header.sop_uid
        header_from_dataset(header.dataset)  # never raises on what parse_received accepted
        with contextlib.suppress(IngestError):
            assert 132 <= dataset_offset(data) <= len(data)


RULES_SEED = """\
version: 1
defaults:
  priority: 0
  scope: series
aliases:
  chest: [CHEST, THORAX]
rules:
  - name: chest-ct
    description: chest CT
    priority: 100
    scope: study
    when:
      all:
        - Modality: {equals: CT}
        - body_part: {in: $chest}
        - not: {ImageType: {in: [LOCALIZER]}}
    select:
      prefer:
        - lowest: SliceThickness
      count: 1
    then:
      - model: lung-nodule-seg
      - model: report-text
        parameters: {findings_from: [lung-nodule-seg]}
    stop: true
  - name: cxr
    when:
      any:
        - Modality: {in: [CR, DX]}
        - SeriesDescription: {matches: "(?i)chest"}
        - "0009[ACME 1.0]10": {exists: true}
    then:
      model: cxr-classify
  - name: other
    type: fallback
    then: ignore
"""


def check_rules(text: str) -> None:
    """dicom_rules.parse: a RuleSet, or a RuleError whose problems all carry line and column."""
    try:
        dicom_rules.parse(text, source="fuzz.yaml")
    except dicom_rules.RuleError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.path == "fuzz.yaml" and p.line >= 1 and p.column >= 1, p
            assert p.message.strip(), p


CONFIG_SEED = """\
node:
  ae_title: AINODE
  host: 127.0.0.1
  dicom_port: 11112
  http_port: 8080
  data_dir: data
  allowed_calling_aets: [CT1, MR1]
  stow_max_bytes: 1000000
  tls: {port: 0}
study: {stable_seconds: 30}
rules: rules.yaml
destinations:
  pacs: {type: dimse, host: 10.0.0.5, port: 104, ae_title: PACS}
  web: {type: dicomweb, url: "https://pacs/dicom-web", auth: bearer, token: x}
  folder: {type: folder, path: out}
sources:
  old: {type: dimse, host: 10.0.0.6, port: 104}
delivery: {max_attempts: 5}
inference: {device: cpu, workers: 1}
retention: {days: 30}
"""


def check_config(text: str) -> None:
    """parse_config: a Config, or a ConfigError of ``FILE:LINE:COL: message`` lines."""
    try:
        parse_config(text, source="fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems, exc
        for line in exc.problems:
            assert line.startswith("fuzz.yaml:") and _LINE_COL.match(line), line


TARGETS: dict[str, Callable[..., None]] = {
    "header": check_header,
    "rules": check_rules,
    "config": check_config,
}
