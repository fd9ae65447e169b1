"""A real Orthanc on ports chosen by the caller (so a restart keeps its address), optionally
requiring HTTP basic auth or, through a Lua request filter, a bearer token.  tests/peers/orthanc.py
picks fresh ports and polls /system without credentials, which these scenarios cannot use."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.peers.orthanc import DICOMWEB_PLUGIN, OrthancPeer
from tests.util import free_port, wait_until


@contextlib.contextmanager
def start_pinned_orthanc(
    workdir: Path,
    *,
    http_port: int | None = None,
    dicom_port: int | None = None,
    users: dict[str, str] | None = None,
    modalities: dict[str, tuple[str, str, int]] | None = None,
    lua: str | None = None,
) -> Iterator[OrthancPeer]:
    exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(exe).exists():
        pytest.fail("Orthanc is not installed (deploy/install.sh installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    http_port = http_port or free_port()
    dicom_port = dicom_port or free_port()
    cfg = {
        "Name": "ainode-test-orthanc",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "UnknownSopClassAccepted": True,
        "DicomModalities": {k: list(v) for k, v in (modalities or {}).items()},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "SyncStorageArea": True,
    }
    if lua is not None:
        (workdir / "filter.lua").write_text(lua)
        cfg["LuaScripts"] = [str(workdir / "filter.lua")]
    cfg_path = workdir / "orthanc.json"
    cfg_path.write_text(json.dumps(cfg))
    log = workdir / "orthanc.log"
    env = dict(os.environ, TCP_NODELAY="1")
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [exe, "--no-jobs", str(cfg_path)], stdout=fh, stderr=subprocess.STDOUT, env=env
        )
    peer = OrthancPeer(http_port, dicom_port, "ORTHANC", workdir, log)
    expected = {401} if users else {403} if lua else {200}

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{peer.url}/system", timeout=1).status_code in expected
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=30, what="Orthanc answering /system")
        yield peer
    except BaseException:
        print(f"--- orthanc log ({log}) ---\n{log.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
