"""``ainode echo HOST:PORT[:AET]``: C-ECHO a DICOM peer (PS3.7 9.1.5)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from node.cli import app
from node.cli._target import parse_peer
from node.errors import DestinationError

__all__ = ["echo"]


@app.command()
def echo(
    target: Annotated[str, typer.Argument(help="HOST:PORT[:AET] of the peer")],
    aet: Annotated[str, typer.Option("--aet", help="our (calling) AE title")] = "AINODE",
    timeout: Annotated[float, typer.Option(help="seconds to wait for the peer")] = 10.0,
) -> None:
    """Check that a DICOM peer answers C-ECHO; exit 2 when it does not."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    peer = parse_peer(target)
    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    start = time.monotonic()
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not assoc.is_established:
        raise DestinationError(
            f"no association with {peer.host}:{peer.port} (called AE '{peer.ae_title}', "
            f"calling AE '{aet}'): {'rejected' if assoc.is_rejected else 'no answer'}; check "
            "host, port and that the peer accepts this calling AE title"
        )
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = int(getattr(status, "Status", -1))
    if code != 0:
        raise DestinationError(f"C-ECHO to {target} answered status 0x{code & 0xFFFF:04X}")
    typer.echo(f"C-ECHO {target}: success ({(time.monotonic() - start) * 1000:.0f} ms)")
