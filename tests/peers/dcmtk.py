"""dcmtk peers for tests and benchmarks: ``storescu``/``echoscu`` runs and a ``storescp`` server.

Every tool runs with ``TCP_NODELAY=1`` (Debian's dcmtk otherwise stalls ~40 ms per message).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.util import free_port, port_open, wait_until

__all__ = ["StorescuRun", "TlsFiles", "echoscu", "start_storescp", "storescu", "tool"]


def tool(name: str) -> str:
    """Path of a dcmtk program; raise when it is missing (deploy/install.sh installs dcmtk)."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"dcmtk tool '{name}' is not installed")
    return path


def _env() -> dict[str, str]:
    return dict(os.environ, TCP_NODELAY="1")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throw-away PKI: CA certificate, and a key + certificate signed by it."""

    ca: Path
    cert: Path
    key: Path


@dataclass
class StorescuRun:
    """Result of one ``storescu -v`` run; ``acknowledged`` = files answered with Success."""

    returncode: int
    output: str
    acknowledged: list[Path] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)


_SENDING = re.compile(r"^I: Sending file: (.+)$")
_RESPONSE = re.compile(r"^I: Received Store Response \((.+)\)$")


def parse_storescu(output: str) -> tuple[list[Path], list[Path]]:
    """Files storescu saw acknowledged with Success, and files answered otherwise."""
    acked: list[Path] = []
    failed: list[Path] = []
    current: Path | None = None
    for line in output.splitlines():
        m = _SENDING.match(line.strip())
        if m:
            current = Path(m.group(1))
            continue
        m = _RESPONSE.match(line.strip())
        if m and current is not None:
            (acked if m.group(1) == "Success" else failed).append(current)
            current = None
    return acked, failed


def _tls_args(tls: TlsFiles | None) -> list[str]:
    if tls is None:
        return []
    return ["+tls", str(tls.key), str(tls.cert), "-pw", "+cf", str(tls.ca), "-rc"]


def storescu(
    port: int,
    files: Sequence[Path],
    *,
    called: str = "AINODE",
    calling: str = "STORESCU",
    extra: Sequence[str] = (),
    tls: TlsFiles | None = None,
    timeout: float = 120.0,
) -> StorescuRun:
    """Send ``files`` over one association with ``storescu -v -nh`` (continue after failures)."""
    cmd = [
        tool("storescu"),
        "-v",
        "-nh",
        "-aet",
        calling,
        "-aec",
        called,
        *_tls_args(tls),
        *extra,
        "127.0.0.1",
        str(port),
        *[str(f) for f in files],
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=_env(), timeout=timeout, check=False
    )
    output = proc.stdout + proc.stderr
    acked, failed = parse_storescu(output)
    return StorescuRun(proc.returncode, output, acked, failed)


def echoscu(
    port: int,
    *,
    called: str = "AINODE",
    calling: str = "ECHOSCU",
    tls: TlsFiles | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """One C-ECHO with ``echoscu -v``."""
    cmd = [tool("echoscu"), "-v", "-aet", calling, "-aec", called, *_tls_args(tls)]
    cmd += ["127.0.0.1", str(port)]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=_env(), timeout=timeout, check=False
    )


@contextlib.contextmanager
def start_storescp(out_dir: Path, *, sync: bool = False, port: int | None = None) -> Iterator[int]:
    """Run dcmtk ``storescp`` writing into ``out_dir`` (``sync``: ``sync`` after every file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [tool("storescp"), "-od", str(out_dir), "-aet", "STORESCP", "+xa"]
    if sync:
        # the durable yardstick: fsync each received file before the next one is accepted
        cmd += ["-xcr", "sync #p/#f", "-xs"]
    cmd += [str(port)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(), text=True
    )
    try:
        wait_until(lambda: proc.poll() is not None or port_open(port), 10, "storescp listening")
        if proc.poll() is not None:
            raise RuntimeError(f"storescp exited: {proc.stderr.read() if proc.stderr else ''}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()


def storescu_config(workdir: Path, pairs: Sequence[tuple[str, str]]) -> list[str]:
    """A storescu ``--config-file`` proposing exactly one context per (SOP class, TS) pair.

    With it storescu sends every file in its own transfer syntax (no conversion), including
    retired ones it has no command-line flag for.  Returns the storescu arguments to add.
    """
    pairs = sorted(set(pairs))
    if len(pairs) > 128:
        raise ValueError("more than 128 presentation contexts")
    ts_names = {ts: f"TS{i}" for i, ts in enumerate(sorted({ts for _, ts in pairs}), start=1)}
    lines = ["[[TransferSyntaxes]]"]
    for ts, name in ts_names.items():
        lines += [f"[{name}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", "[Contexts]"]
    for i, (sop_class, ts) in enumerate(pairs, start=1):
        lines.append(f"PresentationContext{i} = {sop_class}\\{ts_names[ts]}")
    lines += ["[[Profiles]]", "[Exact]", "PresentationContexts = Contexts"]
    path = workdir / "storescu.cfg"
    path.write_text("\n".join(lines) + "\n")
    return ["-xf", str(path), "Exact"]


def make_pki(workdir: Path) -> tuple[TlsFiles, TlsFiles]:
    """A throw-away CA and two leaf certificates for 127.0.0.1 (server, client), with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed")
    workdir.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=workdir)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ainode test CA",
    )
    ext = workdir / "leaf.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    out = []
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            str(ext),
        )
        out.append(TlsFiles(workdir / "ca.pem", workdir / f"{name}.pem", workdir / f"{name}.key"))
    return out[0], out[1]
