"""``ainode demo``: the whole node on embedded defaults with the bundled synthetic studies.

In a fresh folder (a temporary one, or ``--dir``) it starts a node on free loopback ports, writes
the two sample studies (a chest CT phantom and a chest radiograph), sends them over C-STORE like a
scanner would, waits for the stable window to declare them complete, checks through the HTTP API
and the index that every instance was stored byte for byte, and prints what was received.

Routing rules, models, result objects and delivery are not wired into the node yet; the summary
says so rather than pretending.  Exit status 0 only when every step succeeded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from node.cli import app
from node.errors import AinodeError

__all__ = ["DemoReport", "demo", "run_demo"]

log = logging.getLogger(__name__)

_CALLING_AET = "AINODE-DEMO"
_NOT_WIRED = (
    "Not wired yet: routing rules, AI models, result objects (SEG / SR / Secondary Capture) and "
    "delivery. This demo covers receiving, storing and assembling studies only; no result was "
    "produced or sent anywhere."
)


class DemoError(Exception):
    """A step of the demo failed; the message says which and why."""


@dataclass
class DemoReport:
    """What the demo did, for the text summary and ``--json``."""

    work_dir: Path
    data_dir: Path
    api_url: str = ""
    dicom_address: str = ""
    stable_seconds: float = 0.0
    files_written: int = 0
    sent: int = 0
    send_seconds: float = 0.0
    send_failures: list[str] = field(default_factory=list)
    complete_seconds: float | None = None
    forced: list[str] = field(default_factory=list)
    verified: int = 0
    mismatches: list[str] = field(default_factory=list)
    studies: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every step succeeded."""
        return not (self.errors or self.send_failures or self.mismatches or self.forced)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable view."""
        return {
            "ok": self.ok,
            "work_dir": str(self.work_dir),
            "data_dir": str(self.data_dir),
            "api_url": self.api_url,
            "dicom_address": self.dicom_address,
            "stable_seconds": self.stable_seconds,
            "files_written": self.files_written,
            "sent": self.sent,
            "send_seconds": round(self.send_seconds, 3),
            "send_failures": self.send_failures,
            "complete_seconds": (
                None if self.complete_seconds is None else round(self.complete_seconds, 3)
            ),
            "forced_completion": self.forced,
            "verified_byte_identical": self.verified,
            "mismatches": self.mismatches,
            "studies": self.studies,
            "errors": self.errors,
            "not_wired": ["routing", "models", "results", "delivery"],
        }


def _get_json(client: Any, url: str) -> Any:
    resp = client.get(url)
    if resp.status_code != 200:
        raise DemoError(f"GET {url} answered {resp.status_code}: {resp.text[:200]}")
    return resp.json()


def run_demo(
    work_dir: Path,
    *,
    stable_seconds: float = 2.0,
    timeout_seconds: float = 60.0,
    echo: Callable[[str], None] = print,
    on_done: Callable[[DemoReport], None] | None = None,
) -> DemoReport:
    """Run the demo in ``work_dir`` and return its report (never raises for a failed step).

    Parameters
    ----------
    work_dir:
        Folder for the node's data (``data/``) and the sample files (``samples/``).
    stable_seconds:
        The node's stable window: a study is complete that long after its last instance.
    timeout_seconds:
        How long to wait for completion before forcing it (which counts as a failure).
    echo:
        Where progress lines go.
    on_done:
        Called with the finished report while the node still runs (to print it and, e.g., wait
        for Ctrl-C); the node stops when it returns.  Not called when a step failed early.
    """
    import httpx

    from node.app import Node
    from node.cli.send import send_files
    from node.config import Config, NodeConfig, StudyConfig
    from node.samples import write_sample_studies

    data_dir = work_dir / "data"
    report = DemoReport(work_dir=work_dir, data_dir=data_dir, stable_seconds=stable_seconds)
    config = Config(
        node=NodeConfig(data_dir=data_dir, host="127.0.0.1", dicom_port=0, http_port=0),
        study=StudyConfig(stable_seconds=stable_seconds),
    )
    node = Node(config)
    try:
        node.start()
    except Exception as exc:  # noqa: BLE001 - reported as the failed step
        report.errors.append(f"node did not start: {exc}")
        return report
    try:
        report.api_url = f"http://127.0.0.1:{node.http_port}"
        report.dicom_address = f"127.0.0.1:{node.dicom_port} (AE {config.node.ae_title})"
        echo(f"[1/5] node started: DICOM {report.dicom_address}, HTTP {report.api_url}")
        files = write_sample_studies(work_dir / "samples")
        report.files_written = len(files)
        echo(
            f"[2/5] wrote the synthetic sample studies: {len(files)} files under "
            f"{work_dir / 'samples'}"
        )
        t0 = time.monotonic()
        report.sent, failures = send_files(
            files,
            host="127.0.0.1",
            port=int(node.dicom_port or 0),
            called_aet=config.node.ae_title,
            calling_aet=_CALLING_AET,
        )
        report.send_failures = [f"{path.name}: {reason}" for path, reason in failures]
        report.send_seconds = time.monotonic() - t0
        rate = report.sent / report.send_seconds if report.send_seconds > 0 else 0.0
        echo(
            f"[3/5] sent {report.sent}/{len(files)} instances over C-STORE in "
            f"{report.send_seconds:.1f} s ({rate:.0f} instances/s)"
        )
        with httpx.Client(base_url=report.api_url, timeout=30) as client:
            study_uids = _wait_complete(client, report, timeout_seconds, echo)
            _verify(node, files, report)
            echo(
                f"[5/5] verified: {report.verified}/{len(files)} instances indexed, data sets "
                "stored byte-identical"
            )
            for uid in study_uids:
                report.studies.append(_get_json(client, f"/api/studies/{uid}?events=0"))
        if on_done is not None:
            on_done(report)
    except (DemoError, AinodeError) as exc:
        report.errors.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure is a failed demo, reported, not raised
        log.exception("demo.failed")
        report.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        node.stop()
    return report


def _wait_complete(
    client: Any, report: DemoReport, timeout_seconds: float, echo: Callable[[str], None]
) -> list[str]:
    """Poll the API until every received study is complete; force the stragglers at timeout."""
    echo(f"[4/5] waiting for the stable window ({report.stable_seconds:g} s) to complete studies")
    t0 = time.monotonic()
    deadline = t0 + timeout_seconds
    while True:
        rows = _get_json(client, "/api/studies")["studies"]
        open_uids = [r["study_uid"] for r in rows if r["state"] != "complete"]
        if rows and not open_uids:
            report.complete_seconds = time.monotonic() - t0
            echo(f"      {len(rows)} studies complete after {report.complete_seconds:.1f} s")
            return [r["study_uid"] for r in reversed(rows)]  # in arrival order
        if time.monotonic() > deadline:
            for uid in open_uids:
                client.post(f"/api/studies/{uid}/complete")
                report.forced.append(uid)
            echo(f"      not complete after {timeout_seconds:g} s: forced {len(open_uids)}")
            rows = _get_json(client, "/api/studies")["studies"]
            return [r["study_uid"] for r in reversed(rows)]
        time.sleep(0.1)


def _verify(node: Any, files: list[Path], report: DemoReport) -> None:
    """Compare every sent file's data set with the stored file's, byte for byte.

    Over C-STORE the data set travels and the receiver writes its own file meta (PS3.10 7.1), so
    the bytes after the meta group must be identical.
    """
    from pydicom.filereader import read_file_meta_info

    from node.ingest.header import dataset_offset

    for path in files:
        sop_uid = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
        inst = node.index.get_instance(sop_uid)
        sent = path.read_bytes()
        if inst is None:
            report.mismatches.append(f"{path.name}: not in the index")
            continue
        stored = inst.path.read_bytes()
        if (
            hashlib.sha256(stored).hexdigest() != inst.sha256
            or stored[dataset_offset(stored) :] != sent[dataset_offset(sent) :]
        ):
            report.mismatches.append(f"{path.name}: stored data set differs from the sent one")
        else:
            report.verified += 1


def format_summary(report: DemoReport) -> str:
    """The human-readable summary printed at the end of ``ainode demo``."""
    lines = ["", "Received studies"]
    for n, study in enumerate(report.studies, start=1):
        modalities = ", ".join(sorted({s["modality"] or "?" for s in study.get("series", [])}))
        state = study["state"]
        if study["study_uid"] in report.forced:
            state += " (forced)"
        lines.append(
            f"  {n}. {modalities} study {study['study_uid']}: {study['series_count']} series, "
            f"{study['instance_count']} instances, {study['size_bytes'] / 1e6:.1f} MB, "
            f"{state} (generation {study['generation']})"
        )
        for s in study.get("series", []):
            lines.append(
                f"       series {s['series_uid']}: {s['modality'] or '?'} "
                f'{s["body_part"] or "-"} "{s["series_description"] or ""}" '
                f"{s['instance_count']} instances"
            )
    lines += [
        "",
        f"Data folder: {report.data_dir} (index.sqlite, studies/, quarantine/)",
        f"Sample files: {report.work_dir / 'samples'}",
        f"HTTP API (while the node runs; --keep-running keeps it up): {report.api_url}/api/studies",
        "",
        *textwrap.wrap(_NOT_WIRED, width=96),
    ]
    problems = report.errors + report.send_failures + report.mismatches
    problems += [f"study {uid} did not complete by itself; forced" for uid in report.forced]
    if problems:
        lines += ["", "FAILED:"] + [f"  - {p}" for p in problems]
    else:
        lines += ["", "Demo OK."]
    return "\n".join(lines)


@app.command()
def demo(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="work folder (created); default: a new temporary folder"),
    ] = None,
    stable_seconds: Annotated[
        float, typer.Option(help="stable window before a study counts as complete")
    ] = 2.0,
    timeout: Annotated[float, typer.Option(help="seconds to wait for completion")] = 60.0,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="keep the node up after the summary (Ctrl-C)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Run the node on embedded defaults and send it the bundled synthetic sample studies."""
    from node.log import configure

    configure(json_lines=False, level="WARNING")
    work_dir = (
        directory.resolve()
        if directory is not None
        else Path(tempfile.mkdtemp(prefix="ainode-demo-"))
    )
    work_dir.mkdir(parents=True, exist_ok=True)

    def echo(line: str) -> None:
        typer.echo(line, err=as_json)

    printed = False

    def show(report: DemoReport) -> None:
        nonlocal printed
        printed = True
        if as_json:
            typer.echo(json.dumps(report.to_json(), indent=2))
        else:
            typer.echo(format_summary(report))
        if keep_running and report.ok:
            echo(
                f"\nnode running: browse {report.api_url}/api/studies or "
                f"{report.api_url}/api/docs; Ctrl-C to stop"
            )
            try:
                while True:
                    time.sleep(1.0)
            except KeyboardInterrupt:
                echo("stopping")

    echo(f"ainode demo: synthetic sample data, embedded defaults, work folder {work_dir}")
    report = run_demo(
        work_dir, stable_seconds=stable_seconds, timeout_seconds=timeout, echo=echo, on_done=show
    )
    if not printed:
        show(report)
    if not report.ok:
        raise typer.Exit(1)
