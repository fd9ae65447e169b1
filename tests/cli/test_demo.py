"""``ainode demo`` end to end: a real node, the bundled samples, C-STORE, completion, summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from node.jobs.store import COMBINE_MODEL
from node.samples.studies import sample_chest_ct
from node.store.index import Index
from tests.results.air import assert_air

ROOT = Path(__file__).resolve().parents[2]
#: Slices of the demo chest CT (the shared phantom generator decides its extent).
N_CT = sample_chest_ct().hu.shape[0]


def _ainode(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(cwd)}
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=900,
    )


@pytest.mark.slow
def test_demo_receives_both_sample_studies(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    proc = _ainode("demo", "--dir", str(work), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert (
        report["sent"] == report["files_written"] == report["verified_byte_identical"] == N_CT + 1
    )
    assert report["forced_completion"] == [] and report["errors"] == []
    studies = report["studies"]
    assert [[s["modality"] for s in st["series"]] for st in studies] == [["CT"], ["DX"]]
    assert [st["instance_count"] for st in studies] == [N_CT, 1]
    assert {st["state"] for st in studies} == {"complete"}
    # routed by the default rules, run by the demo models, delivered to the PACS and the folder
    ct, dx = (report["pipeline"][st["study_uid"]] for st in studies)
    assert ct["rules"] == ["chest-ct-lung-nodules"] and dx["rules"] == ["chest-radiograph"]
    assert sorted(j["model"] for j in ct["jobs"]) == [
        COMBINE_MODEL,
        "lung-nodule-classify",
        "lung-nodule-detect",
        "lung-nodule-seg",
        "report-text",
    ]
    assert [j["model"] for j in dx["jobs"]] == ["cxr-classify"]
    for job in ct["jobs"] + dx["jobs"]:
        assert job["state"] == "succeeded", job
    # the chest CT rule's four models: one combined SEG, SR, key-image series and KOS
    for job in ct["jobs"]:
        if job["model"] == COMBINE_MODEL:
            assert not job["combined"], job
        else:  # held for the combined set, nothing delivered on its own
            assert job["combined"] and job["objects"] == [], job
    (combined,) = (j for j in ct["jobs"] if j["model"] == COMBINE_MODEL)
    assert sorted(set(combined["objects"])) == ["KO", "OT", "SEG", "SR"]
    assert combined["objects"].count("SEG") == combined["objects"].count("SR") == 1
    assert dx["jobs"][0]["objects"] and not dx["jobs"][0]["combined"]
    for pipe in (ct, dx):
        assert set(pipe["deliveries"]) == {"pacs", "results-folder"}
        for states in pipe["deliveries"].values():
            assert set(states) == {"delivered"}
    produced = sum(len(j["objects"]) for j in ct["jobs"] + dx["jobs"])
    assert len(list((work / "results").rglob("*.dcm"))) == produced
    for path in (work / "results").rglob("*.dcm"):
        assert_air(pydicom.dcmread(path))  # IHE AI Results points on every demo object
    assert report["pacs_url"].startswith("http://127.0.0.1:")
    # the node's own data folder agrees after the demo stopped it
    index = Index(work / "data" / "index.sqlite")
    try:
        rows = {r["study_uid"]: r for r in index.list_studies()}
    finally:
        index.close()
    assert set(rows) == {st["study_uid"] for st in studies}
    assert {r["state"] for r in rows.values()} == {"complete"}
    assert f"[3/7] sent {N_CT + 1}/{N_CT + 1} instances over C-STORE" in proc.stderr


def test_demo_fails_when_a_study_does_not_complete(tmp_path: Path) -> None:
    proc = _ainode(
        "demo",
        "--dir",
        str(tmp_path / "d"),
        "--stable-seconds",
        "600",
        "--timeout",
        "0.5",
        "--jobs-timeout",
        "0.5",
        "--no-pacs",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED:" in proc.stdout
    assert proc.stdout.count("did not complete by itself; forced") == 2


@pytest.mark.slow
def test_demo_text_summary_then_keep_running_serves_the_api_until_interrupted(
    tmp_path: Path,
) -> None:
    import signal

    import httpx

    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "demo", "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # blocks until the summary and the "node running" line
            lines.append(line)
            if line.startswith("node running: browse "):
                break
        else:
            raise AssertionError("".join(lines))
        out = "".join(lines)
        assert "CT study" in out and "DX study" in out
        assert f'CT CHEST "Chest phantom 2.5mm" {N_CT} instances' in out
        assert 'DX CHEST "Chest PA" 1 instances' in out
        assert "rules matched: chest-ct-lung-nodules" in out
        assert "model lung-nodule-seg: succeeded" in out
        assert "Demo OK." in out
        assert "DEMO^CHEST" not in out  # no patient name in the output, even synthetic
        work = Path(out.split("work folder ")[1].split()[0])
        assert work.parent == tmp_path  # a new temporary folder
        url = line.split("browse ")[1].split()[0]
        studies = httpx.get(url, timeout=60).json()["studies"]
        assert sorted(s["instance_count"] for s in studies) == [1, N_CT]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read().strip() == "stopping"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
