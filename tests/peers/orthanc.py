"""A real Orthanc (Debian package, DICOMweb plugin) on free loopback ports, for tests.

Use ``start_orthanc(workdir, modalities={...})`` as a context manager, or the ``orthanc``
fixture (no modalities) from tests/conftest.py.  Fixed ports (so a restart keeps the address),
HTTP basic users, a Lua script and any other Orthanc configuration key can be passed too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.util import free_port, wait_until

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@dataclass(frozen=True)
class OrthancPeer:
    """A running Orthanc: REST at ``url``, DICOMweb at ``dicomweb_url``, DIMSE at ``dicom_port``."""

    http_port: int
    dicom_port: int
    aet: str
    workdir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def get(self, path: str) -> object:
        """GET a REST path and return the decoded JSON."""
        r = httpx.get(f"{self.url}{path}", timeout=30)
        r.raise_for_status()
        return r.json()

    def instances(self) -> list[str]:
        """Orthanc ids of every stored instance."""
        out = self.get("/instances")
        assert isinstance(out, list)
        return [str(x) for x in out]


@contextlib.contextmanager
def start_orthanc(
    workdir: Path,
    *,
    modalities: Mapping[str, tuple[str, str, int]] | None = None,
    aet: str = "ORTHANC",
    extra: Mapping[str, object] | None = None,
    http_port: int | None = None,
    dicom_port: int | None = None,
    users: Mapping[str, str] | None = None,
    lua: str | None = None,
) -> Iterator[OrthancPeer]:
    """Start Orthanc with its own storage in ``workdir``; stop it (terminate, then kill) at exit.

    ``modalities`` maps a name to (AET, host, port): the DICOM peers Orthanc may send to and
    accept from.  ``http_port``/``dicom_port`` default to free ports; ``users`` (name ->
    password) turns HTTP basic authentication on; ``lua`` is installed as a Lua script (e.g. an
    ``IncomingHttpRequestFilter``); ``extra`` overrides or adds configuration keys.  Starting
    again in the same ``workdir`` keeps the stored instances and appends to the log.
    """
    exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(exe).exists():
        pytest.fail("Orthanc is not installed (deploy/install.sh installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    http_port = http_port or free_port()
    dicom_port = dicom_port or free_port()
    config: dict[str, object] = {
        "Name": "ainode-test-orthanc",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": dict(users or {}),
        "HttpServerEnabled": True,
        "DicomServerEnabled": True,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "UnknownSopClassAccepted": True,
        "DicomModalities": {k: list(v) for k, v in (modalities or {}).items()},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"},
        "StableAge": 1,
        "HttpTimeout": 60,
        "SyncStorageArea": True,
    }
    if lua is not None:
        (workdir / "script.lua").write_text(lua)
        config["LuaScripts"] = [str(workdir / "script.lua")]
    config.update(extra or {})
    cfg = workdir / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=2))
    log = workdir / "orthanc.log"
    env = dict(os.environ, TCP_NODELAY="1")
    with log.open("ab") as log_fh:
        proc = subprocess.Popen(
            [exe, "--no-jobs", str(cfg)], stdout=log_fh, stderr=subprocess.STDOUT, env=env
        )
    peer = OrthancPeer(http_port, dicom_port, aet, workdir, log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            # any HTTP answer will do: with users or a Lua filter, /system answers 401 or 403
            return httpx.get(f"{peer.url}/system", timeout=1).status_code in (200, 401, 403)
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
