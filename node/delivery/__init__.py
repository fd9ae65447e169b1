"""Stage 6: the durable outbox and one sender per destination type.

Types: DIMSE C-STORE, DICOMweb STOW-RS, Orthanc REST, folder.  ``Rejections`` withdraws
superseded or retracted results with IOCM rejection notes through the outbox.
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
from node.delivery.rejections import Rejection, Rejections
from node.delivery.senders import make_sender

__all__ = [
    "FORWARD",
    "BatchError",
    "Delivery",
    "Outbox",
    "Outcome",
    "OutcomeKind",
    "Parcel",
    "Rejection",
    "Rejections",
    "Sender",
    "SenderContext",
    "make_sender",
]
