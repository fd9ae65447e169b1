"""What every destination type implements, and the registry that picks one by ``type``.

A ``Sender`` receives a batch of ``Parcel``s (one DICOM file each, plus an optional Secondary
Capture rendering to send instead when the destination refuses the object's SOP class) and
answers one ``Outcome`` per parcel.  A failure that concerns the whole destination (connection
refused, association rejected, HTTP 5xx for the whole request) is raised as ``DestinationError``
instead: the outbox then backs off the destination as a whole.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from node.errors import DestinationError

__all__ = [
    "BatchError",
    "Outcome",
    "OutcomeKind",
    "Parcel",
    "Sender",
    "SenderContext",
]


@dataclass(frozen=True, slots=True)
class Parcel:
    """One object to hand to one destination (a row of the outbox)."""

    row_id: int
    path: Path
    sop_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    fallback_path: Path | None = None


class OutcomeKind(enum.StrEnum):
    """How one parcel fared."""

    DELIVERED = "delivered"  # success or warning status (PS3.4 B.2.3)
    RETRY = "retry"  # transient failure: back off and try again
    REFUSED = "refused"  # permanent: the destination will not take this object


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of sending one parcel, with the peer's status code where it gave one."""

    row_id: int
    kind: OutcomeKind
    status: int | None = None
    detail: str = ""
    sent_sop_uid: str | None = None
    sent_transfer_syntax_uid: str | None = None


@dataclass(frozen=True, slots=True)
class SenderContext:
    """What a sender may need besides its own config: the node's AE title and the refusal memory.

    ``remember_refusal(sop_class_uid, transfer_syntax_uid)`` and ``refusals()`` persist what the
    peer refused in presentation-context negotiation (PS3.8 9.3.3.2), per destination.
    """

    name: str
    node_ae_title: str
    timeout_seconds: float
    remember_refusal: Callable[[str, str], None]
    refusals: Callable[[], frozenset[tuple[str, str]]]


class Sender(abc.ABC):
    """Sends batches of parcels to one destination."""

    @abc.abstractmethod
    def send(self, parcels: Sequence[Parcel]) -> list[Outcome]:
        """Send ``parcels`` (one association/request where possible); one outcome per parcel.

        Raises
        ------
        DestinationError
            The destination could not be reached or refused the whole batch (nothing delivered
            unless an outcome says so: outcomes already earned are attached as ``partial``).
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default holds none."""


class BatchError(DestinationError):
    """A destination-wide failure after part of a batch was delivered (``partial`` outcomes)."""

    def __init__(self, message: str, partial: Sequence[Outcome] = ()) -> None:
        super().__init__(message)
        self.partial = list(partial)
