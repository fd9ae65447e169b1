"""``ainode send --to HOST:PORT[:AET] PATH...``: C-STORE files over ONE association.

Files are sent as they are on disk (no decoding, no transcoding): one presentation context per
(SOP class, transfer syntax) pair found in the files' meta (PS3.7 D.3.3.4.1).  A progress bar shows
the transfer; every file that fails is listed with its reason, and the exit code is 2 if any did.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from node.cli import app
from node.cli._target import parse_peer
from node.errors import DestinationError

__all__ = ["send"]

_MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1..255


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    sop_class_uid: str
    transfer_syntax_uid: str


def _collect(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        else:
            out.append(p)
    return out


def _meta(path: Path) -> _File:
    from pydicom.filereader import read_file_meta_info

    meta = read_file_meta_info(path)
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
    tsuid = str(meta.get("TransferSyntaxUID", "") or "")
    if not sop_class or not tsuid:
        raise ValueError("file meta lacks Media Storage SOP Class UID or Transfer Syntax UID")
    return _File(path, sop_class, tsuid)


@app.command()
def send(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders (recursed)")],
    to: Annotated[str, typer.Option("--to", help="HOST:PORT[:AET] of the receiver")],
    aet: Annotated[str, typer.Option("--aet", help="our (calling) AE title")] = "AINODE",
    timeout: Annotated[float, typer.Option(help="network timeout in seconds")] = 60.0,
) -> None:
    """Send DICOM files to a C-STORE SCP over one association, with a progress bar."""
    from pynetdicom import AE, _config
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    _config.STORE_SEND_CHUNKED_DATASET = True  # stream files as they are: never decode
    peer = parse_peer(to)
    failures: list[tuple[Path, str]] = []
    files: list[_File] = []
    for path in _collect(paths):
        try:
            files.append(_meta(path))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a per-file failure
            failures.append((path, f"not a DICOM file: {exc}"))
    pairs = sorted({(f.sop_class_uid, f.transfer_syntax_uid) for f in files})
    if len(pairs) > _MAX_CONTEXTS:
        raise DestinationError(
            f"{len(pairs)} (SOP class, transfer syntax) pairs need more than {_MAX_CONTEXTS} "
            "presentation contexts; send the files in smaller groups"
        )
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, tsuid in pairs:
        ae.add_requested_context(sop_class, [tsuid])
    sent = 0
    if files:
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
        if not assoc.is_established:
            raise DestinationError(
                f"no association with {peer.host}:{peer.port} (called AE '{peer.ae_title}'): "
                f"{'rejected' if assoc.is_rejected else 'no answer'}"
            )
        try:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                transient=not sys.stderr.isatty(),
                console=None,
            ) as progress:
                task = progress.add_task("sending", total=len(files))
                for msg_id, f in enumerate(files, start=1):
                    if not assoc.is_established:
                        failures.append((f.path, "association lost"))
                        progress.advance(task)
                        continue
                    try:
                        status = assoc.send_c_store(f.path, msg_id=msg_id % 65536)
                        code = int(getattr(status, "Status", -1))
                    except Exception as exc:  # noqa: BLE001
                        failures.append((f.path, f"{type(exc).__name__}: {exc}"))
                    else:
                        if code in (0x0000, 0xB000, 0xB007, 0xB006):
                            sent += 1
                        elif code == -1:
                            failures.append((f.path, "no response (timeout or abort)"))
                        else:
                            comment = str(getattr(status, "ErrorComment", "") or "")
                            failures.append((f.path, f"status 0x{code:04X} {comment}".strip()))
                    progress.advance(task)
        finally:
            if assoc.is_established:
                assoc.release()
    for path, reason in failures:
        typer.echo(f"FAILED {path}: {reason}", err=True)
    typer.echo(f"sent {sent} of {sent + len(failures)} file(s) to {to}")
    if failures:
        raise typer.Exit(2)
