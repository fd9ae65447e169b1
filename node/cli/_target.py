"""Parsing of ``HOST:PORT[:AET]`` peer addresses shared by ``send`` and ``echo``."""

from __future__ import annotations

from dataclasses import dataclass

import typer

__all__ = ["Peer", "parse_peer"]


@dataclass(frozen=True, slots=True)
class Peer:
    """A DICOM peer: host, port and called AE title."""

    host: str
    port: int
    ae_title: str


def parse_peer(text: str, *, default_aet: str = "ANY-SCP") -> Peer:
    """Parse ``HOST:PORT[:AET]``; raise ``typer.BadParameter`` with the expected form."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise typer.BadParameter(f"'{text}' is not HOST:PORT[:AET]")
    try:
        port = int(parts[1])
    except ValueError:
        raise typer.BadParameter(f"port '{parts[1]}' in '{text}' is not a number") from None
    if not 1 <= port <= 65535:
        raise typer.BadParameter(f"port {port} in '{text}' is out of range 1-65535")
    aet = parts[2] if len(parts) == 3 and parts[2] else default_aet
    if len(aet) > 16:
        raise typer.BadParameter(f"AE title '{aet}' is longer than 16 characters")
    return Peer(parts[0], port, aet)
