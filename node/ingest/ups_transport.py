"""How a UPS performer talks to its Task Manager: UPS-RS (PS3.18 11) or UPS DIMSE (PS3.4 CC).

The performer (``node.ingest.performer``) uses one small interface, :class:`UpsTransport`:
search SCHEDULED workitems, read one, change its state, update it.  Each answer is an
:class:`Answer` — done, refused for good (HTTP 4xx, a DIMSE failure status: the performer gives
the workitem up or cancels it), or refused for now (HTTP 5xx, out of resources: asked again
next round) — and a manager that cannot be reached raises :class:`ManagerUnavailable`.

* :class:`RsTransport` sends the Transaction UID as the ``transaction-uid`` query parameter
  (PS3.18 2019+) and states with ``PUT .../state``.
* :class:`DimseTransport` opens one association per request (UPS Push, Pull and Watch proposed,
  UPS Push as Requested SOP Class, PS3.4 CC.2): C-FIND (UPS Pull) to search, N-GET to read,
  N-ACTION (Change UPS State) and N-SET with the Transaction UID in the data set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import requests
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from node.config import UpsDimseSource, UpsRsSource
from node.ingest.ups_datasets import attr
from node.ingest.ups_scp import UPS_PULL, UPS_PUSH, UPS_WATCH
from node.store.ups import GLOBAL_SUBSCRIPTION_UID
from node.web.peers import make_session, ssl_context

__all__ = [
    "Answer",
    "DimseTransport",
    "ManagerUnavailable",
    "RsTransport",
    "UpsTransport",
    "make_transport",
]

_JSON = "application/dicom+json"
_T = TypeVar("_T")
#: DIMSE statuses that say "not now" rather than "no": out of resources, processing failure,
#: resource limitation (PS3.7 Annex C)
_TRANSIENT = {0xA700, 0x0110, 0x0213}


class ManagerUnavailable(Exception):
    """The manager did not answer (network, time-out, an answer that is not a workitem)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The manager's answer to a change: ``is_ok``; else ``is_refused`` (for good) or not (for
    now); ``text`` quotes it for logs and reasons (``HTTP 409 299 ...``, ``status 0xC302 ...``)."""

    is_ok: bool
    is_refused: bool
    text: str


class UpsTransport(Protocol):
    """The calls a performer makes to its manager."""

    def search(self, *, code: str | None, station: str | None) -> list[dict[str, Any]]:
        """SCHEDULED workitems (DICOM JSON) with Scheduled Workitem Code ``code`` and Scheduled
        Station Name code ``station`` (None = any)."""
        ...

    def get(self, uid: str) -> dict[str, Any] | None:
        """The workitem ``uid`` (DICOM JSON), None when the manager does not have it."""
        ...

    def change_state(self, uid: str, state: str, *, transaction_uid: str) -> Answer:
        """Ask for Procedure Step State ``state`` with ``transaction_uid``."""
        ...

    def update(self, uid: str, *, transaction_uid: str, changes: dict[str, Any]) -> Answer:
        """Set ``changes`` (DICOM JSON) on the workitem claimed with ``transaction_uid``."""
        ...

    def close(self) -> None:
        """Release what the transport holds."""
        ...


class RsTransport:
    """UPS-RS client (PS3.18 section 11) of an ``ups-rs`` source."""

    def __init__(self, source: UpsRsSource) -> None:
        self._base = source.url.rstrip("/")
        self._session = make_session(source)

    def _call(self, send: Callable[[], requests.Response]) -> requests.Response:
        try:
            return send()
        except requests.RequestException as exc:
            raise ManagerUnavailable(str(exc)) from exc

    @staticmethod
    def _answer(resp: requests.Response) -> Answer:
        warning = resp.headers.get("Warning", "")
        return Answer(
            resp.status_code == 200,
            400 <= resp.status_code < 500,
            f"HTTP {resp.status_code} {warning}".strip(),
        )

    def search(self, *, code: str | None, station: str | None) -> list[dict[str, Any]]:
        params = {"ProcedureStepState": "SCHEDULED"}
        if code is not None:
            params["ScheduledWorkitemCodeSequence.CodeValue"] = code
        if station is not None:
            params["ScheduledStationNameCodeSequence.CodeValue"] = station
        resp = self._call(
            lambda: self._session.get(
                f"{self._base}/workitems", params=params, headers={"Accept": _JSON}, timeout=30
            )
        )
        if resp.status_code == 204:
            return []
        if resp.status_code != 200:
            raise ManagerUnavailable(f"search answered HTTP {resp.status_code}")
        try:
            found = resp.json()
        except ValueError as exc:
            raise ManagerUnavailable("search answer is not JSON") from exc
        return [ds for ds in found if isinstance(ds, dict)]

    def get(self, uid: str) -> dict[str, Any] | None:
        resp = self._call(
            lambda: self._session.get(
                f"{self._base}/workitems/{uid}", headers={"Accept": _JSON}, timeout=30
            )
        )
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise ManagerUnavailable(f"retrieve answered HTTP {resp.status_code}")
        try:
            ds = resp.json()[0]
        except (ValueError, IndexError, KeyError) as exc:
            raise ManagerUnavailable("retrieve answer is not a workitem") from exc
        if not isinstance(ds, dict):
            raise ManagerUnavailable("retrieve answer is not a workitem")
        return ds

    def change_state(self, uid: str, state: str, *, transaction_uid: str) -> Answer:
        body = [{"00741000": attr("CS", state), "00081195": attr("UI", transaction_uid)}]
        return self._answer(
            self._call(
                lambda: self._session.put(
                    f"{self._base}/workitems/{uid}/state",
                    json=body,
                    headers={"Content-Type": _JSON},
                    timeout=30,
                )
            )
        )

    def update(self, uid: str, *, transaction_uid: str, changes: dict[str, Any]) -> Answer:
        return self._answer(
            self._call(
                lambda: self._session.post(
                    f"{self._base}/workitems/{uid}",
                    params={"transaction-uid": transaction_uid},
                    json=[changes],
                    headers={"Content-Type": _JSON},
                    timeout=30,
                )
            )
        )

    def close(self) -> None:
        self._session.close()


#: Return keys of the performer's C-FIND (what it reads from a found workitem).
_RETURN_KEYS = (
    "SOPInstanceUID",
    "InputReadinessState",
    "ProcedureStepLabel",
    "StudyInstanceUID",
)
_RETURN_SEQUENCES = (
    "InputInformationSequence",
    "ScheduledStationNameCodeSequence",
    "ScheduledWorkitemCodeSequence",
)


class DimseTransport:
    """UPS DIMSE SCU (PS3.4 Annex CC) of an ``ups-dimse`` source.

    Parameters
    ----------
    source:
        The manager's address, AE title and our calling AE title.
    ae_title:
        This node's AE title (the calling AE title unless the source sets one).
    timeout_seconds:
        Association, DIMSE and network time-out.
    """

    def __init__(self, source: UpsDimseSource, *, ae_title: str, timeout_seconds: float) -> None:
        self._source = source
        self._ae = AE(ae_title=source.calling_ae_title or ae_title)
        for sop_class in (UPS_PUSH, UPS_PULL, UPS_WATCH):
            self._ae.add_requested_context(sop_class)
        self._ae.acse_timeout = self._ae.dimse_timeout = timeout_seconds
        self._ae.network_timeout = timeout_seconds

    def _with(self, call: Callable[[Association], _T]) -> _T:
        s = self._source
        tls_args = (ssl_context(s.tls), s.host) if s.tls is not None else None
        try:
            assoc = self._ae.associate(s.host, s.port, ae_title=s.ae_title, tls_args=tls_args)
        except (OSError, RuntimeError) as exc:
            raise ManagerUnavailable(f"cannot reach {s.ae_title}: {exc}") from exc
        if not assoc.is_established:
            raise ManagerUnavailable(
                f"{s.ae_title} at {s.host}:{s.port} refused or did not answer the association"
            )
        try:
            return call(assoc)
        finally:
            assoc.release()

    @staticmethod
    def _answer(status: Dataset) -> Answer:
        if "Status" not in status:
            raise ManagerUnavailable("no answer to the request (time-out or abort)")
        code = int(status.Status)
        comment = str(status.get("ErrorComment", "") or "")
        text = f"status 0x{code:04X} {comment}".strip()
        is_ok = code == 0x0000 or 0xB000 <= code <= 0xBFFF or code == 0x0001
        return Answer(is_ok, not is_ok and code not in _TRANSIENT, text)

    def search(self, *, code: str | None, station: str | None) -> list[dict[str, Any]]:
        query = Dataset()
        query.ProcedureStepState = "SCHEDULED"
        for keyword in _RETURN_KEYS:
            setattr(query, keyword, "")
        for keyword in _RETURN_SEQUENCES:
            setattr(query, keyword, [])
        if code is not None:
            query.ScheduledWorkitemCodeSequence = [_code_value(code)]
        if station is not None:
            query.ScheduledStationNameCodeSequence = [_code_value(station)]

        def find(assoc: Association) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            for status, identifier in assoc.send_c_find(query, UPS_PULL):
                if "Status" not in status:
                    raise ManagerUnavailable("the C-FIND was not answered to the end")
                code_ = int(status.Status)
                if code_ in (0xFF00, 0xFF01) and identifier is not None:
                    found.append(identifier.to_json_dict())
                elif code_ != 0x0000:
                    raise ManagerUnavailable(f"C-FIND answered status 0x{code_:04X}")
            return found

        return self._with(find)

    def get(self, uid: str) -> dict[str, Any] | None:
        def get(assoc: Association) -> dict[str, Any] | None:
            status, ds = assoc.send_n_get([], UPS_PUSH, uid)
            if "Status" not in status:
                raise ManagerUnavailable("no answer to the N-GET")
            code = int(status.Status)
            if code in (0xC307, 0x0112):  # no such UPS / no such SOP instance
                return None
            if code != 0x0000 or ds is None:
                raise ManagerUnavailable(f"N-GET answered status 0x{code:04X}")
            return ds.to_json_dict()

        return self._with(get)

    def change_state(self, uid: str, state: str, *, transaction_uid: str) -> Answer:
        info = Dataset()
        info.ProcedureStepState = state
        info.TransactionUID = transaction_uid
        return self._with(lambda a: self._answer(a.send_n_action(info, 1, UPS_PUSH, uid)[0]))

    def update(self, uid: str, *, transaction_uid: str, changes: dict[str, Any]) -> Answer:
        ds = Dataset.from_json(dict(changes))
        ds.TransactionUID = transaction_uid
        return self._with(lambda a: self._answer(a.send_n_set(ds, UPS_PUSH, uid)[0]))

    def subscribe(self, aet: str) -> Answer:
        """Subscribe ``aet`` to the manager's global subscription (N-ACTION type 3, PS3.4
        CC.2.3.1), without a deletion lock."""
        info = Dataset()
        info.ReceivingAE = aet
        info.DeletionLock = "FALSE"
        return self._with(
            lambda a: self._answer(a.send_n_action(info, 3, UPS_PUSH, GLOBAL_SUBSCRIPTION_UID)[0])
        )

    def close(self) -> None:
        """Nothing held between requests."""


def _code_value(value: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    return item


def make_transport(
    source: UpsRsSource | UpsDimseSource, *, ae_title: str, timeout_seconds: float = 30.0
) -> RsTransport | DimseTransport:
    """The transport of a worklist source."""
    if isinstance(source, UpsRsSource):
        return RsTransport(source)
    return DimseTransport(source, ae_title=ae_title, timeout_seconds=timeout_seconds)
