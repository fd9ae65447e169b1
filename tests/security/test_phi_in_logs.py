"""No PHI in what the node writes besides the DICOM it stores: a full run, then a scan.

A real ``ainode serve --log-level DEBUG`` receives corpus files, a synthetic radiograph and
hostile files (C-STORE and STOW-RS); rules route the radiograph to ``cxr-classify`` and an MR to
``ct-denoise``; results go to a folder and to a dcmtk ``storescp``.  Then every log line, the
audit log, every quarantine JSON and every job/result text file under ``data_dir`` is searched for
each Patient Name (and its name components), Patient ID and Patient Birth Date of the sent files.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import pydicom
import pytest

from node.samples import write_sample_studies
from node.types import JobState
from tests.api.conftest import multipart
from tests.peers.dcmtk import start_storescp, storescu
from tests.peers.node import ROOT, NodeProcess, write_config
from tests.security import hostile
from tests.util import wait_until

RULES = """\
version: 1
rules:
  - name: ignore-results
    priority: 1000
    when:
      any:
        - Modality: {in: [SR, SEG, KO, PR]}
        - Manufacturer: {contains: ainode}
    then: ignore
  - name: chest-radiograph
    priority: 100
    when:
      all:
        - Modality: {in: [CR, DX]}
        - body_part: {equals: CHEST}
    then:
      model: cxr-classify
    stop: true
  - name: mr-to-a-ct-model  # ct-denoise reads CT only: the MR series is "not applicable"
    priority: 10
    when:
      Modality: {equals: MR}
    then:
      model: ct-denoise
  - name: nothing-else
    type: fallback
    then: ignore
"""

#: Files whose text is scanned (the DICOM files and the SQLite index hold PHI by design).
_TEXT_SUFFIXES = {".log", ".json", ".jsonl", ".txt", ".yaml", ".yml", ".csv", ".md"}
_FINAL = {JobState.SUCCEEDED.value, JobState.DEAD.value, JobState.CANCELLED.value}


def _phi_values(files: list[Path]) -> set[str]:
    """Patient Name (whole, and each component of 4+ characters), ID and birth date values."""
    values: set[str] = set()
    for f in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
            except Exception:  # noqa: BLE001 - unreadable hostile files carry no readable PHI
                continue
        for keyword in ("PatientName", "PatientID", "PatientBirthDate"):
            try:
                value = str(ds.get(keyword, "") or "").strip()
            except Exception:  # noqa: BLE001
                continue
            if len(value) >= 4:  # shorter values ("M", "1") match everywhere by chance
                values.add(value)
            if keyword == "PatientName":
                values.update(p for p in re.split(r"[\^=]", value) if len(p.strip()) >= 4)
    return {v.strip() for v in values if v.strip() and v.strip() not in _MARKERS}


#: The synthetic sample patient is "DEMO^CHEST PHANTOM": its surname is the marker the node
#: prints on purpose in every demo model's card and description (the whole name still counts).
_MARKERS = {"DEMO"}


def _pattern(value: str) -> re.Pattern[str]:
    """``value`` as a whole token: not inside a longer word, number or UID (dates are digits)."""
    return re.compile(rf"(?<![0-9A-Za-z._]){re.escape(value)}(?![0-9A-Za-z_])")


def _start_debug_node(workdir: Path, **top: object) -> NodeProcess:
    cfg = write_config(workdir, study={"stable_seconds": 1}, **top)  # type: ignore[arg-type]
    import json

    n = json.loads(cfg.read_text())["node"]
    node = NodeProcess(
        config_path=cfg,
        dicom_port=int(n["dicom_port"]),
        http_port=int(n["http_port"]),
        data_dir=Path(n["data_dir"]),
        log=workdir / "node.log",
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), TCP_NODELAY="1")
    fh = node.log.open("ab")
    node.proc = subprocess.Popen(
        [sys.executable, "-m", "node", "serve", "--config", str(cfg), "--log-level", "DEBUG"],
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=workdir,
    )
    fh.close()
    wait_until(
        lambda: (
            node.proc is not None
            and (node.proc.poll() is not None or b'"node.started"' in node.log.read_bytes())
        ),
        timeout=60,
        what="node started",
    )
    assert node.proc.poll() is None, node.log_text()
    return node


@pytest.mark.slow
def test_a_full_run_logs_no_patient_data(tmp_path: Path, corpus: Path) -> None:
    samples = write_sample_studies(tmp_path / "samples")
    radiograph = samples[-1]
    corpus_files = [
        corpus / "mr/single-slices/MR_small.dcm",
        *sorted((corpus / "ct/single-slices").glob("*.dcm"))[:3],
        *sorted((corpus / "other-modalities").rglob("*.dcm"))[:4],
        *sorted((corpus / "malformed").glob("*.dcm")),
    ]
    hostile_dir = tmp_path / "hostile"
    hostile_dir.mkdir()
    hostile_files = []
    for case in hostile.cases():
        path = hostile_dir / f"{case.name}.dcm"
        path.write_bytes(case.build())
        hostile_files.append(path)
    sent = [radiograph, *corpus_files, *hostile_files]
    phi = _phi_values(sent)
    assert hostile.PHI["PatientID"] in phi and len(phi) >= 8, phi

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    archive = tmp_path / "archive"
    with start_storescp(tmp_path / "pacs") as pacs_port:
        node = _start_debug_node(
            tmp_path / "node",
            rules=str(rules),
            destinations={
                "archive": {"type": "folder", "path": str(archive)},
                "pacs": {
                    "type": "dimse",
                    "host": "127.0.0.1",
                    "port": pacs_port,
                    "ae_title": "STORESCP",
                },
            },
        )
        try:
            run = storescu(node.dicom_port, [radiograph, *corpus_files, *hostile_files[:8]])
            assert radiograph in run.acknowledged, run.output[-3000:]
            body, headers = multipart([p.read_bytes() for p in hostile_files[8:]])
            resp = httpx.post(
                f"{node.url}/dicom-web/studies", content=body, headers=headers, timeout=60
            )
            assert resp.status_code in (202, 409), resp.text
            # exercise the read side too (HTTP API, console pages) at DEBUG
            for route in ("/api/studies", "/api/jobs", "/console/studies"):
                assert httpx.get(f"{node.url}{route}", timeout=60).status_code == 200, route

            def jobs() -> dict[str, str]:
                listed = httpx.get(f"{node.url}/api/jobs", timeout=60).json()["jobs"]
                return {j["model"]: j["state"] for j in listed}

            def done() -> bool:
                states = jobs()
                return bool(states) and all(s in _FINAL for s in states.values())

            wait_until(done, timeout=300, what="jobs finished")
            final = jobs()
            assert final.get("cxr-classify") == "succeeded", final
            assert "ct-denoise" not in final, final  # the not-applicable path ran (and logged)
            assert '"event": "series.not_applicable"' in node.log.read_text(), "not applicable"
            wait_until(lambda: any(archive.rglob("*.dcm")), timeout=120, what="delivery")
            wait_until(
                lambda: any((tmp_path / "pacs").rglob("*")), timeout=120, what="pacs delivery"
            )
        finally:
            node.stop()
    assert any((node.data_dir / "quarantine").glob("*.json"))
    # the values searched for are really there, in what the node stores (so the scan can fail)
    stored = b"".join(p.read_bytes() for p in (node.data_dir / "studies").rglob("*.dcm"))
    assert b"AINODE-DEMO-0001" in stored and hostile.PHI["PatientID"].encode() in stored
    assert (node.data_dir / "audit.log").is_file()

    scanned: list[Path] = [node.log]
    for p in node.data_dir.rglob("*"):
        if p.is_file() and (p.suffix in _TEXT_SUFFIXES or p.name == "audit.log"):
            scanned.append(p)
    assert len(scanned) >= 5, scanned
    log_text = node.log.read_text(errors="replace")
    assert '"level": "debug"' in log_text  # DEBUG records were really written
    leaks = []
    for path in scanned:
        text = path.read_text(errors="replace")
        for value in sorted(phi):
            m = _pattern(value).search(text)
            if m:
                line = text[max(0, m.start() - 150) : m.end() + 50].replace("\n", " ")
                leaks.append(f"{path.relative_to(tmp_path)}: {value!r} in ...{line}...")
    assert leaks == [], "\n".join(leaks)
