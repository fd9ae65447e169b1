"""A throw-away local Orthanc that plays the PACS for ``ainode demo`` (when Debian's is installed).

It listens on free loopback ports only, stores into the demo's work folder, has the DICOMweb
plugin (when present) so viewers can browse it, and is stopped when the demo ends.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalPacs", "orthanc_binary", "start_local_pacs"]

_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def orthanc_binary() -> str | None:
    """Path of the Orthanc server program, or None when it is not installed."""
    found = shutil.which("Orthanc")
    if found:
        return found
    return "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalPacs:
    """A running local Orthanc."""

    process: subprocess.Popen[bytes]
    http_port: int
    dicom_port: int
    ae_title: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def explorer_url(self) -> str:
        return f"{self.url}/app/explorer.html"

    def instance_count(self) -> int:
        with urllib.request.urlopen(f"{self.url}/statistics", timeout=10) as resp:
            return int(json.load(resp)["CountInstances"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_local_pacs(work_dir: Path, *, ae_title: str = "DEMOPACS") -> LocalPacs:
    """Start Orthanc storing under ``work_dir``; raise RuntimeError when it does not come up."""
    exe = orthanc_binary()
    if exe is None:
        raise RuntimeError("Orthanc is not installed")
    work_dir.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = _free_port(), _free_port()
    config = {
        "Name": "ainode demo PACS",
        "StorageDirectory": str(work_dir / "storage"),
        "IndexDirectory": str(work_dir / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": ae_title,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "UnknownSopClassAccepted": True,
        "Plugins": [str(_PLUGIN)] if _PLUGIN.exists() else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    cfg = work_dir / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=2))
    log = work_dir / "orthanc.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [exe, "--no-jobs", str(cfg)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={"TCP_NODELAY": "1", "PATH": "/usr/sbin:/usr/bin:/bin"},
        )
    pacs = LocalPacs(proc, http_port, dicom_port, ae_title, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with status {proc.returncode} (log: {log})")
        try:
            pacs.instance_count()
            return pacs
        except OSError:
            time.sleep(0.2)
    pacs.stop()
    raise RuntimeError(f"Orthanc did not answer within 30 s (log: {log})")
