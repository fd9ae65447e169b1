"""``ainode send --to HOST:PORT[:AET] PATH...``: C-STORE files over ONE association.

Files are sent as they are on disk (no decoding, no transcoding): one presentation context per
(SOP class, transfer syntax) pair found in the files' meta (PS3.7 D.3.3.4.1).  A progress bar shows
the transfer; every file that fails is listed with its reason, and the exit code is 2 if any did.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from node.cli import app
from node.cli._target import parse_peer
from node.errors import DestinationError

if TYPE_CHECKING:
    from pynetdicom.association import Association

__all__ = ["send", "send_files"]

_MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1..255
_WARNINGS = {0x0001, 0xB000, 0xB006, 0xB007}  # PS3.4 B.2.3: stored, with a warning


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


def send_files(
    paths: list[Path],
    *,
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str = "AINODE",
    timeout: float = 60.0,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[int, list[tuple[Path, str]]]:
    """C-STORE files (folders are recursed) over ONE association, bytes unchanged.

    Parameters
    ----------
    paths:
        Files or folders.
    host, port, called_aet:
        The receiving SCP.
    calling_aet:
        Our AE title.
    timeout:
        ACSE/DIMSE/network timeout in seconds.
    on_progress:
        Called as ``on_progress(done, total)`` after each file.

    Returns
    -------
    tuple
        (number of files acknowledged with success/warning, [(path, reason) of each failure]).

    Raises
    ------
    DestinationError
        No association could be established (refused, unreachable) or too many contexts.
    """
    from pynetdicom import AE, _config

    _config.STORE_SEND_CHUNKED_DATASET = True  # stream files as they are: never decode
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
    total = len(files) + len(failures)
    done = len(failures)
    if on_progress is not None and done:
        on_progress(done, total)
    if not files:
        return 0, failures
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, tsuid in pairs:
        ae.add_requested_context(sop_class, [tsuid])
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        raise DestinationError(
            f"no association with {host}:{port} (called AE '{called_aet}', calling AE "
            f"'{calling_aet}'): {'rejected' if assoc.is_rejected else 'no answer'}; check host, "
            "port and that the peer accepts this calling AE title"
        )
    with suppress(AttributeError, OSError):  # small requests must not wait on delayed ACKs
        assoc.dul.socket.socket.setsockopt(  # type: ignore[union-attr]
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
    try:
        sent = _store_each(assoc, files, failures, done, total, on_progress)
    finally:
        if assoc.is_established:
            assoc.release()
    return sent, failures


def _store_each(
    assoc: Association,
    files: list[_File],
    failures: list[tuple[Path, str]],
    done: int,
    total: int,
    on_progress: Callable[[int, int], None] | None,
) -> int:
    """C-STORE each file on ``assoc``; failures are appended; the number acknowledged."""
    sent = 0
    for msg_id, f in enumerate(files, start=1):
        if not assoc.is_established:
            failures.append((f.path, "association lost"))
        else:
            try:
                status = assoc.send_c_store(f.path, msg_id=msg_id % 65536)
                code = int(getattr(status, "Status", -1))
            except Exception as exc:  # noqa: BLE001
                failures.append((f.path, f"{type(exc).__name__}: {exc}"))
            else:
                if code == 0x0000 or code in _WARNINGS:
                    sent += 1
                elif code == -1:
                    failures.append((f.path, "no response (timeout or abort)"))
                else:
                    comment = str(getattr(status, "ErrorComment", "") or "")
                    failures.append((f.path, f"status 0x{code:04X} {comment}".strip()))
        done += 1
        if on_progress is not None:
            on_progress(done, total)
    return sent


@app.command()
def send(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders (recursed)")],
    to: Annotated[str, typer.Option("--to", help="HOST:PORT[:AET] of the receiver")],
    aet: Annotated[str, typer.Option("--aet", help="our (calling) AE title")] = "AINODE",
    timeout: Annotated[float, typer.Option(help="network timeout in seconds")] = 60.0,
) -> None:
    """Send DICOM files to a C-STORE SCP over one association, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    peer = parse_peer(to)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("sending", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        sent, failures = send_files(
            paths,
            host=peer.host,
            port=peer.port,
            called_aet=peer.ae_title,
            calling_aet=aet,
            timeout=timeout,
            on_progress=advance,
        )
    for path, reason in failures:
        typer.echo(f"FAILED {path}: {reason}", err=True)
    typer.echo(f"sent {sent} of {sent + len(failures)} file(s) to {to}")
    if failures:
        raise typer.Exit(2)
