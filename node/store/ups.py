"""The rules of Unified Procedure Step workitems (PS3.4 Annex CC), on DICOM JSON datasets.

Pure functions, no I/O: the workitem table (``node.store.workitems``) calls them inside its
transactions, so a state change is checked and written atomically.

* :data:`REQUIREMENTS` transcribes, for the attributes ainode checks, the requirement types of
  PS3.4 Table CC.2.5-3 ("Unified Procedure Step - Attribute Requirements"): N-CREATE type
  (``1`` present with a value, ``2`` present and maybe empty, ``3`` optional, ``-`` not
  allowed), N-SET (``3`` may be set, ``-`` not allowed) and the Final State requirement for
  COMPLETED and for CANCELED (``1``, ``2``, ``3``).  Tags and VRs are checked against pydicom's
  data dictionary by ``tests/store/test_ups.py``.  Attributes not listed are stored and returned
  unchecked.
* :func:`transition` is the state machine of PS3.4 CC.1.1 (Table CC.1.1-2): SCHEDULED may only
  go to IN PROGRESS (with a new Transaction UID); IN PROGRESS goes to COMPLETED or CANCELED with
  that Transaction UID once the final-state requirements are met; COMPLETED and CANCELED are
  final.  Refusals raise :class:`node.errors.WorkitemError` with the PS3.18 section 11 HTTP
  status and the PS3.4 CC.2 DIMSE status (the texts pynetdicom's ``status`` module gives them).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from node.errors import WorkitemError

__all__ = [
    "CANCEL_REQUESTED",
    "PROGRESS_REPORT",
    "STATE_REPORT",
    "GLOBAL_SUBSCRIPTION_UID",
    "FILTERED_SUBSCRIPTION_UID",
    "REQUIREMENTS",
    "SEARCH_KEYS",
    "TAGS",
    "UPS_PUSH_SOP_CLASS_UID",
    "Requirement",
    "UpsState",
    "check_create",
    "check_final",
    "check_update",
    "event_information",
    "scheduled_workitem",
    "matches",
    "parse_search",
    "strip_transaction",
    "text_value",
    "transition",
    "validate_dataset",
]

#: PS3.4 Table CC.3.1-1 / PS3.6 Annex A: UPS Push SOP Class (the class of a stored workitem).
UPS_PUSH_SOP_CLASS_UID = "1.2.840.10008.5.1.4.34.6.1"
#: PS3.4 CC.3.1 well-known SOP Instances: the global and the filtered global subscription.
GLOBAL_SUBSCRIPTION_UID = "1.2.840.10008.5.1.4.34.5"
FILTERED_SUBSCRIPTION_UID = "1.2.840.10008.5.1.4.34.5.1"
#: Event Type IDs of the UPS event reports (PS3.4 Table CC.2.4-1).
STATE_REPORT = 1
CANCEL_REQUESTED = 2
PROGRESS_REPORT = 3


class UpsState(enum.Enum):
    """Procedure Step State (0074,1000) defined terms, PS3.3 C.30.1 / PS3.4 CC.1.1."""

    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"

    @property
    def is_final(self) -> bool:
        """COMPLETED and CANCELED accept no further change (PS3.4 CC.1.1)."""
        return self in (UpsState.COMPLETED, UpsState.CANCELED)


@dataclass(frozen=True, slots=True)
class Requirement:
    """One row of PS3.4 Table CC.2.5-3 (see the module docstring for the type codes)."""

    keyword: str
    tag: str
    vr: str
    create: str
    update: str
    completed: str
    canceled: str
    enum: tuple[str, ...] = ()
    items: tuple[Requirement, ...] = ()


def _r(
    keyword: str,
    tag: str,
    vr: str,
    create: str,
    update: str,
    final: str,
    canceled: str | None = None,
    *,
    enum: tuple[str, ...] = (),
    items: tuple[Requirement, ...] = (),
) -> Requirement:
    return Requirement(
        keyword,
        tag,
        vr,
        create,
        update,
        final,
        final if canceled is None else canceled,
        enum,
        items,
    )


#: PS3.4 Table CC.2.5-3, the rows ainode checks (2024 editions; see the module docstring).
REQUIREMENTS: tuple[Requirement, ...] = (
    # SOP Common Module
    _r("SpecificCharacterSet", "00080005", "CS", "3", "3", "3"),
    _r("SOPClassUID", "00080016", "UI", "3", "-", "1"),
    _r("SOPInstanceUID", "00080018", "UI", "3", "-", "1"),
    # Unified Procedure Step Scheduled Procedure Information Module
    _r(
        "ScheduledProcedureStepPriority",
        "00741200",
        "CS",
        "1",
        "3",
        "1",
        enum=("HIGH", "MEDIUM", "LOW"),
    ),
    _r("ProcedureStepLabel", "00741204", "LO", "1", "3", "1"),
    _r("WorklistLabel", "00741202", "LO", "3", "3", "1"),
    _r("ScheduledProcessingParametersSequence", "00741210", "SQ", "3", "3", "3"),
    _r("ScheduledStationNameCodeSequence", "00404025", "SQ", "2", "3", "2"),
    _r("ScheduledProcedureStepStartDateTime", "00404005", "DT", "1", "3", "1"),
    _r("ExpectedCompletionDateTime", "00404011", "DT", "3", "3", "3"),
    _r("ScheduledWorkitemCodeSequence", "00404018", "SQ", "2", "3", "2"),
    _r(
        "InputReadinessState",
        "00404041",
        "CS",
        "1",
        "3",
        "1",
        enum=("READY", "UNAVAILABLE", "INCOMPLETE"),
    ),
    _r("InputInformationSequence", "00404021", "SQ", "2", "3", "2"),
    _r("StudyInstanceUID", "0020000D", "UI", "3", "3", "3"),
    # Patient Demographic / Patient Identification (types 2 at creation)
    _r("PatientName", "00100010", "PN", "2", "3", "2"),
    _r("PatientID", "00100020", "LO", "2", "3", "2"),
    _r("PatientBirthDate", "00100030", "DA", "2", "3", "2"),
    _r("PatientSex", "00100040", "CS", "2", "3", "2"),
    # Unified Procedure Step Relationship Module
    _r("ReferencedRequestSequence", "0040A370", "SQ", "2", "3", "2"),
    # Unified Procedure Step Progress Information Module
    _r(
        "ProcedureStepState", "00741000", "CS", "1", "-", "1", enum=tuple(s.value for s in UpsState)
    ),
    _r(
        "ProcedureStepProgressInformationSequence",
        "00741002",
        "SQ",
        "3",
        "3",
        "3",
        "1",
        items=(
            _r("ProcedureStepProgress", "00741004", "DS", "3", "3", "3"),
            _r("ProcedureStepProgressDescription", "00741006", "ST", "3", "3", "3"),
            _r("ProcedureStepCancellationDateTime", "00404052", "DT", "3", "3", "3", "1"),
            _r("ReasonForCancellation", "00741238", "LT", "3", "3", "3"),
        ),
    ),
    # Unified Procedure Step Performed Procedure Information Module
    _r(
        "UnifiedProcedureStepPerformedProcedureSequence",
        "00741216",
        "SQ",
        "3",
        "3",
        "1",
        "3",
        items=(
            _r("ActualHumanPerformersSequence", "00404035", "SQ", "3", "3", "3"),
            _r("PerformedStationNameCodeSequence", "00404028", "SQ", "3", "3", "2", "3"),
            _r("PerformedProcedureStepStartDateTime", "00404050", "DT", "3", "3", "1", "3"),
            _r("PerformedProcedureStepEndDateTime", "00404051", "DT", "3", "3", "1", "3"),
            _r("PerformedWorkitemCodeSequence", "00404019", "SQ", "3", "3", "2", "3"),
            _r("OutputInformationSequence", "00404033", "SQ", "3", "3", "2", "3"),
        ),
    ),
    # General: the Transaction UID is never part of a stored or returned workitem (PS3.4 CC.2.5)
    _r("TransactionUID", "00081195", "UI", "-", "-", "3"),
)

#: keyword -> tag of every row above (and of their sequence items).
TAGS: dict[str, str] = {}
for _row in REQUIREMENTS:
    TAGS[_row.keyword] = _row.tag
    for _item in _row.items:
        TAGS[_item.keyword] = _item.tag
_KEYWORDS = {tag: kw for kw, tag in TAGS.items()}
_STATE = TAGS["ProcedureStepState"]
_TXN = TAGS["TransactionUID"]

_TAG_RE = re.compile(r"^[0-9A-F]{8}$")
_VR_RE = re.compile(r"^[A-Z]{2}$")
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MAX_DEPTH = 8


def _bad(message: str, dicom_status: int = 0xA900) -> WorkitemError:
    return WorkitemError(message, http_status=400, dicom_status=dicom_status)


def validate_dataset(data: Any, *, where: str = "dataset", depth: int = 0) -> dict[str, Any]:
    """Check that ``data`` is a DICOM JSON dataset (PS3.18 F.2) and return it with upper-case tags.

    Raises
    ------
    WorkitemError
        400: not an object, a key that is not 8 hex digits, an attribute without a ``vr``, a
        ``Value`` that is not a list, a sequence item that is not a dataset, nesting too deep.
    """
    if depth > _MAX_DEPTH:
        raise _bad(f"{where}: sequences nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(data, dict):
        raise _bad(f"{where}: expected a DICOM JSON object, got {type(data).__name__}")
    out: dict[str, Any] = {}
    for key, attr in data.items():
        tag = str(key).upper()
        if not _TAG_RE.match(tag):
            raise _bad(f"{where}: {key!r} is not a tag (8 hexadecimal digits, PS3.18 F.2.1)")
        name = f"{where}.{_KEYWORDS.get(tag, tag)}"
        if not isinstance(attr, dict) or not isinstance(attr.get("vr"), str):
            raise _bad(f"{name}: an attribute is an object with a 'vr' (PS3.18 F.2.2)")
        if not _VR_RE.match(attr["vr"]):
            raise _bad(f"{name}: {attr['vr']!r} is not a VR")
        value = attr.get("Value")
        if value is not None and not isinstance(value, list):
            raise _bad(f"{name}: 'Value' must be an array (PS3.18 F.2.4)")
        if attr["vr"] == "SQ" and value:
            attr = {
                **attr,
                "Value": [
                    validate_dataset(item, where=f"{name}[{i}]", depth=depth + 1)
                    for i, item in enumerate(value)
                ],
            }
        out[tag] = attr
    return out


def _values(ds: Mapping[str, Any], tag: str) -> list[Any] | None:
    """The ``Value`` list of ``tag`` ([] when present but empty), None when absent."""
    attr = ds.get(tag)
    if attr is None:
        return None
    value = attr.get("Value")
    if value is None:
        return []
    return [v for v in value if v not in (None, "")]


def text_value(ds: Mapping[str, Any], keyword: str) -> str | None:
    """The first value of ``keyword`` as text (a PN's ``Alphabetic`` form), None when empty."""
    values = _values(ds, TAGS.get(keyword, keyword))
    if not values:
        return None
    first = values[0]
    if isinstance(first, dict):
        alpha = first.get("Alphabetic")
        return str(alpha) if alpha else None
    return str(first)


def _check_rows(
    ds: Mapping[str, Any],
    rows: Sequence[Requirement],
    column: str,
    where: str,
) -> list[str]:
    problems: list[str] = []
    for row in rows:
        kind = getattr(row, column)
        values = _values(ds, row.tag)
        name = f"{where}{row.keyword} ({row.tag[:4]},{row.tag[4:]})"
        if values is None:
            if kind in ("1", "2"):
                problems.append(f"{name} is missing (type {kind})")
            continue
        if kind == "-" and column in ("create", "update") and values:
            problems.append(f"{name} is not allowed here")
            continue
        if kind == "1" and not values:
            problems.append(f"{name} has no value (type 1)")
            continue
        if row.enum:
            bad = [v for v in values if v not in row.enum]
            if bad:
                problems.append(f"{name}: {bad[0]!r} is not one of {', '.join(row.enum)}")
        if row.items and values:
            for i, item in enumerate(values):
                if isinstance(item, dict):
                    problems += _check_rows(item, row.items, column, f"{where}{row.keyword}[{i}].")
    return problems


def check_create(ds: Mapping[str, Any]) -> None:
    """Refuse a workitem that N-CREATE / ``POST /workitems`` may not create (PS3.4 CC.2.5).

    Raises
    ------
    WorkitemError
        400 with 0xC309 when Procedure Step State is not SCHEDULED; 400 with 0xA900 naming
        every missing type 1/2 attribute, empty type 1 attribute, value outside an enumerated
        set, or attribute not allowed at creation (a Transaction UID).
    """
    state = text_value(ds, "ProcedureStepState")
    if state is not None and state != UpsState.SCHEDULED.value:
        raise _bad(
            f"Procedure Step State (0074,1000) is {state!r}; a workitem is created SCHEDULED "
            "(PS3.4 CC.2.5.1.1)",
            0xC309,
        )
    problems = _check_rows(ds, REQUIREMENTS, "create", "")
    sop_class = text_value(ds, "SOPClassUID")
    if sop_class is not None and sop_class != UPS_PUSH_SOP_CLASS_UID:
        problems.append(
            f"SOP Class UID (0008,0016) is {sop_class}; a workitem is a UPS Push instance "
            f"({UPS_PUSH_SOP_CLASS_UID})"
        )
    if problems:
        raise _bad("; ".join(problems))


def check_update(ds: Mapping[str, Any]) -> None:
    """Refuse attributes that N-SET / the Update Workitem transaction may not change.

    Raises
    ------
    WorkitemError
        400 with 0xC303 when the body sets Procedure Step State (that is the Change State
        transaction); 400 with 0xA900 for SOP Class/Instance UID or Transaction UID, or values
        outside an enumerated set.
    """
    if _STATE in ds:
        raise _bad(
            "Procedure Step State (0074,1000) cannot be updated; use "
            "PUT /workitems/{uid}/state (PS3.18 11.7)",
            0xC303,
        )
    rows = [r for r in REQUIREMENTS if r.tag in ds]
    problems = _check_rows(ds, rows, "update", "")
    if problems:
        raise _bad("; ".join(problems))


def check_final(ds: Mapping[str, Any], state: UpsState) -> list[str]:
    """What ``ds`` lacks to meet the Final State requirements of ``state`` (Table CC.2.5-3)."""
    column = "completed" if state is UpsState.COMPLETED else "canceled"
    return _check_rows(ds, REQUIREMENTS, column, "")


def strip_transaction(ds: Mapping[str, Any]) -> dict[str, Any]:
    """``ds`` without its Transaction UID: it is never returned (PS3.4 CC.2.6.1.3.1)."""
    return {tag: attr for tag, attr in ds.items() if tag != _TXN}


def _conflict(message: str, dicom_status: int) -> WorkitemError:
    return WorkitemError(message, http_status=409, dicom_status=dicom_status)


def transition(
    *,
    current: UpsState,
    stored_transaction: str | None,
    requested: UpsState,
    transaction_uid: str | None,
    dataset: Mapping[str, Any],
) -> tuple[str | None, tuple[int, str] | None]:
    """Check a Change State request (PS3.4 CC.1.1 Table CC.1.1-2, CC.2.1.3).

    Parameters
    ----------
    current, stored_transaction:
        The workitem's state and the Transaction UID it was claimed with.
    requested, transaction_uid:
        The state asked for and the Transaction UID the request carries.
    dataset:
        The stored workitem, for the final-state requirements.

    Returns
    -------
    tuple
        ``(transaction UID to store, warning)``; the warning ``(0xB304 or 0xB306, text)`` (PS3.4
        CC.2.1.3) is set when the workitem already is in the requested final state, and then
        nothing changes.

    Raises
    ------
    WorkitemError
        400: no Transaction UID (0xC301), SCHEDULED asked for (0xC303); 409: the Transaction UID
        does not match (0xC301), already IN PROGRESS (0xC302), not yet IN PROGRESS (0xC310),
        already final (0xC300 / 0xC311), final-state requirements not met (0xC304).
    """
    if requested is UpsState.SCHEDULED:
        raise _bad(
            "a workitem becomes SCHEDULED only by its creation, not by a state change", 0xC303
        )
    if not transaction_uid:
        raise _bad(
            "the Transaction UID (0008,1195) is missing; the performer that claims a workitem "
            "chooses one and gives it with every later change (PS3.4 CC.1.1.1)",
            0xC301,
        )
    if not _UID_RE.match(transaction_uid) or len(transaction_uid) > 64:
        raise _bad(f"the Transaction UID {transaction_uid!r} is not a UID", 0xC301)
    if current is UpsState.SCHEDULED:
        if requested is UpsState.IN_PROGRESS:
            return transaction_uid, None
        raise _conflict(
            f"the workitem is SCHEDULED; it must go IN PROGRESS before {requested.value}"
            " (a SCHEDULED workitem is cancelled with a cancel request)",
            0xC310,
        )
    if current.is_final:
        if requested is current and transaction_uid == stored_transaction:
            code = 0xB306 if current is UpsState.COMPLETED else 0xB304
            text = f"the workitem is already in the requested state of {current.value}"
            return stored_transaction, (code, text)
        code = 0xC311 if current is UpsState.COMPLETED else 0xC300
        raise _conflict(f"the workitem is already {current.value} and may no longer change", code)
    # IN PROGRESS: a second claim is refused whatever its Transaction UID
    if requested is UpsState.IN_PROGRESS:
        raise _conflict("the workitem is already IN PROGRESS", 0xC302)
    if transaction_uid != stored_transaction:
        raise _conflict(
            "the Transaction UID does not match the one the workitem was claimed with", 0xC301
        )
    missing = check_final(dataset, requested)
    if missing:
        raise _conflict(
            f"the workitem does not meet the final state requirements of {requested.value} "
            f"(PS3.4 Table CC.2.5-3): {'; '.join(missing)}; set them with an update first",
            0xC304,
        )
    return stored_transaction, None


def event_information(
    *,
    state: UpsState,
    dataset: Mapping[str, Any],
    event_type: int,
    reason: str | None = None,
) -> dict[str, Any]:
    """The Event Information of one UPS event report (PS3.4 Table CC.2.4-1), DICOM JSON.

    The same attributes go into an N-EVENT-REPORT (UPS DIMSE) and, with Affected SOP Instance
    UID and Event Type ID added, into a UPS-RS event channel message (PS3.18 11.12): State
    Report: Procedure Step State and Input Readiness State; Cancel Requested: Reason For
    Cancellation (when given); Progress Report: the Procedure Step Progress Information
    Sequence.
    """
    info: dict[str, Any] = {}
    if event_type == STATE_REPORT:
        info[_STATE] = {"vr": "CS", "Value": [state.value]}
        readiness = text_value(dataset, "InputReadinessState")
        info[TAGS["InputReadinessState"]] = (
            {"vr": "CS", "Value": [readiness]} if readiness else {"vr": "CS"}
        )
    elif event_type == CANCEL_REQUESTED:
        if reason:
            info[TAGS["ReasonForCancellation"]] = {"vr": "LT", "Value": [reason]}
    elif event_type == PROGRESS_REPORT:
        progress = dataset.get(TAGS["ProcedureStepProgressInformationSequence"])
        if progress is not None:
            info[TAGS["ProcedureStepProgressInformationSequence"]] = progress
    return info


# --- search (PS3.18 11.9, QIDO-RS style matching, PS3.4 C.2.2.2) --------------------------------

#: Search keys ainode matches: keyword -> (path of tags, kind).  Kinds: ``uid`` (list of UIDs),
#: ``text`` (single value, ``*``/``?`` wildcards), ``exact`` (single value), ``range`` (DT range).
SEARCH_KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "SOPInstanceUID": (("00080018",), "uid"),
    "ProcedureStepState": (("00741000",), "exact"),
    "ScheduledProcedureStepPriority": (("00741200",), "exact"),
    "InputReadinessState": (("00404041",), "exact"),
    "ProcedureStepLabel": (("00741204",), "text"),
    "WorklistLabel": (("00741202",), "text"),
    "PatientName": (("00100010",), "text"),
    "PatientID": (("00100020",), "text"),
    "StudyInstanceUID": (("0020000D",), "uid"),
    "ScheduledProcedureStepStartDateTime": (("00404005",), "range"),
    "ScheduledWorkitemCodeSequence.CodeValue": (("00404018", "00080100"), "text"),
    "ScheduledStationNameCodeSequence.CodeValue": (("00404025", "00080100"), "text"),
    "ReferencedRequestSequence.AccessionNumber": (("0040A370", "00080050"), "text"),
}
_SEARCH_BY_TAG = {".".join(path): key for key, (path, _) in SEARCH_KEYS.items()}


def parse_search(params: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``(search key, value)`` pairs of a query, keys by keyword or tag path.

    Raises
    ------
    WorkitemError
        400 naming a key that ainode does not match on, or a key given twice.
    """
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in params:
        key = name if name in SEARCH_KEYS else _SEARCH_BY_TAG.get(name.upper())
        if key is None:
            raise _bad(f"search key {name!r} is not supported; use one of {', '.join(SEARCH_KEYS)}")
        if key in seen:
            raise _bad(f"search key {key} is given twice")
        seen.add(key)
        out.append((key, value))
    return out


def _leaves(ds: Mapping[str, Any], path: tuple[str, ...]) -> list[Any]:
    values = _values(ds, path[0]) or []
    if len(path) == 1:
        return values
    out: list[Any] = []
    for item in values:
        if isinstance(item, dict):
            out += _leaves(item, path[1:])
    return out


def _wild(pattern: str) -> re.Pattern[str]:
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z",
        re.DOTALL,
    )


def matches(ds: Mapping[str, Any], query: Sequence[tuple[str, str]]) -> bool:
    """Whether ``ds`` matches every ``(key, value)`` of ``query`` (PS3.4 C.2.2.2 matching)."""
    for key, wanted in query:
        if wanted == "":  # universal matching: a return key only
            continue
        path, kind = SEARCH_KEYS[key]
        leaves = [
            str(v.get("Alphabetic", "")) if isinstance(v, dict) else str(v)
            for v in _leaves(ds, path)
        ]
        if kind == "uid":
            allowed = {u.strip() for u in wanted.replace("\\", ",").split(",")}
            ok = any(v in allowed for v in leaves)
        elif kind == "exact":
            ok = wanted in leaves
        elif kind == "text":
            pattern = _wild(wanted)
            ok = any(pattern.match(v) for v in leaves)
        else:
            low, _, high = wanted.partition("-") if "-" in wanted else (wanted, "", wanted)
            ok = any((not low or v >= low) and (not high or v[: len(high)] <= high) for v in leaves)
        if not ok:
            return False
    return True


# --- workitems scheduled by routing rules (issue 23: ``then: {workitem: ...}``) -----------------

_PATIENT_TAGS = (("00100010", "PN"), ("00100020", "LO"), ("00100030", "DA"), ("00100040", "CS"))


def _code(value: str, scheme: str, meaning: str | None) -> dict[str, Any]:
    return {
        "00080100": {"vr": "SH", "Value": [value]},
        "00080102": {"vr": "SH", "Value": [scheme]},
        "00080104": {"vr": "LO", "Value": [meaning or value]},
    }


def scheduled_workitem(
    *,
    code: str,
    scheme: str,
    meaning: str | None,
    station: str | None,
    priority: str,
    label: str,
    header: Mapping[str, Any],
    study_uid: str,
    series_uid: str,
    instances: Sequence[tuple[str, str]],
    start: str,
    retrieve_ae_title: str | None = None,
    retrieve_url: str | None = None,
) -> dict[str, Any]:
    """The DICOM JSON of a workitem that a routing rule schedules for one series.

    Parameters
    ----------
    code, scheme, meaning:
        The Scheduled Workitem Code Sequence item (0040,4018).
    station:
        Code Value of the Scheduled Station Name Code Sequence (0040,4025; same scheme), or
        None for an empty sequence (any performer).
    priority, label, start:
        Scheduled Procedure Step Priority, Procedure Step Label and Start DateTime.
    header:
        The series' stored header (DICOM JSON): the patient attributes and the accession
        number are copied from it (empty type 2 attributes when it has none).
    study_uid, series_uid, instances:
        The input: one Input Information Sequence item (0040,4021) with the series and its
        ``(SOP Class UID, SOP Instance UID)`` pairs (Referenced SOP Sequence).
    retrieve_ae_title, retrieve_url:
        Where a performer retrieves the input (PS3.3 Table 10-3b, Referenced Instances and
        Access Macro): the AE title for C-MOVE/C-GET in the DICOM Retrieval Sequence
        (0040,E021), and the series' WADO-RS URL in the WADO-RS Retrieval Sequence (0040,E025).
        The item's Type of Instances (0040,E020) is DICOM.
    """
    source: dict[str, Any] = {
        "0020000D": {"vr": "UI", "Value": [study_uid]},
        "0020000E": {"vr": "UI", "Value": [series_uid]},
        "00081199": {  # Referenced SOP Sequence
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": [sop_class]},
                    "00081155": {"vr": "UI", "Value": [sop_uid]},
                }
                for sop_class, sop_uid in instances
            ],
        },
        "0040E020": {"vr": "CS", "Value": ["DICOM"]},
    }
    if retrieve_ae_title:
        source["0040E021"] = {
            "vr": "SQ",
            "Value": [{"00080054": {"vr": "AE", "Value": [retrieve_ae_title]}}],
        }
    if retrieve_url:
        source["0040E025"] = {
            "vr": "SQ",
            "Value": [{"00081190": {"vr": "UR", "Value": [retrieve_url]}}],
        }
    ds: dict[str, Any] = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        TAGS["ProcedureStepState"]: {"vr": "CS", "Value": [UpsState.SCHEDULED.value]},
        TAGS["ScheduledProcedureStepPriority"]: {"vr": "CS", "Value": [priority]},
        TAGS["ProcedureStepLabel"]: {"vr": "LO", "Value": [label[:64]]},
        TAGS["ScheduledProcedureStepStartDateTime"]: {"vr": "DT", "Value": [start]},
        TAGS["InputReadinessState"]: {"vr": "CS", "Value": ["READY"]},
        TAGS["ScheduledWorkitemCodeSequence"]: {
            "vr": "SQ",
            "Value": [_code(code, scheme, meaning)],
        },
        TAGS["ScheduledStationNameCodeSequence"]: {
            "vr": "SQ",
            "Value": [_code(station, scheme, None)] if station else [],
        },
        TAGS["StudyInstanceUID"]: {"vr": "UI", "Value": [study_uid]},
        TAGS["InputInformationSequence"]: {"vr": "SQ", "Value": [source]},
    }
    for tag, vr in _PATIENT_TAGS:
        attr = header.get(tag)
        ds[tag] = {"vr": vr, "Value": attr["Value"]} if attr and attr.get("Value") else {"vr": vr}
    accession = header.get("00080050")
    request: dict[str, Any] = {}
    if accession and accession.get("Value"):
        request["00080050"] = {"vr": "SH", "Value": accession["Value"]}
    ds[TAGS["ReferencedRequestSequence"]] = {"vr": "SQ", "Value": [request] if request else []}
    return ds
