"""dcmtk ``storescp`` as a real DIMSE destination on a free loopback port, for delivery tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require_tool
from tests.util import free_port, port_open, wait_until

#: storescp config: CT and Secondary Capture only, any transfer syntax (no SEG, no SR).
CT_SC_ONLY = """\
[[TransferSyntaxes]]
[Any]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = LittleEndianImplicit
[[PresentationContexts]]
[CtSc]
PresentationContext1 = VerificationSOPClass\\Any
PresentationContext2 = CTImageStorage\\Any
PresentationContext3 = SecondaryCaptureImageStorage\\Any
[[Profiles]]
[CtScOnly]
PresentationContexts = CtSc
"""


@dataclass(frozen=True)
class StorescpPeer:
    port: int
    aet: str
    out: Path
    log: Path

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.rglob("*") if p.is_file())


@contextlib.contextmanager
def start_storescp(
    workdir: Path,
    *,
    args: Sequence[str] = (),
    aet: str = "STORESCP",
    port: int | None = None,
    config: str | None = None,
) -> Iterator[StorescpPeer]:
    """Run ``storescp`` writing into ``workdir/out``; ``config`` is a ``-xf`` file (profile first
    section under [[Profiles]])."""
    exe = require_tool("storescp")
    out = workdir / "out"
    out.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [exe, "-aet", aet, "-od", str(out), "-uf", "-dhl", *args]
    if config is not None:
        cfg = workdir / "storescp.cfg"
        cfg.write_text(config)
        profile = config.split("[[Profiles]]")[1].split("[")[1].split("]")[0]
        cmd += ["-xf", str(cfg), profile]
    cmd.append(str(port))
    log = workdir / "storescp.log"
    env = dict(os.environ, TCP_NODELAY="1")
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"storescp exited {proc.returncode}:\n{log.read_text()}")
        return port_open(port)

    try:
        wait_until(ready, timeout=10, what="storescp listening")
        yield StorescpPeer(port, aet, out, log)
    except BaseException:
        print(f"--- storescp log ---\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
