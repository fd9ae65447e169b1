"""How the spool makes a received file and its name durable, with as few cache flushes as possible.

Two modes, chosen per data directory at start (``node.ingest_sync``):

``full`` (POSIX, any file system)
    write the temporary file, ``fdatasync`` it, rename it into place, ``fsync`` the directory.
    Two device cache flushes per instance (one per batch for the directory).

``journal`` (ext4 and XFS only: journaled metadata, ordered commits)
    write the temporary file and wait for the data to reach the device with
    ``sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`` (no cache flush, no journal commit),
    rename it into place, then ONE ``fsync`` of the last file renamed in the batch.

Why one ``fsync`` is enough in ``journal`` mode (Linux ext4 ``ext4_sync_file`` /
``jbd2_complete_transaction``; XFS ``xfs_file_fsync`` / ``xfs_log_force_seq``):

1. A rename changes the renamed inode (its ctime), so the inode's "last transaction" becomes the
   journal transaction (ext4) or log sequence (XFS) holding the rename.  ``fsync`` of that file
   waits until that transaction is committed.
2. Journal transactions commit in order, so committing the last rename of a batch commits every
   earlier rename, ``mkdir`` and block allocation of that batch with it.
3. Every file's data had finished writing to the device (``WAIT_AFTER`` also reports writeback
   errors for that file) before its rename was issued; the commit record is written with a cache
   flush before it (REQ_PREFLUSH), or ``fsync`` issues the flush itself when the transaction had
   already committed.  So once the rename is durable, the data it names is durable too.
4. A crash before the commit leaves the file under ``tmp/`` (cleared on start) or, if an earlier
   journal commit already carried the rename, a *complete* file under its final name (its data
   was on the device before the rename was issued); the reconcile walk indexes it.  A
   half-written file never gets a final name.

That is one journal commit per batch instead of one per instance plus one per batch.  It relies
on file-system behaviour, not POSIX; on any other file system (or ``ingest_sync: full``) the spool
uses the POSIX sequence.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

__all__ = ["SyncMode", "file_system_type", "fsync_dir", "fsync_path", "resolve_mode", "write_back"]

SyncMode = Literal["full", "journal"]

#: File systems whose fsync commits an ordered metadata journal (see the module docstring).
_JOURNAL_FS = frozenset({"ext4", "xfs"})

# sync_file_range(2) flags (linux/fs.h)
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


def file_system_type(path: Path) -> str | None:
    """The type (``ext4``, ``xfs``, ``tmpfs``...) of the file system holding ``path``, or None.

    Read from ``/proc/self/mountinfo`` by device number, so bind mounts resolve correctly.
    """
    try:
        dev = os.stat(path).st_dev
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    want = f"{os.major(dev)}:{os.minor(dev)}"
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[2] != want or " - " not in line:
            continue
        after = line.split(" - ", 1)[1].split()
        return after[0] if after else None
    return None


def resolve_mode(path: Path, requested: Literal["auto", "full"]) -> SyncMode:
    """``journal`` if allowed (``auto``) and safe for the file system of ``path``, else ``full``."""
    if requested == "full" or _sync_file_range is None:
        return "full"
    return "journal" if file_system_type(path) in _JOURNAL_FS else "full"


def write_back(fd: int) -> None:
    """Write the file's dirty pages to the device and wait (no cache flush, no journal commit).

    Raises
    ------
    OSError
        Writeback failed (EIO, ENOSPC...).
    """
    assert _sync_file_range is not None
    if _sync_file_range(fd, 0, 0, _WAIT_BEFORE | _WRITE | _WAIT_AFTER) != 0:
        err = ctypes.get_errno() or errno.EIO
        raise OSError(err, os.strerror(err))


def fsync_dir(path: Path) -> None:
    """``fsync`` a directory, making the names in it durable (POSIX)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    """``fsync`` (not ``fdatasync``: the rename changed only the inode's ctime) a stored file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
