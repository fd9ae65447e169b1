"""SOP class UIDs the node tests objects against, taken by name from pydicom's UID dictionary.

pydicom generates ``pydicom.uid``'s named constants from the UID registry of PS3.6 Annex A, so
each UID here comes from the standard's registry rather than being typed in.
"""

from __future__ import annotations

from pydicom.uid import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    KeyObjectSelectionDocumentStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameSingleBitSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    SpatialRegistrationStorage,
)

__all__ = ["KOS_CLASS", "REG_CLASS", "SC_CLASS", "SC_CLASSES", "SEG_CLASS", "SR_CLASSES"]

#: Segmentation Storage (PS3.4 B.5): the class of the DICOM-SEG objects ainode writes.
SEG_CLASS: str = str(SegmentationStorage)

#: Key Object Selection Document Storage: key images and IOCM rejection notes (PS3.4 B.5).
KOS_CLASS: str = str(KeyObjectSelectionDocumentStorage)

#: The SR storage classes a TID 1500 measurement report may be written in (PS3.4 B.5).
SR_CLASSES: frozenset[str] = frozenset(
    str(uid) for uid in (EnhancedSRStorage, ComprehensiveSRStorage, Comprehensive3DSRStorage)
)

#: Spatial Registration Storage (PS3.4 B.5): the registrations ainode writes (PS3.3 A.39).
REG_CLASS: str = str(SpatialRegistrationStorage)

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
