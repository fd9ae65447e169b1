"""The one exception hierarchy of ainode.

::

    AinodeError                    (http 500, type "internal")
    ├── ConfigError                (http 400) a config file is invalid: carries FILE:LINE:COL lines
    ├── IngestError                (http 400) an instance cannot be stored
    │   ├── MalformedInstanceError (DICOM 0xC000 / STOW reason 0xC000)
    │   ├── MissingAttributeError  (DICOM 0xA900: Study/Series/SOP UID or SOP Class absent)
    │   └── OutOfResourcesError    (DICOM 0xA700 / http 507: disk or quota full)
    ├── NotFoundError              (http 404) a study/job/model that does not exist
    ├── NotAcceptableError         (http 406) no representation the client accepts (WADO-RS)
    ├── ConflictError              (http 409) the action does not fit the target's state
    ├── WorkitemError              (http 400/404/409) a UPS-RS request the PS3.4 CC rules refuse
    ├── ImagingError               (http 422) a series cannot become a Volume (gaps, mixed sizes...)
    │   └── InputError             a job's input is unreadable at load (fails once, no retry)
    ├── ModelError                 (http 500) a model failed to load or to predict
    ├── ResultError                (http 500) a result object failed the gate before delivery
    ├── DestinationError           (http 502) a destination refused or could not be reached
    └── SourceError                (http 502) a pull source refused, failed or could not be reached

Each edge translates once: ingest -> DICOM status + quarantine; CLI -> one line and exit 2;
HTTP -> RFC 9457 problem JSON built from ``http_status`` and ``type``.
"""

from __future__ import annotations


class AinodeError(Exception):
    """Base class of every error ainode raises on purpose."""

    http_status: int = 500
    type: str = "internal"


class ConfigError(AinodeError):
    """A configuration file is invalid; ``problems`` are ``FILE:LINE:COL: message`` lines."""

    http_status = 400
    type = "invalid-config"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class IngestError(AinodeError):
    """An instance cannot be stored; ``dicom_status`` is what the SCP answers."""

    http_status = 400
    type = "ingest-failed"
    dicom_status: int = 0xC000


class MalformedInstanceError(IngestError):
    """The bytes are not a readable DICOM dataset."""

    type = "malformed-instance"
    dicom_status = 0xC000


class MissingAttributeError(IngestError):
    """A required identifying attribute is absent or empty."""

    type = "missing-attribute"
    dicom_status = 0xA900


class OutOfResourcesError(IngestError):
    """Disk or configured quota is full; nothing was written."""

    http_status = 507
    type = "out-of-resources"
    dicom_status = 0xA700


class NotFoundError(AinodeError):
    """The requested study, job, model or destination does not exist."""

    http_status = 404
    type = "not-found"


class NotAcceptableError(AinodeError):
    """The resource exists, but in no media type or transfer syntax the client accepts."""

    http_status = 406
    type = "not-acceptable"


class ConflictError(AinodeError):
    """The action does not fit the target's state (e.g. retrying a withdrawn delivery)."""

    http_status = 409
    type = "conflict"


class WorkitemError(AinodeError):
    """A UPS-RS request that the Unified Procedure Step rules refuse (PS3.4 Annex CC).

    ``http_status`` is the PS3.18 section 11 status of the refusal and ``dicom_status`` the
    PS3.4 CC.2 status whose meaning it carries (``0xC301``: the correct Transaction UID was not
    provided...); the HTTP answer names both in its ``Warning`` header.
    """

    type = "workitem-refused"

    def __init__(self, message: str, *, http_status: int, dicom_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.dicom_status = dicom_status


class ImagingError(AinodeError):
    """A series cannot be turned into a consistent Volume."""

    http_status = 422
    type = "imaging-failed"


class InputError(ImagingError):
    """A job's stored input cannot be loaded (undecodable pixels...): the job fails once with
    reason ``input`` and is not retried, since retrying does not change the bytes."""


class ModelError(AinodeError):
    """A model could not be loaded or failed while predicting."""

    type = "model-failed"


class ResultError(AinodeError):
    """A result object failed the conformance gate and is blocked."""

    type = "result-blocked"


class DestinationError(AinodeError):
    """A destination refused the objects or could not be reached."""

    http_status = 502
    type = "destination-failed"


class SourceError(AinodeError):
    """A pull source (``sources.NAME``) refused a query or retrieve, or could not be reached."""

    http_status = 502
    type = "source-failed"
