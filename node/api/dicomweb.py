"""Read-only DICOMweb over the stored instances: QIDO-RS search and WADO-RS retrieve.

Remote workers fetch their input series here (no shared disk needed); any DICOMweb client can
browse the node too.  Behind the API's authentication like every other route.

* ``GET /dicom-web/studies`` (``StudyInstanceUID``, ``limit``, ``offset``),
  ``/studies/{study}/series``, ``/studies/{study}[/series/{series}]/instances``: QIDO-RS
  (PS3.18 10.6), ``application/dicom+json``, study/series/instance-level attributes taken from
  the index and the stored series header;
* ``GET /dicom-web/studies/{study}[/series/{series}[/instances/{sop}]]``: WADO-RS
  (PS3.18 10.4) ``multipart/related; type="application/dicom"``, the stored bytes as received
  (each part names its transfer syntax; no transcoding), streamed file by file.

Every answer carries patient data (the stored DICOM, or its patient-level attributes), so every
route needs a role of ``console.phi_roles`` besides the API's authentication (403 problem
otherwise), and each answer but pixel frames is audited as ``phi.viewed`` with its study UIDs.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from node.api.deps import NodeView, get_node
from node.api.media import (
    DicomJsonResponse,
    MultipartDicomResponse,
    MultipartFramesResponse,
)
from node.api.phi import audit_phi_view, phi_allowed
from node.errors import NotFoundError
from node.types import Instance, Study
from node.web.frames import choose, instance_frames
from node.web.multipart import related_content_type
from node.web.wado import instance_metadata

__all__ = ["router"]


def phi_reader(request: Request) -> None:
    """Refuse (403) a caller whose role may not see patient data (``console.phi_roles``)."""
    if not phi_allowed(request):
        principal = getattr(request.state, "principal", None)
        who = f"{principal.actor} has role {principal.role.value}" if principal else "this caller"
        raise HTTPException(
            403,
            f"{who}; DICOMweb answers carry patient data, which console.phi_roles allows only "
            f"to {', '.join(request.app.state.node.config.console.phi_roles)}",
        )


router = APIRouter(tags=["dicomweb"], dependencies=[Depends(phi_reader)])

_CHUNK = 1 << 20
#: Study-level attributes copied from the stored series header (PS3.18 Table 10.6.3-3).
_STUDY_TAGS = (
    "00080020",  # StudyDate
    "00080030",  # StudyTime
    "00080050",  # AccessionNumber
    "00080090",  # ReferringPhysicianName
    "00100010",  # PatientName
    "00100020",  # PatientID
    "00100030",  # PatientBirthDate
    "00100040",  # PatientSex
    "0020000D",  # StudyInstanceUID
    "00200010",  # StudyID
    "00081030",  # StudyDescription
)
#: Series-level attributes (PS3.18 Table 10.6.3-4).
_SERIES_TAGS = ("00080060", "0008103E", "0020000E", "00200011", "00180015")


def _attr(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)}


def _pick(header: dict[str, Any], tags: Sequence[str]) -> dict[str, Any]:
    return {t: header[t] for t in tags if t in header}


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/dicom-web"


def _json(items: list[dict[str, Any]]) -> JSONResponse:
    # PS3.18 10.6.3: no match is 204 for some servers; an empty array is what clients expect
    return DicomJsonResponse(items)


@router.get("/dicom-web/studies", response_class=DicomJsonResponse)
def search_studies(
    request: Request,
    node: Annotated[NodeView, Depends(get_node)],
    study_uid: Annotated[str | None, Query(alias="StudyInstanceUID")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JSONResponse:
    """QIDO-RS Search for Studies (PS3.18 10.6.1), newest first."""
    if study_uid:
        rows = [r for r in [node.index.study_row(study_uid)] if r is not None]
    else:
        rows = node.index.list_studies(limit=limit, offset=offset)
    out = []
    for row in rows:
        uid = str(row.get("study_uid", study_uid))
        study = node.index.get_study(uid)
        if study is None:
            continue
        item = _pick(dict(study.header), _STUDY_TAGS)
        item["0020000D"] = _attr("UI", uid)
        modalities = sorted({s.modality for s in study.series if s.modality})
        if modalities:
            item["00080061"] = _attr("CS", *modalities)
        item["00201206"] = _attr("IS", len(study.series))
        item["00201208"] = _attr("IS", sum(s.instance_count for s in study.series))
        item["00081190"] = _attr("UR", f"{_base(request)}/studies/{uid}")
        out.append(item)
    audit_phi_view(
        request, [str(i["0020000D"]["Value"][0]) for i in out], purpose="GET /dicom-web/studies"
    )
    return _json(out)


def _study(node: NodeView, study_uid: str) -> Study:
    """The indexed study, or a 404 problem."""
    study = node.index.get_study(study_uid)
    if study is None:
        raise NotFoundError(f"no study {study_uid} on this node")
    return study


@router.get("/dicom-web/studies/{study_uid}/series", response_class=DicomJsonResponse)
def search_series(
    study_uid: str, request: Request, node: Annotated[NodeView, Depends(get_node)]
) -> JSONResponse:
    """QIDO-RS Search for Series of a study (PS3.18 10.6.1).

    Raises
    ------
    NotFoundError
        Unknown study (404 problem).
    """
    study = _study(node, study_uid)
    out = []
    for s in study.series:
        item = _pick(dict(s.header), _SERIES_TAGS)
        item["0020000D"] = _attr("UI", study_uid)
        item["0020000E"] = _attr("UI", s.series_uid)
        if s.modality:
            item["00080060"] = _attr("CS", s.modality)
        item["00201209"] = _attr("IS", s.instance_count)
        item["00081190"] = _attr(
            "UR", f"{_base(request)}/studies/{study_uid}/series/{s.series_uid}"
        )
        out.append(item)
    return _json(out)


def _series(node: NodeView, study_uid: str, series_uid: str) -> list[Instance]:
    instances = [i for i in node.index.series_instances(series_uid) if i.study_uid == study_uid]
    if not instances:
        raise NotFoundError(f"no series {series_uid} in study {study_uid} on this node")
    return instances


@router.get(
    "/dicom-web/studies/{study_uid}/series/{series_uid}/instances",
    response_class=DicomJsonResponse,
)
def search_instances(
    study_uid: str,
    series_uid: str,
    request: Request,
    node: Annotated[NodeView, Depends(get_node)],
) -> JSONResponse:
    """QIDO-RS Search for Instances of a series (PS3.18 10.6.1).

    Raises
    ------
    NotFoundError
        Unknown study or series (404 problem).
    """
    return _json(_instance_items(request, _series(node, study_uid, series_uid)))


@router.get("/dicom-web/studies/{study_uid}/instances", response_class=DicomJsonResponse)
def search_study_instances(
    study_uid: str, request: Request, node: Annotated[NodeView, Depends(get_node)]
) -> JSONResponse:
    """QIDO-RS Search for Instances of a study (PS3.18 10.6.1): every series' instances.

    Raises
    ------
    NotFoundError
        Unknown study (404 problem).
    """
    study = _study(node, study_uid)
    instances = [
        i
        for s in study.series
        for i in node.index.series_instances(s.series_uid)
        if i.study_uid == study_uid
    ]
    return _json(_instance_items(request, instances))


def _instance_items(request: Request, instances: Sequence[Instance]) -> list[dict[str, Any]]:
    return [
        {
            "00080016": _attr("UI", i.sop_class_uid),
            "00080018": _attr("UI", i.sop_uid),
            "00020010": _attr("UI", i.transfer_syntax_uid),
            "0020000D": _attr("UI", i.study_uid),
            "0020000E": _attr("UI", i.series_uid),
            "00081190": _attr(
                "UR",
                f"{_base(request)}/studies/{i.study_uid}/series/{i.series_uid}"
                f"/instances/{i.sop_uid}",
            ),
        }
        for i in instances
    ]


def _multipart(instances: Sequence[Instance]) -> StreamingResponse:
    boundary = secrets.token_hex(16)

    def body() -> Iterator[bytes]:
        for inst in instances:
            with inst.path.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                yield (
                    f"--{boundary}\r\nContent-Type: application/dicom; "
                    f"transfer-syntax={inst.transfer_syntax_uid}\r\n"
                    f"Content-Length: {size}\r\n\r\n"
                ).encode("ascii")
                while chunk := fh.read(_CHUNK):
                    yield chunk
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode("ascii")

    media = related_content_type(boundary)
    return StreamingResponse(body(), media_type=media)


@router.get("/dicom-web/studies/{study_uid}", response_class=MultipartDicomResponse)
def retrieve_study(
    study_uid: str, request: Request, node: Annotated[NodeView, Depends(get_node)]
) -> Any:
    """WADO-RS Retrieve Study (PS3.18 10.4.1): every stored instance, as stored.

    Raises
    ------
    NotFoundError
        Unknown study (404 problem).
    """
    study = _study(node, study_uid)
    instances = [i for s in study.series for i in node.index.series_instances(s.series_uid)]
    audit_phi_view(request, [study_uid], purpose="GET /dicom-web/studies/{uid}")
    return _multipart(instances)


@router.get(
    "/dicom-web/studies/{study_uid}/series/{series_uid}", response_class=MultipartDicomResponse
)
def retrieve_series(
    study_uid: str,
    series_uid: str,
    request: Request,
    node: Annotated[NodeView, Depends(get_node)],
) -> Any:
    """WADO-RS Retrieve Series (PS3.18 10.4.1).

    Raises
    ------
    NotFoundError
        Unknown study or series (404 problem).
    """
    instances = _series(node, study_uid, series_uid)
    audit_phi_view(request, [study_uid], purpose="GET /dicom-web/studies/{uid}/series/{uid}")
    return _multipart(instances)


@router.get(
    "/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
    response_class=MultipartDicomResponse,
)
def retrieve_instance(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    node: Annotated[NodeView, Depends(get_node)],
) -> Any:
    """WADO-RS Retrieve Instance (PS3.18 10.4.1).

    Raises
    ------
    NotFoundError
        Unknown instance (404 problem).
    """
    found = [i for i in _series(node, study_uid, series_uid) if i.sop_uid == sop_uid]
    if not found:
        raise NotFoundError(f"no instance {sop_uid} in series {series_uid} on this node")
    audit_phi_view(request, [study_uid], purpose="GET /dicom-web/.../instances/{uid}")
    return _multipart(found)


def _instance(node: NodeView, study_uid: str, series_uid: str, sop_uid: str) -> Instance:
    found = [i for i in _series(node, study_uid, series_uid) if i.sop_uid == sop_uid]
    if not found:
        raise NotFoundError(f"no instance {sop_uid} in series {series_uid} on this node")
    return found[0]


@router.get(
    "/dicom-web/studies/{study_uid}/series/{series_uid}/metadata",
    response_class=DicomJsonResponse,
)
def series_metadata(
    study_uid: str,
    series_uid: str,
    request: Request,
    node: Annotated[NodeView, Depends(get_node)],
) -> JSONResponse:
    """WADO-RS Retrieve Series Metadata (PS3.18 10.4.1.1.2): each instance's data set as DICOM
    JSON, bulk data (Pixel Data and values over 1 KiB) as ``BulkDataURI`` -- the pixel data's
    is the instance's ``frames`` resource, which viewers such as OHIF read.

    Raises
    ------
    NotFoundError
        Unknown study or series (404 problem).
    """
    base = f"{_base(request)}/studies/{study_uid}/series/{series_uid}/instances"
    instances = _series(node, study_uid, series_uid)
    audit_phi_view(request, [study_uid], purpose="GET /dicom-web/.../series/{uid}/metadata")
    return _json([instance_metadata(inst.path, f"{base}/{inst.sop_uid}") for inst in instances])


@router.get(
    "/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frames}",
    response_class=MultipartFramesResponse,
)
def retrieve_frames(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frames: str,
    request: Request,
    node: Annotated[NodeView, Depends(get_node)],
) -> StreamingResponse:
    """WADO-RS Retrieve Frames (PS3.18 10.4.1.1.3): the listed frames (1-based, comma
    separated), one part each, in the representation the ``Accept`` header asks for
    (``node.web.frames.choose``): native bytes by default (compressed instances decompressed),
    the stored bitstream with ``transfer-syntax=*`` or the matching ``image/*`` type.

    Raises
    ------
    NotFoundError
        Unknown instance or frame number (404 problem).
    NotAcceptableError
        No accepted representation can be served (406 problem).
    """
    inst = _instance(node, study_uid, series_uid, sop_uid)
    try:
        numbers = [int(n) for n in frames.split(",")]
    except ValueError:
        raise NotFoundError(f"frame list {frames!r} is not comma-separated numbers") from None
    media = choose(request.headers.get("accept"), inst.transfer_syntax_uid)
    parts = instance_frames(inst.path, numbers, media)
    boundary = secrets.token_hex(16)

    def body() -> Iterator[bytes]:
        for data in parts:
            yield (
                f"--{boundary}\r\nContent-Type: {media.media_type}; "
                f"transfer-syntax={media.transfer_syntax}\r\n"
                f"Content-Length: {len(data)}\r\n\r\n"
            ).encode("ascii")
            yield data
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode("ascii")

    return StreamingResponse(
        body(),
        media_type=f'multipart/related; type="{media.media_type}"; boundary={boundary}',
    )
