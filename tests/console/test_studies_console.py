"""The console's studies list and study page (issue 22 §1, §3 link): search, filters, server-side
sort and paging, patient data masked for a role without rights and shown + audited for one with,
the 'Open in viewer' link; over plain HTTP and in headless Chromium (``drive_studies.js``)."""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pydicom
import pytest

from node.api.auth import hash_password
from node.app import Node
from node.config import AuthConfig, Config, ConsoleConfig, NodeConfig, StudyConfig, UserConfig
from tests.conftest import INSTALL_CHECKERS, checker_node_modules, require_tool
from tests.ingest.synthetic import write_ct_series

HERE = Path(__file__).parent
USERS = {"rita": ("rita-reviewer-pass", "reviewer"), "vera": ("vera-viewer-pass", "viewer")}
VIEWER_URL = "https://ohif.example/viewer?StudyInstanceUIDs={study_uid}&mode=basic"
COUNT = 57  # more than a page (50)


def _patient(i: int) -> tuple[str, str, str, str, str]:
    """Patient ID, name, accession, study date, modality of study ``i``."""
    return (
        f"PID-{i % 4}",
        f"Patient^Number{i % 4}",
        f"ACC-{i:03d}",
        f"2024{1 + i % 12:02d}{1 + i % 28:02d}",
        "CT" if i % 2 == 0 else "MR",
    )


@dataclass
class ConsoleNode:
    node: Node
    base: str
    uids: list[str]
    data_dir: Path

    @contextmanager
    def client(self, user: str) -> Iterator[httpx.Client]:
        with httpx.Client(base_url=self.base, follow_redirects=False, timeout=30) as c:
            m = re.search(r'name="csrf" value="([0-9a-f]{64})"', c.get("/console/login").text)
            assert m is not None
            r = c.post(
                "/console/login",
                data={"user": user, "password": USERS[user][0], "csrf": m.group(1)},
            )
            assert r.status_code == 303, r.text
            yield c

    def phi_records(self) -> list[dict[str, object]]:
        text = (self.data_dir / "audit.log").read_text(encoding="utf-8")
        return [r for r in map(json.loads, text.splitlines()) if r["event"] == "phi.viewed"]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleNode]:
    tmp = tmp_path_factory.mktemp("studies-console")
    config = Config(
        auth=AuthConfig(
            users={
                name: UserConfig(password_hash=hash_password(pw), role=role)  # type: ignore[arg-type]
                for name, (pw, role) in USERS.items()
            }
        ),
        node=NodeConfig(data_dir=tmp / "data", dicom_port=0, http_port=0, min_free_bytes=0),
        study=StudyConfig(stable_seconds=3600),
        console=ConsoleConfig(viewer_url=VIEWER_URL),
    )
    node = Node(config)
    node.start()
    uids = []
    try:
        for i in range(COUNT):
            (path,) = write_ct_series(tmp / f"s{i}", 1, size=8, seed=i)
            ds = pydicom.dcmread(path)
            pid, name, acc, date, modality = _patient(i)
            ds.PatientID, ds.PatientName, ds.AccessionNumber = pid, name, acc
            ds.StudyDate, ds.StudyTime, ds.Modality = date, "093000", modality
            ds.StudyDescription = f"{modality} study {i}"
            ds.save_as(path)
            out = node.spool.store(path.read_bytes(), calling_aet="TEST", source="test")
            uids.append(out.instance.study_uid)
        yield ConsoleNode(
            node=node, base=f"http://127.0.0.1:{node.http_port}", uids=uids, data_dir=tmp / "data"
        )
    finally:
        node.stop()


def _rows(page: str) -> list[str]:
    return re.findall(r'<td class="mono"><a href="/console/studies/([0-9.]+)">', page)


def test_search_sort_and_paging(console: ConsoleNode) -> None:
    with console.client("rita") as c:
        first = c.get("/console/studies")
        assert first.status_code == 200
        assert _rows(first.text) == console.uids[::-1][:50]
        assert f"{COUNT} studies" in first.text
        nxt = re.search(r'id="older" href="([^"]+)"', first.text)
        assert nxt is not None
        second = c.get("/console/studies" + html.unescape(nxt.group(1)))
        assert _rows(second.text) == console.uids[::-1][50:]
        assert 'id="older"' not in second.text and 'id="newer"' in second.text

        found = c.get("/console/studies", params={"patient_id": "PID-1", "modality": "mr"})
        expected = [u for i, u in enumerate(console.uids) if i % 4 == 1][::-1]
        assert _rows(found.text) == expected
        assert "Patient Number1" in found.text

        dated = c.get(
            "/console/studies",
            params={"from": "2024-03-01", "to": "2024-03-31", "sort": "study_date", "order": "asc"},
        )
        march = sorted(
            (d, u) for i, u in enumerate(console.uids) if (d := _patient(i)[3]).startswith("202403")
        )
        assert _rows(dated.text) == [u for _, u in march]

        bad = c.get("/console/studies", params={"from": "2024-02-30"})
        assert bad.status_code == 200 and "must be a date" in bad.text


def test_phi_masked_for_a_viewer(console: ConsoleNode) -> None:
    before = len(console.phi_records())
    with console.client("vera") as c:
        page = c.get("/console/studies")
        assert page.status_code == 200 and 'id="phi-masked"' in page.text
        assert "Patient Number" not in page.text and "PID-" not in page.text
        assert "ACC-0" not in page.text and 'name="patient_id"' not in page.text
        assert len(_rows(page.text)) == 50 and "MR study" in page.text  # the rest is shown
        refused = c.get("/console/studies", params={"patient_id": "PID-1"})
        assert refused.status_code == 403 and "may not search" in refused.text
        assert "PID-1" not in refused.text  # not even the refused search term
        study = c.get(f"/console/studies/{console.uids[5]}")
        assert study.status_code == 200 and "Patient Number" not in study.text
    assert len(console.phi_records()) == before


def test_phi_shown_and_audited_for_a_reviewer(console: ConsoleNode) -> None:
    before = len(console.phi_records())
    with console.client("rita") as c:
        c.get("/console/studies", params={"accession": "ACC-007"})
        study = c.get(f"/console/studies/{console.uids[7]}")
        assert "Patient Number3" in study.text and "ACC-007" in study.text
    listed, shown = console.phi_records()[before:]
    assert listed["actor"] == "user:rita" and listed["study_uid"] == console.uids[7]
    assert listed["purpose"] == "console studies list" and listed["filters"] == ["accession"]
    assert shown["purpose"] == "console study page" and shown["study_uid"] == console.uids[7]
    text = (console.data_dir / "audit.log").read_text(encoding="utf-8")
    assert "ACC-007" not in text and "Patient" not in text and "PID-" not in text


def test_viewer_link_from_the_template(console: ConsoleNode) -> None:
    uid = console.uids[30]
    expected = VIEWER_URL.format(study_uid=quote(uid, safe=""))
    with console.client("vera") as c:
        listing = html.unescape(c.get("/console/studies").text)
        study = html.unescape(c.get(f"/console/studies/{uid}").text)
    assert f'class="viewer-link" href="{expected}"' in listing
    assert f'class="viewer-link" href="{expected}"' in study
    from node.api.console import _viewer_link

    class _State:
        class app:  # noqa: N801 - the shape of request.app.state.node.config.console
            class state:  # noqa: N801
                node = console.node

    link = _viewer_link(_State())  # type: ignore[arg-type]
    assert link("1.2.3&x=<y> 4") == (
        "https://ohif.example/viewer?StudyInstanceUIDs=1.2.3%26x%3D%3Cy%3E%204&mode=basic"
    )


@pytest.mark.slow
def test_search_and_paging_in_headless_chromium(console: ConsoleNode, tmp_path: Path) -> None:
    node_js = require_tool("node")
    require_tool("chromium")
    modules = checker_node_modules()
    if not (modules / "playwright-core").is_dir():
        pytest.fail(f"playwright-core is missing under {modules}; run {INSTALL_CHECKERS}")
    shots = (
        HERE.parents[1] / "docs" / "images"
        if os.environ.get("AINODE_SCREENSHOTS") == "1"
        else tmp_path / "shots"
    )
    shots.mkdir(parents=True, exist_ok=True)
    args = {
        "base": console.base,
        "user": "rita",
        "password": USERS["rita"][0],
        "viewer": {"user": "vera", "password": USERS["vera"][0]},
        "accession": _patient(5)[2],
        "shots": str(shots),
        "profile": str(tmp_path / "profile"),
    }
    proc = subprocess.run(
        [node_js, str(HERE / "drive_studies.js"), json.dumps(args)],
        env={**os.environ, "NODE_PATH": str(modules)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    newest = console.uids[::-1]
    assert out["first_page"] == newest[:50] and out["total"].startswith(f"{COUNT} studies")
    assert out["second_page"] == newest[50:]
    expected = [u for i, u in enumerate(console.uids) if _patient(i)[0] == "PID-2"][::-1]
    assert out["searched"] == expected
    assert set(out["searched_ids"]) == {"PID-2"}
    assert (
        out["search_url"].startswith("/console/studies?")
        and "patient_id=PID-2" in out["search_url"]
    )
    dates = out["sorted_dates"]
    assert dates == sorted(dates) and len(dates) == len(expected)
    assert (shots / "console-studies-search.png").stat().st_size > 5000

    newest_uid = newest[0]
    assert out["viewer_link"] == VIEWER_URL.format(study_uid=newest_uid)
    t = out["time"]
    when = dt.datetime.fromisoformat(t["datetime"].replace("Z", "+00:00"))
    local = when.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M:%S")
    assert t["zone"] == "Asia/Tokyo" and t["text"].startswith(f"{local} (")
    assert t["text"].endswith(")") and ("ago" in t["text"] or "now" in t["text"]), t
    assert t["title"] == f"{when.strftime('%Y-%m-%d %H:%M:%S')} UTC · shown in Asia/Tokyo"

    assert out["by_accession"] == [console.uids[5]] and out["by_accession_cells"] == ["ACC-005"]

    assert out["first_tab"] == "Skip to content" and out["after_skip"] == "main"
    assert out["keyboard_field"] == "patient_id" and out["keyboard_outline"] == "solid"
    assert set(out["keyboard_search"]) == {"PID-1"}
    assert len(out["keyboard_search"]) == sum(1 for i in range(COUNT) if i % 4 == 1)

    assert out["narrow"]["page"] <= out["narrow"]["view"] == 768, out["narrow"]
    assert out["narrow"]["search_visible"]
    assert (shots / "console-studies-narrow.png").stat().st_size > 5000

    assert out["viewer_masked"].startswith("Patient data is hidden for your role")
    assert out["viewer_phi_inputs"] == 0 and out["viewer_cells"] == ["—"]
    assert out["viewer_rows"] == 50
