"""SOP class UIDs the node tests objects against, taken by name from pydicom's UID dictionary.

pydicom generates ``pydicom.uid``'s named constants from the UID registry of PS3.6 Annex A, so
each UID here comes from the standard's registry rather than being typed in.
"""

from __future__ import annotations

from pydicom.uid import (
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameSingleBitSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)

__all__ = ["SC_CLASS", "SC_CLASSES"]

#: Secondary Capture Image Storage (PS3.4 B.5): the class of the SC objects ainode writes.
SC_CLASS: str = str(SecondaryCaptureImageStorage)

#: Every Secondary Capture Image Storage SOP class (PS3.4 B.5): single-frame and multi-frame.
SC_CLASSES: frozenset[str] = frozenset(
    str(uid)
    for uid in (
        SecondaryCaptureImageStorage,
        MultiFrameSingleBitSecondaryCaptureImageStorage,
        MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        MultiFrameTrueColorSecondaryCaptureImageStorage,
    )
)
