"""Quarantine: keep what ingest refused, with a JSON reason, under ``data_dir/quarantine``."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import shutil
import time
import uuid
from pathlib import Path

import pydicom

from node.errors import IngestError
from node.ingest.header import is_valid_uid
from node.store.index import Index

__all__ = ["quarantine"]

log = logging.getLogger(__name__)


def quarantine(
    quarantine_dir: Path,
    index: Index,
    data: bytes | Path,
    exc: IngestError,
    *,
    calling_aet: str | None,
    source: str,
    min_free_bytes: int = 0,
) -> Path | None:
    """Write ``data`` and ``<name>.json`` (reason, status, sender, sha256) and add an event.

    ``data`` may be a received file in the spool's ``tmp/``: it is then renamed into the
    quarantine (same file system, no copy, no extra space).  Never raises: the refusal itself
    is the answer to the sender.  Returns the file written,
    or None when even quarantining failed (disk full).
    """
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = quarantine_dir / f"{stamp}-{uuid.uuid4().hex[:12]}.dcm"
    if isinstance(data, Path):
        digest = hashlib.sha256()
        size = 0
        try:
            with data.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError:
            pass
        sha = digest.hexdigest()
        study_uid, sop_uid = _best_effort_uids(data)
    else:
        size = len(data)
        sha = hashlib.sha256(data).hexdigest()
        study_uid, sop_uid = _best_effort_uids(io.BytesIO(data))
    reason = {
        "reason": str(exc),
        "error": exc.type,
        "dicom_status": f"0x{exc.dicom_status:04X}",
        "calling_aet": calling_aet,
        "source": source,
        "sha256": sha,
        "bytes": size,
        "received_at": time.time(),
        "study_uid": study_uid,
        "sop_uid": sop_uid,
    }
    try:
        if isinstance(data, Path):
            data.replace(path)
        else:
            if shutil.disk_usage(quarantine_dir).free - size < min_free_bytes:
                raise OSError(errno.ENOSPC, "no room to quarantine")
            path.write_bytes(data)
        path.with_suffix(".json").write_text(json.dumps(reason, indent=2))
        index.record_quarantine(study_uid=study_uid, sop_uid=sop_uid, reason=str(exc), path=path)
    except Exception:  # noqa: BLE001 - quarantine is best effort
        log.exception("instance.quarantine_failed", extra={"sha256": sha[:12]})
        return None
    log.warning(
        "instance.quarantined",
        extra={"error": exc.type, "sha256": sha[:12], "sop_uid": sop_uid, "source": source},
    )
    return path


def _best_effort_uids(source: io.BytesIO | Path) -> tuple[str | None, str | None]:
    """Study and SOP Instance UID of a refused file, when they can be read and are valid."""
    try:
        ds = pydicom.dcmread(source, stop_before_pixels=True, force=True, defer_size=1 << 20)
        study = str(ds.get("StudyInstanceUID", "") or "")
        sop = str(ds.get("SOPInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 - unreadable is the usual reason for being here
        return None, None
    return (study if is_valid_uid(study) else None, sop if is_valid_uid(sop) else None)
