"""A throw-away PKI made by openssl for TLS tests: a CA, a server certificate for 127.0.0.1 and a
client certificate."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require_tool


def make_pki(d: Path, name: str) -> dict[str, Path]:
    """A CA and two leaf certificates (server with IP SAN 127.0.0.1, client) made by openssl."""
    openssl = require_tool("openssl")
    d.mkdir(parents=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *key, "-days", "2", "-subj", f"/CN={name} CA", "-keyout", "ca.key",
        "-out", "ca.pem")  # fmt: skip
    for leaf in ("server", "client"):
        run("req", *key, "-subj", f"/CN={leaf}",
            "-keyout", f"{leaf}.key", "-out", f"{leaf}.csr")  # fmt: skip
        (d / f"{leaf}.ext").write_text(
            "subjectAltName=IP:127.0.0.1\n" if leaf == "server" else "basicConstraints=CA:FALSE\n"
        )
        run("x509", "-req", "-in", f"{leaf}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{leaf}.ext",
            "-out", f"{leaf}.pem")  # fmt: skip
    return {p.stem if p.suffix == ".pem" else p.name: p for p in d.iterdir()}
