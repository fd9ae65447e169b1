"""Which sender serves which destination type: one explicit mapping, checked by mypy.

A new destination type adds its config class to ``node.config.Destination``, its sender module
here, and one ``case`` below; mypy's exhaustiveness check (``assert_never``) fails until it does.
"""

from __future__ import annotations

from typing import assert_never

from node.config import (
    DicomwebDestination,
    DimseDestination,
    FolderDestination,
    OrthancDestination,
)
from node.delivery.base import Sender, SenderContext
from node.delivery.dicomweb import DicomwebSender
from node.delivery.dimse import DimseSender
from node.delivery.folder import FolderSender
from node.delivery.orthanc import OrthancSender

__all__ = ["DestinationConfig", "make_sender"]

DestinationConfig = DimseDestination | DicomwebDestination | OrthancDestination | FolderDestination


def make_sender(config: DestinationConfig, context: SenderContext) -> Sender:
    """Build the sender for one destination's config (its class picks the sender).

    Parameters
    ----------
    config
        The destination's validated configuration (``destinations.NAME``).
    context
        The node's AE title, time-outs and the destination's name.

    Returns
    -------
    Sender
        A sender for that destination.
    """
    match config:
        case DimseDestination():
            return DimseSender(config, context)
        case DicomwebDestination():
            return DicomwebSender(config, context)
        case OrthancDestination():
            return OrthancSender(config, context)
        case FolderDestination():
            return FolderSender(config, context)
        case _:
            assert_never(config)
