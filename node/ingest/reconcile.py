"""Re-index stored files the index lost: the files are the truth, the index is rebuilt from them.

The index commits with ``synchronous=NORMAL`` (WAL): a commit survives a crash of the process at
once, but a power loss may take back the last transactions.  Every stored file and its name were
durable before its index row was written (``node.ingest.durable``: a file gets its final name
only with its complete data on the device), so after an unclean shutdown the spool walks the
series directories changed since the newest indexed arrival and indexes any file the index does
not know.  A clean shutdown leaves a marker file that makes this walk unnecessary.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from node.errors import IngestError
from node.imaging.dicom_json import header_from_dataset
from node.ingest.header import dataset_offset, is_valid_uid, parse_received
from node.store.index import Index, IngestRecord
from node.types import Instance

__all__ = ["reconcile"]

log = logging.getLogger(__name__)

#: Directory times are compared with arrival times of the same machine; allow clock jitter.
_MARGIN_SECONDS = 10.0


def reconcile(studies_dir: Path, index: Index) -> int:
    """Index every ``*.dcm`` under ``studies_dir`` that the index lost; return how many.

    Only series directories modified after the newest indexed arrival (less a margin) are read.
    A lost replacement is resolved by modification time: the newer file is kept.
    """
    newest = index.last_received_at()
    threshold = (newest - _MARGIN_SECONDS) if newest is not None else float("-inf")
    records: list[IngestRecord] = []
    obsolete: list[Path] = []
    if not studies_dir.is_dir():
        return 0
    for study_dir in studies_dir.iterdir():
        if not (study_dir.is_dir() and is_valid_uid(study_dir.name)):
            continue
        for series_dir in study_dir.iterdir():
            if not (series_dir.is_dir() and is_valid_uid(series_dir.name)):
                continue
            if series_dir.stat().st_mtime < threshold:
                continue
            known = index.series_paths(series_dir.name)
            for path in sorted(series_dir.glob("*.dcm")):
                if path in known:
                    continue
                rec = _record(path, index, obsolete)
                if rec is not None:
                    records.append(rec)
    for start in range(0, len(records), 500):
        index.commit(records[start : start + 500])
    for path in obsolete:
        path.unlink(missing_ok=True)
    if records:
        log.warning("index.reconciled", extra={"instances": len(records)})
    return len(records)


def _record(path: Path, index: Index, obsolete: list[Path]) -> IngestRecord | None:
    try:
        data = path.read_bytes()
        header = parse_received(data)
        offset = dataset_offset(data)
    except (OSError, IngestError):
        log.exception("index.reconcile_unreadable", extra={"file": path.name})
        return None
    mtime = path.stat().st_mtime
    prev = index.lookup(header.sop_uid)
    status: str = "stored"
    if prev is not None and prev.path != path:
        if prev.path.is_file() and prev.path.stat().st_mtime > mtime:
            obsolete.append(path)  # an older version whose replacement is indexed
            return None
        status = "replaced"
        obsolete.append(prev.path)
    inst = Instance(
        study_uid=header.study_uid,
        series_uid=header.series_uid,
        sop_uid=header.sop_uid,
        sop_class_uid=header.sop_class_uid,
        transfer_syntax_uid=header.transfer_syntax_uid,
        path=path,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        modality=header.modality,
        body_part=header.body_part,
    )
    return IngestRecord(
        inst,
        "replaced" if status == "replaced" else "stored",
        hashlib.sha256(memoryview(data)[offset:]).hexdigest(),
        "reconcile",
        mtime,
        series_description=header.series_description,
        series_header=None
        if index.has_series(header.series_uid)
        else header_from_dataset(header.dataset),
        previous=prev,
    )
