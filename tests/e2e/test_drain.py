"""SIGTERM drains the node: no new work is accepted, what is in flight finishes, exit 0.

A real ``python -m node serve`` runs a slow model's job while ``storescu`` is in the middle of
sending a 300-instance series.  On SIGTERM the node stops listening (a new association is
refused), lets the association and the job finish within ``node.shutdown_grace_seconds``, and
exits with status 0.  After a restart everything acknowledged is stored, the finished job is not
run again, the study that completed around the shutdown gets its job, and each result is
delivered exactly once.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from node.jobs.store import JobStore
from node.samples.writers import write_ct_series
from node.types import JobState
from tests.e2e import misbehaving
from tests.peers.dcmtk import echoscu, parse_storescu, tool
from tests.peers.node import NodeProcess, start_node
from tests.util import wait_until

RULES = """\
version: 1
rules:
  - name: slow
    when: {Modality: CT}
    then: {model: slow-body, deliver: [archive]}
"""


def _ct(out: Path, slices: int, accession: str) -> list[Path]:
    hu = np.random.default_rng(slices).integers(-1000, 400, size=(slices, 64, 64))
    return write_ct_series(
        hu.astype(np.float32), spacing=(2.5, 1.0, 1.0), out_dir=out, accession_number=accession
    )


def _uid(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def _scalar(node: NodeProcess, sql: str, *args: Any) -> int:
    try:
        conn = sqlite3.connect(node.data_dir / "index.sqlite", timeout=30)
        try:
            return int(conn.execute(sql, args).fetchone()[0] or 0)
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def _events(node: NodeProcess, name: str) -> list[dict[str, Any]]:
    out = []
    for line in node.log_text().splitlines():
        if f'"{name}"' in line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return [e for e in out if e.get("event") == name]


@pytest.mark.slow
def test_sigterm_drains_associations_and_jobs_then_restart_picks_up(tmp_path: Path) -> None:
    workdir = tmp_path / "node"
    misbehaving.install(workdir)
    (workdir / "rules.yaml").write_text(RULES)
    archive = tmp_path / "archive"
    first = _ct(tmp_path / "a", 6, "DRAIN1")
    second = _ct(tmp_path / "b", 300, "DRAIN2")
    with start_node(
        workdir,
        node={"shutdown_grace_seconds": 90},
        study={"stable_seconds": 1},
        rules=str(workdir / "rules.yaml"),
        inference={"workers": 1, "torch_threads": 1, "job_timeout_seconds": 120},
        destinations={"archive": {"type": "folder", "path": str(archive)}},
    ) as node:
        assert node.proc is not None
        send = [tool("storescu"), "-v", "-nh", "-aet", "STORESCU", "-aec", "AINODE"]
        out = subprocess.run(
            [*send, "127.0.0.1", str(node.dicom_port), *map(str, first)],
            capture_output=True,
            text=True,
            check=True,
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        )
        assert len(parse_storescu(out.stdout + out.stderr)[0]) == len(first)
        running = "SELECT COUNT(*) FROM jobs WHERE state='running'"
        wait_until(lambda: _scalar(node, running) == 1, timeout=60, what="job running")
        # storescu -v writes ~250 bytes per instance: to a file, not a pipe nobody reads yet
        sent_log = (tmp_path / "storescu.log").open("w")
        sender = subprocess.Popen(
            [*send, "127.0.0.1", str(node.dicom_port), *map(str, second)],
            stdout=sent_log,
            stderr=subprocess.STDOUT,
            text=True,
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        )
        stored = "SELECT COUNT(*) FROM instances WHERE study_uid=?"
        wait_until(
            lambda: _scalar(node, stored, _uid(second)) >= 10, timeout=60, what="send under way"
        )
        node.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: bool(_events(node, "node.draining")), timeout=30, what="draining")
        refused = echoscu(node.dicom_port, timeout=10)
        code = node.proc.wait(timeout=120)
        sender.wait(timeout=60)
        sent_log.close()
        output = (tmp_path / "storescu.log").read_text()

        assert code == 0, node.log_text()[-3000:]
        assert refused.returncode != 0  # no new association once draining started
        acked, failed = parse_storescu(output)
        assert sender.returncode == 0 and failed == [], output[-2000:]
        assert sorted(acked) == sorted(second)  # the open association was allowed to finish
        (draining,) = _events(node, "node.draining")
        assert draining["associations"] >= 1 and draining["running_jobs"] == 1, draining
        (drained,) = _events(node, "node.drained")
        assert drained["associations_aborted"] == 0 and drained["jobs_left_running"] == 0

        store = JobStore(node.data_dir / "index.sqlite")
        (job_a,) = [j for j in store.list_jobs() if j.job.study_uid == _uid(first)]
        assert job_a.state is JobState.SUCCEEDED and job_a.attempts == 1, job_a.to_json()

        # restart: the second study is complete (or completes now) and its job runs
        node.start()
        assert _scalar(node, stored, _uid(second)) == len(second)
        second_uid = _uid(second)

        def second_done() -> bool:
            jobs = [j for j in store.list_jobs() if j.job.study_uid == second_uid]
            return len(jobs) == 1 and jobs[0].state is JobState.SUCCEEDED

        wait_until(second_done, timeout=120, what="second study's job")
        wait_until(
            lambda: _scalar(node, "SELECT COUNT(*) FROM outbox WHERE state<>'delivered'") == 0,
            timeout=60,
            what="deliveries",
        )
        jobs = store.list_jobs()
        assert len(jobs) == 2 and all(j.attempts == 1 for j in jobs)
        produced = {o["sop_uid"] for j in jobs for o in j.outputs["objects"]}
        copies = Counter(
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in archive.rglob("*.dcm")
        )
        assert copies == Counter(dict.fromkeys(produced, 1))
