"""DICOMweb media types and the response classes that carry them (PS3.18 8.7.3, F.2).

One home for what STOW-RS and QIDO/WADO-RS answer with, so the OpenAPI description names the
same media types everywhere.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse, StreamingResponse

__all__ = [
    "DICOM_JSON",
    "MULTIPART_DICOM",
    "MULTIPART_FRAMES",
    "DicomJsonResponse",
    "MultipartDicomResponse",
    "MultipartFramesResponse",
]

#: PS3.18 F.2: the DICOM JSON model's media type.
DICOM_JSON = "application/dicom+json"
#: PS3.18 8.6.1.2: a ``multipart/related`` body of PS3.10 instances (boundary added per body).
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
#: PS3.18 8.7.3.3.2: native frames, ``application/octet-stream`` parts.
MULTIPART_FRAMES = 'multipart/related; type="application/octet-stream"'


class DicomJsonResponse(JSONResponse):
    """JSON with the DICOM JSON media type (PS3.18 F.2)."""

    media_type = DICOM_JSON


class MultipartDicomResponse(StreamingResponse):
    """``multipart/related; type="application/dicom"`` (PS3.18 8.6.1.2), for OpenAPI."""

    media_type = MULTIPART_DICOM


class MultipartFramesResponse(StreamingResponse):
    """``multipart/related; type="application/octet-stream"`` (PS3.18 8.7.3.3.2), for OpenAPI."""

    media_type = MULTIPART_FRAMES
