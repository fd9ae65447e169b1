"""``ainode demo``: the whole node on embedded defaults with the bundled synthetic studies.

In a fresh folder (a temporary one, or ``--dir``) it starts a local Orthanc as the "PACS" (when
Debian's ``orthanc`` is installed) and a node on free loopback ports, writes the two sample
studies (a chest CT phantom and a chest radiograph), sends them over C-STORE like a scanner would,
waits for the stable window to declare them complete, checks that every instance was stored byte
for byte, waits while the default rules route the series to the demo models and the result
objects are delivered to the PACS and a results folder (for the chest CT rule's four models one
combined SEG, SR, key-image series and KOS, see docs/results.md), and prints, per study, which
rules matched, which models ran, what they produced and where it went.
Exit status 0 only when every step succeeded.
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
_DEMO_NOTE = (
    "Every model here is a DEMO trained on synthetic phantoms: its results say so in the series "
    "description and burned into the images. Not for clinical use."
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
    pacs_url: str = ""
    results_dir: Path | None = None
    jobs_seconds: float | None = None
    pipeline: dict[str, dict[str, Any]] = field(default_factory=dict)

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
            "pacs_url": self.pacs_url,
            "results_dir": str(self.results_dir) if self.results_dir else None,
            "jobs_seconds": None if self.jobs_seconds is None else round(self.jobs_seconds, 3),
            "pipeline": self.pipeline,
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
    jobs_timeout_seconds: float = 900.0,
    use_pacs: bool = True,
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
    jobs_timeout_seconds:
        How long to wait for every job and delivery to finish.
    use_pacs:
        Start a local Orthanc as the PACS destination when Orthanc is installed.
    echo:
        Where progress lines go.
    on_done:
        Called with the finished report while the node still runs (to print it and, e.g., wait
        for Ctrl-C); the node stops when it returns.  Not called when a step failed early.
    """
    import httpx

    from node.app import Node
    from node.config import Config, NodeConfig, StudyConfig

    data_dir = work_dir / "data"
    report = DemoReport(work_dir=work_dir, data_dir=data_dir, stable_seconds=stable_seconds)
    report.results_dir = work_dir / "results"
    destinations, pacs = _destinations(work_dir, report, use_pacs=use_pacs, echo=echo)
    config = Config(
        node=NodeConfig(data_dir=data_dir, host="127.0.0.1", dicom_port=0, http_port=0),
        study=StudyConfig(stable_seconds=stable_seconds),
        destinations=destinations,
    )
    node = Node(config)
    try:
        node.start()
    except Exception as exc:  # noqa: BLE001 - reported as the failed step
        report.errors.append(f"node did not start: {exc}")
        if pacs is not None:
            pacs.stop()
        return report
    try:
        report.api_url = f"http://127.0.0.1:{node.http_port}"
        report.dicom_address = f"127.0.0.1:{node.dicom_port} (AE {config.node.ae_title})"
        where = f"; PACS (Orthanc) {pacs.url}" if pacs else ""
        echo(f"[1/7] node started: DICOM {report.dicom_address}, HTTP {report.api_url}{where}")
        files = _send_samples(node, config.node.ae_title, work_dir, report, echo)
        with httpx.Client(base_url=report.api_url, timeout=30) as client:
            study_uids = _wait_complete(client, report, timeout_seconds, echo)
            _verify(node, files, report)
            echo(
                f"[5/7] verified: {report.verified}/{len(files)} instances indexed, data sets "
                "stored byte-identical"
            )
            for uid in study_uids:
                report.studies.append(_get_json(client, f"/api/studies/{uid}?events=0"))
        _wait_pipeline(node, study_uids, report, jobs_timeout_seconds, echo)
        if on_done is not None:
            on_done(report)
    except (DemoError, AinodeError) as exc:
        report.errors.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure is a failed demo, reported, not raised
        log.exception("demo.failed")
        report.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        node.stop()
        if pacs is not None:
            pacs.stop()
    return report


def _destinations(
    work_dir: Path, report: DemoReport, *, use_pacs: bool, echo: Callable[[str], None]
) -> tuple[dict[str, Any], Any]:
    """The results folder, and a local Orthanc as the PACS when it is installed and starts."""
    from node.cli.demo_pacs import LocalPacs, orthanc_binary, start_local_pacs
    from node.config import DimseDestination, FolderDestination

    results_dir = report.results_dir or work_dir / "results"
    destinations: dict[str, Any] = {
        "results-folder": FolderDestination(type="folder", path=results_dir)
    }
    pacs: LocalPacs | None = None
    if use_pacs and orthanc_binary() is not None:
        try:
            pacs = start_local_pacs(work_dir / "pacs")
        except RuntimeError as exc:
            echo(f"      local Orthanc not started ({exc}); results go to the folder only")
        else:
            report.pacs_url = pacs.explorer_url
            destinations["pacs"] = DimseDestination(
                host="127.0.0.1", port=pacs.dicom_port, ae_title=pacs.ae_title
            )
    return destinations, pacs


def _send_samples(
    node: Any, ae_title: str, work_dir: Path, report: DemoReport, echo: Callable[[str], None]
) -> list[Path]:
    """Write the sample studies and C-STORE them to the node over one association."""
    from node.cli.send import send_files
    from node.samples import write_sample_studies

    files = write_sample_studies(work_dir / "samples")
    report.files_written = len(files)
    echo(
        f"[2/7] wrote the synthetic sample studies: {len(files)} files under {work_dir / 'samples'}"
    )
    t0 = time.monotonic()
    report.sent, failures = send_files(
        files,
        host="127.0.0.1",
        port=int(node.dicom_port or 0),
        called_aet=ae_title,
        calling_aet=_CALLING_AET,
    )
    report.send_failures = [f"{path.name}: {reason}" for path, reason in failures]
    report.send_seconds = time.monotonic() - t0
    rate = report.sent / report.send_seconds if report.send_seconds > 0 else 0.0
    echo(
        f"[3/7] sent {report.sent}/{len(files)} instances over C-STORE in "
        f"{report.send_seconds:.1f} s ({rate:.0f} instances/s)"
    )
    return files


def _wait_pipeline(
    node: Any,
    study_uids: list[str],
    report: DemoReport,
    timeout_seconds: float,
    echo: Callable[[str], None],
) -> None:
    """Wait until every routed job has ended and every result delivery is done; record them."""
    from node.jobs.store import COMBINE_MODEL
    from node.types import DeliveryState, JobState

    ended = {JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED}
    t0 = time.monotonic()
    deadline = t0 + timeout_seconds
    echo("[6/7] routing with the default rules and running the demo models")
    seen: dict[str, str] = {}
    while True:
        routed = all(node.jobs.routing(uid) is not None for uid in study_uids)
        jobs = [j for uid in study_uids for j in node.jobs.list_jobs(study_uid=uid)]
        for j in jobs:
            if seen.get(j.job.job_id) != j.state.value:
                seen[j.job.job_id] = j.state.value
                what = (
                    f"combined results of {j.job.rule}"
                    if j.job.model == COMBINE_MODEL
                    else j.job.model
                )
                echo(f"      {what}: {j.state.value}")
        if routed and all(j.state in ended for j in jobs):
            break
        if time.monotonic() > deadline:
            report.errors.append(f"jobs still running after {timeout_seconds:g} s")
            break
        time.sleep(0.25)
    report.jobs_seconds = time.monotonic() - t0
    echo("[7/7] delivering results")
    while time.monotonic() < deadline:
        pending = node.outbox.list(state=DeliveryState.PENDING, limit=1)
        if not pending:
            break
        time.sleep(0.25)
    for uid in study_uids:
        _record_study(node, uid, report)
    if not any(p["jobs"] for p in report.pipeline.values()):
        report.errors.append("no model ran on the sample studies (check the default rules)")


def _record_study(node: Any, uid: str, report: DemoReport) -> None:
    """Put one study's rules, jobs and deliveries in the report, and what went wrong."""
    from node.types import DeliveryState, JobState

    routing = node.jobs.routing(uid) or {}
    decisions = (routing.get("decisions") or {}).get("decisions", [])
    jobs = node.jobs.list_jobs(study_uid=uid)
    deliveries = node.outbox.list(study_uid=uid, limit=100000)
    by_dest: dict[str, dict[str, int]] = {}
    for d in deliveries:
        by_dest.setdefault(d.destination, {}).setdefault(d.state.value, 0)
        by_dest[d.destination][d.state.value] += 1
    report.pipeline[uid] = {
        "rules": sorted({d["rule"] for d in decisions if not d.get("ignored")}),
        "ignored_by": sorted({d["rule"] for d in decisions if d.get("ignored")}),
        "jobs": [
            {
                "model": j.job.model,
                "rule": j.job.rule,
                "state": j.state.value,
                "reason": j.reason if j.state is not JobState.SUCCEEDED else None,
                "seconds": None
                if j.finished_at is None or j.started_at is None
                else round(j.finished_at - j.started_at, 2),
                "timings_seconds": {
                    k: round(float(v), 3)
                    for k, v in j.outputs.get("timings_seconds", {}).items()
                    if k in ("load", "model", "write")
                },
                "objects": [o["modality"] for o in j.outputs.get("objects", [])],
                # its prediction is part of the rule's combined result set
                "combined": bool(j.outputs.get("combined_by")),
            }
            for j in sorted(jobs, key=lambda r: r.created_at)
        ],
        "deliveries": by_dest,
    }
    for j in jobs:
        if j.state is not JobState.SUCCEEDED:
            report.errors.append(f"job {j.job.model} on study {uid}: {j.state.value}: {j.reason}")
    for dest, states in by_dest.items():
        bad = {k: v for k, v in states.items() if k != DeliveryState.DELIVERED.value}
        if bad:
            report.errors.append(f"deliveries to {dest} for study {uid} not done: {bad}")


def _wait_complete(
    client: Any, report: DemoReport, timeout_seconds: float, echo: Callable[[str], None]
) -> list[str]:
    """Poll the API until every received study is complete; force the stragglers at timeout."""
    echo(f"[4/7] waiting for the stable window ({report.stable_seconds:g} s) to complete studies")
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
    from node.jobs.store import COMBINE_MODEL

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
        pipe = report.pipeline.get(study["study_uid"], {})
        rules = ", ".join(pipe.get("rules", [])) or "none"
        lines.append(f"       rules matched: {rules}")
        for job in pipe.get("jobs", []):
            t = job["timings_seconds"]
            split = ", ".join(f"{k} {v:.1f} s" for k, v in t.items())
            took = f" in {job['seconds']:.1f} s ({split})" if job["seconds"] is not None else ""
            objects = ", ".join(job["objects"]) or (
                "into the combined results" if job.get("combined") else "no objects"
            )
            what = (
                f"combined results of {job['rule']}"
                if job["model"] == COMBINE_MODEL
                else f"model {job['model']}"
            )
            lines.append(f"       {what}: {job['state']}{took} -> {objects}")
            if job["reason"]:
                lines.append(f"         reason: {job['reason']}")
        for dest, states in pipe.get("deliveries", {}).items():
            counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
            lines.append(f"       delivered to {dest}: {counts}")
    lines += [
        "",
        f"Data folder: {report.data_dir} (index.sqlite, studies/, quarantine/)",
        f"Sample files: {report.work_dir / 'samples'}",
        f"Result files: {report.results_dir}",
        f"HTTP API (while the node runs; --keep-running keeps it up): {report.api_url}/api/studies",
    ]
    if report.pacs_url:
        lines.append(f"PACS (Orthanc Explorer, while the demo runs): {report.pacs_url}")
    if report.jobs_seconds is not None:
        lines.append(f"Routing + models + results took {report.jobs_seconds:.1f} s")
    lines += ["", *textwrap.wrap(_DEMO_NOTE, width=96)]
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
    pacs: Annotated[
        bool,
        typer.Option("--pacs/--no-pacs", help="start a local Orthanc as the PACS when installed"),
    ] = True,
    jobs_timeout: Annotated[
        float, typer.Option(help="seconds to wait for the models and deliveries")
    ] = 900.0,
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
        work_dir,
        stable_seconds=stable_seconds,
        timeout_seconds=timeout,
        jobs_timeout_seconds=jobs_timeout,
        use_pacs=pacs,
        echo=echo,
        on_done=show,
    )
    if not printed:
        show(report)
    if not report.ok:
        raise typer.Exit(1)
