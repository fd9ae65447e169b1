"""STOW-RS: ``POST /dicom-web/studies[/{study}]`` (PS3.18 10.5) on C-STORE's durability rules.

The ``multipart/related; type="application/dicom"`` body is parsed while it streams in, with
python-multipart's ``MultipartParser``.  Each part that is complete is handed to
``Spool.store(..., source="stow")`` right away — the same write/fsync/rename/index path as a
C-STORE, so an instance listed as stored in the response is durable.  Up to 16 parts are stored
concurrently (the spool group-commits them); reading the body waits while they are, so memory
holds at most those parts plus the one arriving, and the body is cut off as soon as it passes
``node.stow_max_bytes``.

Responses (PS3.18 10.5.3), body ``application/dicom+json`` (Store Instances Response Module):

* 200 every instance stored (ReferencedSOPSequence, with RetrieveURL per instance);
* 202 some failed (FailedSOPSequence with FailureReason);
* 409 none stored;
* 415 the request is not ``multipart/related`` of ``application/dicom``;
* 406 the client does not accept ``application/dicom+json`` (XML responses are not offered);
* 413 Content-Length or the streamed body exceeds ``node.stow_max_bytes`` (instances already
  stored before the limit was crossed stay stored; re-sending them is idempotent).

A 400 / 406 / 413 / 415 is an HTTP-level error and answers RFC 9457 problem JSON.
"""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

import pydicom
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydicom.dataset import Dataset
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool

from node.api.deps import NodeView, get_node
from node.api.media import DICOM_JSON, DicomJsonResponse
from node.errors import IngestError
from node.ingest.header import is_valid_uid
from node.web.multipart import Part, PartCollector

__all__ = [
    "DICOM_JSON",
    "REASON_CANNOT_UNDERSTAND",
    "REASON_STUDY_MISMATCH",
    "router",
]

log = logging.getLogger(__name__)
router = APIRouter(tags=["dicomweb"])

_DICOM = "application/dicom"

#: PS3.18 Table 10.5.3-2 / PS3.4 C-STORE status: "cannot understand".
REASON_CANNOT_UNDERSTAND = 0xC000
#: PS3.18: the instance's Study Instance UID differs from the one in the target URI (43265).
REASON_STUDY_MISMATCH = 0xA901
#: PS3.4 Annex B: "processing failure", for errors that are not the instance's fault.
REASON_PROCESSING_FAILURE = 0x0110
#: Parts of one request stored at the same time (bounds memory and worker threads).
_PARTS_IN_FLIGHT = 16


@dataclass(frozen=True, slots=True)
class _Result:
    """One part's fate: an item of ReferencedSOPSequence or of FailedSOPSequence."""

    item: Dataset
    is_stored: bool
    study_uid: str | None = None


@dataclass
class _Outcome:
    stored: list[Dataset] = field(default_factory=list)
    failed: list[Dataset] = field(default_factory=list)
    study_uids: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, results: list[_Result]) -> _Outcome:
        out = cls()
        for r in results:
            if r.is_stored:
                out.stored.append(r.item)
                if r.study_uid:
                    out.study_uids.add(r.study_uid)
            else:
                out.failed.append(r.item)
        return out


def _media_type(value: str | None) -> tuple[str, dict[str, str]]:
    media, params = parse_options_header(value or "")
    return media.decode("latin-1").lower(), {
        k.decode("latin-1").lower(): v.decode("latin-1") for k, v in params.items()
    }


def _identify(data: bytes) -> tuple[str | None, str | None, str | None]:
    """(study, SOP class, SOP instance) UIDs of a part, as far as they can be read."""
    try:
        ds = pydicom.dcmread(
            io.BytesIO(data),
            stop_before_pixels=True,
            specific_tags=["StudyInstanceUID", "SOPClassUID", "SOPInstanceUID"],
        )
    except Exception:  # noqa: BLE001 - unreadable parts are diagnosed by the spool
        return None, None, None

    def text(keyword: str) -> str | None:
        try:
            value = str(ds.get(keyword, "") or "").strip()
        except Exception:  # noqa: BLE001 - converting a raw value can fail (unknown VR, length)
            return None
        return value or None

    return text("StudyInstanceUID"), text("SOPClassUID"), text("SOPInstanceUID")


def _failed_item(sop_class: str | None, sop_uid: str | None, reason: int) -> Dataset:
    """A FailedSOPSequence item; UIDs that are absent or not valid UIDs (PS3.5 9.1) are left out."""
    item = Dataset()
    if is_valid_uid(sop_class):
        item.ReferencedSOPClassUID = sop_class
    if is_valid_uid(sop_uid):
        item.ReferencedSOPInstanceUID = sop_uid
    item.FailureReason = reason
    return item


def _study_url(base: str, study_uid: str) -> str:
    return f"{base}dicom-web/studies/{study_uid}"


def _store_part(node: NodeView, part: Part, *, target_study: str | None, base: str) -> _Result:
    """Check one part and store it through the spool (blocking: runs in a worker thread)."""
    data = bytes(part.data)
    # the UIDs are read here only when needed: the spool parses the header anyway
    study_uid, sop_class, sop_uid = _identify(data) if target_study else (None, None, None)
    media, _ = _media_type(part.headers.get("content-type") or _DICOM)
    if media != _DICOM:
        study_uid, sop_class, sop_uid = _identify(data)
        log.info("stow.part_refused", extra={"reason": "media-type", "sop_uid": sop_uid})
        return _Result(_failed_item(sop_class, sop_uid, REASON_CANNOT_UNDERSTAND), False)
    if target_study is not None and study_uid is not None and study_uid != target_study:
        log.info(
            "stow.part_refused",
            extra={"reason": "study-mismatch", "sop_uid": sop_uid, "study_uid": study_uid},
        )
        return _Result(_failed_item(sop_class, sop_uid, REASON_STUDY_MISMATCH), False)
    try:
        stored = node.spool.store(data, calling_aet=None, source="stow")
    except IngestError as exc:
        if sop_uid is None:
            study_uid, sop_class, sop_uid = _identify(data)
        log.info(
            "stow.part_failed",
            extra={"sop_uid": sop_uid, "status": f"0x{exc.dicom_status:04X}", "type": exc.type},
        )
        return _Result(_failed_item(sop_class, sop_uid, exc.dicom_status), False)
    except Exception as exc:  # noqa: BLE001 - one part's failure must not fail the others
        if sop_uid is None:
            study_uid, sop_class, sop_uid = _identify(data)
        log.error(
            "stow.part_error",
            extra={"sop_uid": sop_uid, "error_type": type(exc).__name__},
            exc_info=not isinstance(exc, OSError),
        )
        return _Result(_failed_item(sop_class, sop_uid, REASON_PROCESSING_FAILURE), False)
    inst = stored.instance
    item = Dataset()
    item.ReferencedSOPClassUID = inst.sop_class_uid
    item.ReferencedSOPInstanceUID = inst.sop_uid
    item.RetrieveURL = (
        f"{_study_url(base, inst.study_uid)}/series/{inst.series_uid}/instances/{inst.sop_uid}"
    )
    return _Result(item, True, inst.study_uid)


_ACCEPTABLE = {"*/*", "application/*", DICOM_JSON, "application/json"}


def _check_accept(request: Request) -> None:
    """406 unless the client accepts the DICOM JSON response (PS3.18 10.5.1.1; no XML here)."""
    accept = request.headers.get("accept")
    if not accept:
        return
    for media_range in accept.split(","):
        media, params = _media_type(media_range)
        if media in _ACCEPTABLE and params.get("q", "1").strip() not in ("0", "0.0", "0.00"):
            return
    raise HTTPException(
        406, f"STOW-RS responses are {DICOM_JSON}; the request accepts only {accept!r}"
    )


def _check_request(request: Request, limit: int) -> bytes:
    """Validate media types and declared size; return the multipart boundary."""
    _check_accept(request)
    media, params = _media_type(request.headers.get("content-type"))
    if media != "multipart/related":
        raise HTTPException(
            415,
            f'STOW-RS needs Content-Type multipart/related; type="application/dicom", '
            f"not {media or 'none'!r}",
        )
    part_type = params.get("type", _DICOM).lower()
    if part_type != _DICOM:
        raise HTTPException(
            415,
            f"only application/dicom parts are accepted (type={part_type!r}); "
            "metadata + bulk data uploads are not supported",
        )
    boundary = params.get("boundary")
    if not boundary:
        raise HTTPException(400, "the multipart/related Content-Type has no boundary parameter")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            413,
            f"the request declares {declared} bytes; this node accepts at most {limit} "
            "bytes per STOW-RS request (node.stow_max_bytes)",
        )
    return boundary.encode("latin-1")


async def _stow(request: Request, node: NodeView, target_study: str | None) -> JSONResponse:
    limit = node.config.node.stow_max_bytes
    boundary = _check_request(request, limit)
    try:
        collector = PartCollector(boundary)
    except FormParserError as exc:  # e.g. a boundary longer than the parser allows
        raise HTTPException(400, f"unusable multipart boundary: {exc}") from exc
    base = str(request.base_url)
    # Parts are stored concurrently so the spool can group-commit them (one fsync round for
    # many); the semaphore bounds parts in flight, and reading the body waits when it is full.
    slots = asyncio.Semaphore(_PARTS_IN_FLIGHT)
    tasks: list[asyncio.Task[_Result]] = []

    async def store(part: Part) -> _Result:
        try:
            return await run_in_threadpool(
                _store_part, node, part, target_study=target_study, base=base
            )
        finally:
            slots.release()

    async def finish() -> list[_Result]:
        return list(await asyncio.gather(*tasks))

    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                stored = sum(r.is_stored for r in await finish())
                log.info(
                    "stow.too_large", extra={"bytes": received, "limit": limit, "stored": stored}
                )
                raise HTTPException(
                    413,
                    f"the request body passed {limit} bytes (node.stow_max_bytes); "
                    f"{stored} instance(s) received before the limit were stored",
                )
            try:
                collector.write(chunk)
            except FormParserError as exc:
                await finish()
                raise HTTPException(400, f"malformed multipart/related body: {exc}") from exc
            for part in collector.take():
                await slots.acquire()
                tasks.append(asyncio.create_task(store(part)))
    finally:
        # never leave a part half-handled behind an exception (e.g. the client went away)
        await asyncio.gather(*tasks, return_exceptions=True)
    outcome = _Outcome.of(await finish())
    if not collector.ended:
        raise HTTPException(
            400,
            "malformed multipart/related body: the closing boundary is missing "
            f"({len(outcome.stored)} complete instance(s) before it were stored)",
        )
    if not outcome.stored and not outcome.failed:
        raise HTTPException(400, "the multipart/related body holds no parts")
    return _response(outcome, base=base, target_study=target_study)


def _response(outcome: _Outcome, *, base: str, target_study: str | None) -> JSONResponse:
    body = Dataset()
    studies = {target_study} if target_study else outcome.study_uids
    if len(studies) == 1:
        body.RetrieveURL = _study_url(base, next(iter(studies)))
    if outcome.stored:
        body.ReferencedSOPSequence = outcome.stored
    if outcome.failed:
        body.FailedSOPSequence = outcome.failed
    if not outcome.failed:
        status = 200
    elif outcome.stored:
        status = 202
    else:
        status = 409
    log.info(
        "stow.done",
        extra={"status": status, "stored": len(outcome.stored), "failed": len(outcome.failed)},
    )
    return JSONResponse(body.to_json_dict(), status_code=status, media_type=DICOM_JSON)


_DICOM_JSON_BODY = {"content": {DICOM_JSON: {"schema": {"type": "object"}}}}
#: PS3.18 10.5.3: the Store Instances Response Module, as DICOM JSON, for each outcome.
_STOW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "every instance stored", **_DICOM_JSON_BODY},
    202: {"description": "some instances stored, some failed", **_DICOM_JSON_BODY},
    409: {"description": "no instance stored (FailedSOPSequence)", **_DICOM_JSON_BODY},
}


@router.post("/dicom-web/studies", responses=_STOW_RESPONSES, response_class=DicomJsonResponse)
async def store_instances(
    request: Request, node: Annotated[NodeView, Depends(get_node)]
) -> JSONResponse:
    """Store Instances (PS3.18 10.5): any study."""
    return await _stow(request, node, None)


@router.post(
    "/dicom-web/studies/{study_uid}", responses=_STOW_RESPONSES, response_class=DicomJsonResponse
)
async def store_study_instances(
    study_uid: str, request: Request, node: Annotated[NodeView, Depends(get_node)]
) -> JSONResponse:
    """Store Instances of one study (PS3.18 10.5): other studies' instances fail with 0xA901."""
    return await _stow(request, node, study_uid)
