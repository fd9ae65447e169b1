"""One coherent result set per study and rule (issue 18 §1), through a running node.

The shipped chest CT rule runs four models on the sample chest CT; the radiologist gets one
DICOM-SEG, one TID 1500 SR, one key-image series and one Key Object Selection document, checked
by tools we did not write.  ``results.combine: false`` gives the per-model series as before.  A
model that fails is named in the SR, and a combine still pending when the node is killed
(``kill -9``) runs after the restart.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from node.jobs.store import COMBINE_MODEL, JobStore
from node.samples import write_sample_studies
from node.samples.writers import write_ct_series
from node.types import JobState
from tests.e2e import misbehaving
from tests.models.builders import write_body_model
from tests.peers.dcmtk import storescu
from tests.peers.node import start_node
from tests.results.conftest import run_tool
from tests.util import wait_until

_FINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED)
CHEST_MODELS = {"lung-nodule-seg", "lung-nodule-detect", "lung-nodule-classify", "report-text"}
KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


def _chest_ct(tmp_path: Path) -> list[Path]:
    files = write_sample_studies(tmp_path / "samples")
    return [f for f in files if pydicom.dcmread(f, stop_before_pixels=True).Modality == "CT"]


def _all_final(store: JobStore, expected: int) -> bool:
    jobs = store.list_jobs()
    return len(jobs) >= expected and all(j.state in _FINAL for j in jobs)


def _delivered(archive: Path) -> list[tuple[Path, Dataset]]:
    return [(p, pydicom.dcmread(p)) for p in sorted(archive.rglob("*.dcm"))]


def _sr_text(ds: Dataset) -> str:
    out: list[str] = []

    def walk(items: object) -> None:
        for item in items or []:  # type: ignore[attr-defined]
            if "TextValue" in item:
                out.append(str(item.TextValue))
            walk(item.get("ContentSequence"))

    walk(ds.get("ContentSequence"))
    return "\n".join(out)


@pytest.mark.slow
def test_chest_ct_rule_delivers_one_result_set(tmp_path: Path, checker_tools: Path) -> None:
    files = _chest_ct(tmp_path)
    source_numbers = {int(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesNumber)}
    archive = tmp_path / "archive"
    with start_node(
        tmp_path / "node",
        study={"stable_seconds": 1},
        destinations={"archive": {"type": "folder", "path": str(archive)}},
    ) as node:
        sent = storescu(node.dicom_port, files)
        assert len(sent.acknowledged) == len(files), sent.output[-2000:]
        store = JobStore(node.data_dir / "index.sqlite")
        wait_until(lambda: _all_final(store, 5), timeout=900, what="all jobs final")
        jobs = {j.job.model: j for j in store.list_jobs()}
        assert set(jobs) == {*CHEST_MODELS, COMBINE_MODEL}
        assert {m: j.reason for m, j in jobs.items() if j.state is not JobState.SUCCEEDED} == {}
        combine = jobs[COMBINE_MODEL]
        assert combine.outputs["combined"]["not_run"] == {}
        assert sorted(combine.outputs["combined"]["models"]) == sorted(CHEST_MODELS)
        for model in CHEST_MODELS:  # held for the combine, not delivered on their own
            assert jobs[model].outputs["objects"] == []
            assert jobs[model].outputs["combined_by"] == combine.job.job_id
        produced = combine.outputs["objects"]
        wait_until(
            lambda: len(list(archive.rglob("*.dcm"))) >= len(produced),
            timeout=120,
            what="the combined set in the folder",
        )
        delivered = _delivered(archive)
        assert len(delivered) == len(produced)
        kinds = Counter(
            "KOS" if str(ds.SOPClassUID) == KOS_CLASS else str(ds.Modality) for _, ds in delivered
        )
        assert kinds["SEG"] == 1 and kinds["SR"] == 1 and kinds["KOS"] == 1, kinds
        assert kinds["OT"] >= 1 and set(kinds) == {"SEG", "SR", "OT", "KOS"}, kinds
        series = {str(ds.SeriesInstanceUID): ds for _, ds in delivered}
        assert len(series) == 4  # SEG, SR, key images (one series), KOS
        numbers = sorted(int(ds.SeriesNumber) for ds in series.values())
        assert len(set(numbers)) == 4 and not set(numbers) & source_numbers, numbers
        assert all(
            str(ds.SeriesDescription).startswith("AI results")
            and "(chest-ct-lung-nodules)" in str(ds.SeriesDescription)
            for ds in series.values()
        )
        seg = next(ds for _, ds in delivered if ds.Modality == "SEG")
        seg_models = {
            str(s.SegmentAlgorithmName) for s in seg.SegmentSequence if "SegmentAlgorithmName" in s
        }
        assert seg_models and seg_models <= CHEST_MODELS
        sr = next(ds for _, ds in delivered if ds.Modality == "SR")
        assert "did not run" not in _sr_text(sr)

        paths = [p for p, _ in delivered]
        seg_sr = [p for p, ds in delivered if ds.Modality in ("SEG", "SR")]
        src = files[0].parent
        run_tool(checker_tools, "check-dicom", *paths)
        run_tool(checker_tools, "check-refs", "--sources", src, *paths)
        run_tool(checker_tools, "check-dcmjs", "--strict", "--sources", src, *seg_sr)
        run_tool(checker_tools, "check-sr", *[p for p, ds in delivered if ds.Modality == "SR"])

        # feedback on a finding of the combined SR is counted for the model that found it
        from node.api.feedback import FeedbackIn, combined_findings, record_feedback
        from node.store.feedback import FeedbackStore

        found = combined_findings(combine.outputs, node.data_dir)
        assert found and {f.model for f in found.values()} <= CHEST_MODELS, found
        tid, first = next(iter(found.items()))
        sr_uid = next(o["sop_uid"] for o in produced if o["modality"] == "SR")
        body = FeedbackIn(job_id=combine.job.job_id, sop_uid=sr_uid, finding=tid, verdict="accept")
        feedback = FeedbackStore(node.data_dir / "index.sqlite")
        stored = record_feedback(feedback, store, body, actor="test", data_dir=node.data_dir)
        assert (stored.model, stored.finding_uid) == (first.model, first.tracking_uid)
        assert stored.model_version == jobs[str(first.model)].outputs["summary"]["model"]["version"]

        # a rerun of the combine writes the same bytes; the outbox delivers nothing twice
        before = {p.name: p.read_bytes() for p in paths}
        written = {o["path"]: (node.data_dir / o["path"]).read_bytes() for o in produced}
        store.retry(combine.job.job_id)
        wait_until(
            lambda: (
                store.get(combine.job.job_id).state is JobState.SUCCEEDED
                and len(store.events(combine.job.job_id)) > 3
            ),
            timeout=300,
            what="the combine rerun",
        )
        assert {o["path"]: (node.data_dir / o["path"]).read_bytes() for o in produced} == written
        assert {p.name: p.read_bytes() for p in sorted(archive.rglob("*.dcm"))} == before


@pytest.mark.slow
def test_combine_false_delivers_per_model_series(tmp_path: Path) -> None:
    files = _chest_ct(tmp_path)
    archive = tmp_path / "archive"
    with start_node(
        tmp_path / "node",
        study={"stable_seconds": 1},
        results={"combine": False},
        destinations={"archive": {"type": "folder", "path": str(archive)}},
    ) as node:
        sent = storescu(node.dicom_port, files)
        assert len(sent.acknowledged) == len(files), sent.output[-2000:]
        store = JobStore(node.data_dir / "index.sqlite")
        wait_until(lambda: _all_final(store, 4), timeout=900, what="all jobs final")
        jobs = {j.job.model: j for j in store.list_jobs()}
        assert set(jobs) == CHEST_MODELS  # no combine job
        assert {m: j.reason for m, j in jobs.items() if j.state is not JobState.SUCCEEDED} == {}
        produced = [o for j in jobs.values() for o in j.outputs["objects"]]
        wait_until(
            lambda: len(list(archive.rglob("*.dcm"))) >= len(produced),
            timeout=120,
            what="per-model results in the folder",
        )
        delivered = _delivered(archive)
        assert len(delivered) == len(produced)
        assert not any(str(ds.SOPClassUID) == KOS_CLASS for _, ds in delivered)
        by_model = {str(ds.ManufacturerModelName) for _, ds in delivered}
        assert by_model == CHEST_MODELS  # each model's own series
        series = {str(ds.SeriesInstanceUID): int(ds.SeriesNumber) for _, ds in delivered}
        assert len(set(series.values())) == len(series)
        assert len(series) >= len(CHEST_MODELS)


_RULES = """\
version: 1
rules:
  - name: body
    when: {Modality: CT}
    then:
      - {model: tiny-body, deliver: [archive]}
      - {model: misbehave-raise, deliver: [archive]}
      - {model: slow-body, deliver: [archive]}
"""


@pytest.mark.slow
def test_failed_model_is_named_and_a_pending_combine_survives_kill_9(
    tmp_path: Path, checker_tools: Path
) -> None:
    workdir = tmp_path / "node"
    models = workdir / "models"
    write_body_model(models, name="tiny-body", roi="[8, 40, 40]")
    misbehaving.install(workdir)
    rules = workdir / "rules.yaml"
    rules.write_text(_RULES)
    archive = tmp_path / "archive"
    hu = np.random.default_rng(3).integers(-1000, 400, size=(6, 40, 40)).astype(np.float32)
    files = write_ct_series(hu, spacing=(2.5, 1.0, 1.0), out_dir=tmp_path / "ct")
    with start_node(
        workdir,
        study={"stable_seconds": 1},
        rules=str(rules),
        models=[str(models)],
        inference={"workers": 1, "max_attempts": 1},
        destinations={"archive": {"type": "folder", "path": str(archive)}},
    ) as node:
        sent = storescu(node.dicom_port, files)
        assert len(sent.acknowledged) == len(files), sent.output[-2000:]
        store = JobStore(node.data_dir / "index.sqlite")

        def slow_running() -> bool:
            jobs = {j.job.model: j.state for j in store.list_jobs()}
            return jobs.get("slow-body") is JobState.RUNNING

        wait_until(slow_running, timeout=300, what="the last model job running")
        states = {j.job.model: j.state for j in store.list_jobs()}
        assert states[COMBINE_MODEL] is JobState.QUEUED, states
        node.kill()  # SIGKILL: the pending combine is only in the node's SQLite queue
        node.start()
        wait_until(lambda: _all_final(store, 4), timeout=300, what="all jobs final")
        jobs = {j.job.model: j for j in store.list_jobs()}
        assert jobs["misbehave-raise"].state is JobState.DEAD
        assert jobs["slow-body"].state is JobState.SUCCEEDED
        combine = jobs[COMBINE_MODEL]
        assert combine.state is JobState.SUCCEEDED, combine.reason
        reason = jobs["misbehave-raise"].reason
        assert combine.outputs["combined"]["not_run"] == {"misbehave-raise": reason}
        produced = combine.outputs["objects"]
        wait_until(
            lambda: len(list(archive.rglob("*.dcm"))) >= len(produced),
            timeout=120,
            what="the combined set in the folder",
        )
        delivered = _delivered(archive)
        assert len(delivered) == len(produced)  # nothing per model, nothing twice
        assert sorted(str(ds.Modality) for _, ds in delivered) == ["SEG", "SR"]
        sr = next(ds for _, ds in delivered if ds.Modality == "SR")
        assert f"model misbehave-raise did not run: {reason}" in _sr_text(sr)
        paths = [p for p, _ in delivered]
        run_tool(checker_tools, "check-dicom", *paths)
        run_tool(checker_tools, "check-refs", "--sources", files[0].parent, *paths)
