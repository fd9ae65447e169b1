"""Stage 6: the durable outbox and one sender per destination type.

Types: DIMSE C-STORE, DICOMweb STOW-RS, Orthanc REST, folder.
"""

from node.delivery.base import (
    BatchError,
    Outcome,
    OutcomeKind,
    Parcel,
    Sender,
    SenderContext,
)
from node.delivery.outbox import FORWARD, Delivery, Outbox
from node.delivery.senders import make_sender

__all__ = [
    "FORWARD",
    "BatchError",
    "Delivery",
    "Outbox",
    "Outcome",
    "OutcomeKind",
    "Parcel",
    "Sender",
    "SenderContext",
    "make_sender",
]
