"""Pull studies on demand from a DIMSE or DICOMweb source into the node's durable ingest.

* DIMSE ``c-move`` (PS3.4 C.4.2): the source sends the instances to the node's own C-STORE SCP
  (``node.ae_title``, which the source must know as a move destination); sub-operation counts in
  the pending responses drive the progress.
* DIMSE ``c-get`` (PS3.4 C.4.3): the instances arrive on this association (SCP role selection,
  PS3.7 D.3.3.4) and each is stored with ``sink.store`` byte for byte.
* DICOMweb: QIDO-RS (PS3.18 10.6) lists the instances, WADO-RS (PS3.18 10.4) retrieves each as
  ``application/dicom`` in its stored transfer syntax (``transfer-syntax=*``), stored with
  ``sink.store``.

Studies to pull are given by Study Instance UID or found by a query (patient ID, study date range,
modality) with C-FIND (PS3.4 C.4.1) or QIDO-RS.  ``sink`` is the ingest spool
(``node.ingest.spool.Spool``): pulled instances go through the same durable path as pushed ones.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

import requests
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from python_multipart.exceptions import FormParserError

from node.config import DicomwebSource, DimseSource
from node.errors import IngestError, SourceError
from node.types import DicomJson
from node.web.multipart import iter_related
from node.web.peers import make_client, make_session, ssl_context

__all__ = [
    "InstanceSink",
    "Progress",
    "PullQuery",
    "PullResult",
    "find_series",
    "find_studies",
    "pull",
    "query_studies",
]

log = logging.getLogger(__name__)

#: ``progress(done, total)``; ``total`` is None while unknown.
Progress = Callable[[int, int | None], None]


class InstanceSink(Protocol):
    """Where pulled instances go: ``node.ingest.spool.Spool`` satisfies it."""

    def store(self, data: bytes, *, calling_aet: str | None, source: str) -> object:
        """Store one complete PS3.10 file durably; raise ``IngestError`` if it cannot."""
        ...


@dataclass(frozen=True, slots=True)
class PullQuery:
    """What to pull: one study by UID (or one series of it, ``series_uid``), or the studies
    matching patient ID/dates/modality."""

    study_uid: str | None = None
    series_uid: str | None = None
    patient_id: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    modality: str | None = None

    def is_empty(self) -> bool:
        """True when nothing narrows the query (pulling a whole archive is refused)."""
        return not (self.study_uid or self.patient_id or self.date_from or self.date_to)

    def study_date(self) -> str | None:
        """The StudyDate matching key as a DICOM range (PS3.4 C.2.2.2.5)."""
        if self.date_from is None and self.date_to is None:
            return None
        lo = self.date_from.strftime("%Y%m%d") if self.date_from else ""
        hi = self.date_to.strftime("%Y%m%d") if self.date_to else ""
        return lo if lo == hi else f"{lo}-{hi}"


@dataclass(slots=True)
class PullResult:
    """What a pull did."""

    studies: list[str] = field(default_factory=list)
    expected: int | None = None
    received: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def is_complete(self) -> bool:
        """Every expected instance arrived and none failed."""
        return self.failed == 0 and (self.expected is None or self.received >= self.expected)


# ---------------------------------------------------------------- entry points
def find_studies(
    source: DimseSource | DicomwebSource, query: PullQuery, *, node_ae_title: str
) -> list[str]:
    """Study Instance UIDs at ``source`` matching ``query`` (C-FIND or QIDO-RS).

    Raises
    ------
    SourceError
        The source cannot be reached or refused the query.
    """
    if query.study_uid:
        return [query.study_uid]
    if query.is_empty():
        raise SourceError(
            "refusing to pull without a study UID, patient ID or date range: it would "
            "retrieve the whole archive; give --study, --patient-id or --from-date/--to-date"
        )
    if isinstance(source, DimseSource):
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = ""
        ds.PatientID = query.patient_id or ""
        ds.StudyDate = query.study_date() or ""
        ds.ModalitiesInStudy = query.modality or ""
        return sorted({str(r.StudyInstanceUID) for r in _c_find(source, ds, node_ae_title)})
    filters: dict[str, Any] = {}
    if query.patient_id:
        filters["PatientID"] = query.patient_id
    if query.study_date():
        filters["StudyDate"] = query.study_date()
    if query.modality:
        filters["ModalitiesInStudy"] = query.modality
    try:
        found = make_client(source).search_for_studies(search_filters=filters)
    except requests.RequestException as exc:
        raise SourceError(f"QIDO-RS search at {source.url} failed: {exc}") from exc
    return sorted({str(s["0020000D"]["Value"][0]) for s in found if "0020000D" in s})


#: Return keys of the study and series queries (``query_studies``, ``find_series``).
_STUDY_KEYS = ("StudyInstanceUID", "StudyDate", "StudyTime", "ModalitiesInStudy")
_SERIES_KEYS = (
    "SeriesInstanceUID",
    "Modality",
    "BodyPartExamined",
    "SeriesDescription",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
)


def query_studies(
    source: DimseSource | DicomwebSource,
    filters: Mapping[str, str],
    *,
    node_ae_title: str,
) -> list[DicomJson]:
    """Study-level C-FIND (PS3.4 C.4.1) or QIDO-RS (PS3.18 10.6) with matching keys ``filters``
    (keyword -> value, e.g. ``PatientID``, ``IssuerOfPatientID``, a ``StudyDate`` range).

    Returns
    -------
    list[DicomJson]
        One DICOM JSON header per study (PS3.18 F.2) with at least the Study Instance UID,
        Study Date and Time.

    Raises
    ------
    SourceError
        The source cannot be reached or refused the query.
    """
    if isinstance(source, DimseSource):
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        for keyword in _STUDY_KEYS:
            setattr(ds, keyword, "")
        for keyword, value in filters.items():
            setattr(ds, keyword, value)
        return [_json_of(r) for r in _c_find(source, ds, node_ae_title)]
    try:
        found = make_client(source).search_for_studies(
            search_filters=dict(filters), fields=list(_STUDY_KEYS)
        )
    except requests.RequestException as exc:
        # the exception's text may hold the request URL, whose query holds the Patient ID
        raise SourceError(f"QIDO-RS search at {source.url} failed: {_without_url(exc)}") from None
    return [dict(s) for s in found]


def find_series(
    source: DimseSource | DicomwebSource, study_uid: str, *, node_ae_title: str
) -> list[DicomJson]:
    """The series of ``study_uid`` at ``source`` (series-level C-FIND or QIDO-RS), each as a
    DICOM JSON header with Modality, Body Part Examined, Series Description and the number of
    instances when the source answers them.

    Raises
    ------
    SourceError
        The source cannot be reached or refused the query.
    """
    if isinstance(source, DimseSource):
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = study_uid
        for keyword in _SERIES_KEYS:
            setattr(ds, keyword, "")
        return [_json_of(r) for r in _c_find(source, ds, node_ae_title)]
    try:
        found = make_client(source).search_for_series(
            study_instance_uid=study_uid, fields=list(_SERIES_KEYS)
        )
    except requests.RequestException as exc:
        raise SourceError(f"QIDO-RS search at {source.url} failed: {exc}") from exc
    return [dict(s) for s in found]


def _without_url(exc: requests.RequestException) -> str:
    """What went wrong, without the request URL (its query may carry patient identifiers)."""
    response = exc.response
    if response is not None:
        return f"HTTP {response.status_code} {response.reason or ''}".strip()
    return type(exc).__name__


def _json_of(ds: Dataset) -> DicomJson:
    """A C-FIND response identifier as DICOM JSON (bulk data never occurs in one)."""
    out: DicomJson = ds.to_json_dict(bulk_data_threshold=1 << 30)
    return out


def pull(
    source: DimseSource | DicomwebSource,
    query: PullQuery,
    *,
    sink: InstanceSink,
    node_ae_title: str,
    progress: Progress | None = None,
    timeout_seconds: float = 60.0,
) -> PullResult:
    """Pull the studies matching ``query`` from ``source`` into the node.

    Parameters
    ----------
    source:
        A ``sources`` entry of the config.
    query:
        Study UID, or patient ID / date range / modality.
    sink:
        The ingest spool (C-GET and WADO-RS store through it; C-MOVE goes to the node's SCP).
    node_ae_title:
        The node's AE title: calling AE, and the C-MOVE destination.
    progress:
        Called as instances arrive.

    Raises
    ------
    SourceError
        The source cannot be reached, or refused the retrieve.
    """
    result = PullResult(studies=find_studies(source, query, node_ae_title=node_ae_title))
    report = progress or (lambda done, total: None)
    series_uid = query.series_uid if query.study_uid else None
    for study_uid in result.studies:
        if isinstance(source, DicomwebSource):
            _pull_wado(source, study_uid, series_uid, sink, result, report)
        elif source.method == "c-get":
            _pull_c_get(
                source,
                study_uid,
                series_uid,
                sink,
                node_ae_title,
                result,
                report,
                timeout_seconds,
            )
        else:
            _pull_c_move(
                source, study_uid, series_uid, node_ae_title, result, report, timeout_seconds
            )
    log.info(
        "pull.done",
        extra={
            "studies": len(result.studies),
            "received": result.received,
            "failed": result.failed,
        },
    )
    return result


# ---------------------------------------------------------------- DIMSE
def _ae(source: DimseSource, node_ae_title: str, timeout: float) -> AE:
    ae = AE(ae_title=source.calling_ae_title or node_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = min(timeout, 10.0)
    ae.maximum_pdu_size = 0
    return ae


def _associate(ae: AE, source: DimseSource, **kwargs: Any) -> Association:
    tls_args = (ssl_context(source.tls), source.host) if source.tls is not None else None
    assoc = ae.associate(
        source.host, source.port, ae_title=source.ae_title, tls_args=tls_args, **kwargs
    )
    if not assoc.is_established:
        raise SourceError(
            f"source {source.host}:{source.port} (AE '{source.ae_title}') refused or did not "
            f"answer the association from AE '{ae.ae_title}'; check that it knows this node"
        )
    return assoc


def _c_find(source: DimseSource, identifier: Dataset, node_ae_title: str) -> list[Dataset]:
    ae = _ae(source, node_ae_title, 60.0)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = _associate(ae, source)
    out: list[Dataset] = []
    try:
        for status, ident in assoc.send_c_find(
            identifier, StudyRootQueryRetrieveInformationModelFind
        ):
            code = int(status.get("Status", 0xFFFF)) if status else 0xFFFF
            if code in (0xFF00, 0xFF01) and ident is not None:
                out.append(ident)
            elif code != 0x0000:
                raise SourceError(
                    f"C-FIND at {source.host}:{source.port} failed with status 0x{code:04X}"
                )
    finally:
        if assoc.is_established:
            assoc.release()
    return out


def _instances_of(
    source: DimseSource, study_uid: str, series_uid: str | None, node_ae_title: str
) -> list[Dataset]:
    """IMAGE-level C-FIND: the study's (or series') instances with their SOP classes (for C-GET
    contexts)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or ""
    ds.SOPInstanceUID = ""
    ds.SOPClassUID = ""
    return _c_find(source, ds, node_ae_title)


def _retrieve_identifier(study_uid: str, series_uid: str | None) -> Dataset:
    """The C-MOVE/C-GET identifier: the study, or one series of it (PS3.4 C.4.2.1.4)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
    ds.StudyInstanceUID = study_uid
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    return ds


def _pull_c_move(
    source: DimseSource,
    study_uid: str,
    series_uid: str | None,
    node_ae_title: str,
    result: PullResult,
    report: Progress,
    timeout: float,
) -> None:
    ae = _ae(source, node_ae_title, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = _associate(ae, source)
    try:
        final: Dataset | None = None
        for status, _ in assoc.send_c_move(
            _retrieve_identifier(study_uid, series_uid),
            node_ae_title,
            StudyRootQueryRetrieveInformationModelMove,
        ):
            if not status:
                raise SourceError(
                    f"C-MOVE of study {study_uid}: the source dropped the association; does it "
                    f"know AE '{node_ae_title}' (calling AE and move destination)?"
                )
            done = int(status.get("NumberOfCompletedSuboperations", 0) or 0)
            left = status.get("NumberOfRemainingSuboperations")
            failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
            warned = int(status.get("NumberOfWarningSuboperations", 0) or 0)
            total = done + failed + warned + int(left) if left is not None else None
            report(done + warned, total)
            final = status
    finally:
        if assoc.is_established:
            assoc.release()
    assert final is not None
    code = int(final.Status)
    done = int(final.get("NumberOfCompletedSuboperations", 0) or 0)
    warned = int(final.get("NumberOfWarningSuboperations", 0) or 0)
    failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
    result.received += done + warned
    result.failed += failed
    result.expected = (result.expected or 0) + done + warned + failed
    if code not in (0x0000, 0xB000):
        msg = (
            f"C-MOVE of study {study_uid} from {source.host}:{source.port} ended with status "
            f"0x{code:04X} (PS3.4 C.4.2.3)"
        )
        if code == 0xA801:
            msg += f"; the source does not know the move destination AE '{node_ae_title}'"
        raise SourceError(msg)
    if failed:
        result.errors.append(f"{failed} sub-operations failed (status 0x{code:04X})")


def _pull_c_get(
    source: DimseSource,
    study_uid: str,
    series_uid: str | None,
    sink: InstanceSink,
    node_ae_title: str,
    result: PullResult,
    report: Progress,
    timeout: float,
) -> None:
    instances = _instances_of(source, study_uid, series_uid, node_ae_title)
    classes = sorted({str(i.SOPClassUID) for i in instances if i.get("SOPClassUID")})
    if not classes:  # the source did not say: offer the common storage classes
        classes = [str(cx.abstract_syntax) for cx in StoragePresentationContexts[:127]]
    ae = _ae(source, node_ae_title, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in classes[:127]:
        ae.add_requested_context(sop_class, ALL_TRANSFER_SYNTAXES)
    roles = [build_role(c, scp_role=True) for c in classes[:127]]
    total = len(instances) or None
    lock = threading.Lock()

    def on_store(event: Event) -> int:
        try:
            sink.store(bytes(event.encoded_dataset()), calling_aet=source.ae_title, source="c-get")
        except IngestError as exc:
            with lock:
                result.errors.append(str(exc))
            return exc.dicom_status
        with lock:
            result.received += 1
            report(result.received, total)
        return 0x0000

    assoc = _associate(ae, source, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    final: Dataset | None = None
    try:
        for status, _ in assoc.send_c_get(
            _retrieve_identifier(study_uid, series_uid),
            StudyRootQueryRetrieveInformationModelGet,
        ):
            if not status:
                raise SourceError(
                    f"C-GET of study {study_uid} from {source.host}:{source.port}: the source "
                    "dropped the association; if it does not offer C-GET, set method: c-move"
                )
            final = status
    finally:
        if assoc.is_established:
            assoc.release()
    assert final is not None
    code = int(final.Status)
    failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
    result.failed += failed
    result.expected = (result.expected or 0) + (total or 0)
    if code not in (0x0000, 0xB000):
        raise SourceError(
            f"C-GET of study {study_uid} from {source.host}:{source.port} ended with status "
            f"0x{code:04X} (PS3.4 C.4.3.3)"
        )


# ---------------------------------------------------------------- DICOMweb
def _pull_wado(
    source: DicomwebSource,
    study_uid: str,
    series_uid: str | None,
    sink: InstanceSink,
    result: PullResult,
    report: Progress,
) -> None:
    session = make_session(source)
    client = make_client(source, session)
    base = source.url.rstrip("/")
    try:
        found = client.search_for_instances(
            study_instance_uid=study_uid, series_instance_uid=series_uid
        )
    except requests.RequestException as exc:
        raise SourceError(f"QIDO-RS at {base} failed: {exc}") from exc
    refs = [
        (str(i["0020000E"]["Value"][0]), str(i["00080018"]["Value"][0]))
        for i in found
        if "0020000E" in i and "00080018" in i
    ]
    result.expected = (result.expected or 0) + len(refs)
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    try:
        for series_uid, sop_uid in refs:
            url = f"{base}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
            try:
                r = session.get(url, headers={"Accept": accept}, timeout=60)
                r.raise_for_status()
            except requests.RequestException as exc:
                result.failed += 1
                result.errors.append(f"WADO-RS {sop_uid}: {exc}")
                continue
            try:
                parts = [
                    bytes(p.data) for p in iter_related(r.content, r.headers.get("Content-Type"))
                ]
            except FormParserError as exc:
                result.failed += 1
                result.errors.append(f"WADO-RS {sop_uid}: malformed multipart/related body: {exc}")
                continue
            for part in parts:
                try:
                    sink.store(part, calling_aet=None, source="wado-rs")
                except IngestError as exc:
                    result.failed += 1
                    result.errors.append(str(exc))
                    continue
                result.received += 1
                report(result.received, len(refs))
    finally:
        session.close()
