"""Source headers for result building: read once, sanitised copies, ordered like the Volume.

Received originals are never modified: every fix (empty or misspelt Specific Character Set, broken
values, incomplete sequence items, private elements; ``node.results.modules.sanitise_header``) is
applied to the in-memory copy read here, and listed in ``SourceSet.repairs`` for the job record.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.errors import ResultError
from node.results.modules import sanitise_header
from node.types import SourceRef, Volume

__all__ = ["SourceSet", "load_sources", "quiet_highdicom"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceSet:
    """Sanitised source headers (no pixel data) keyed by SOP Instance UID.

    ``repairs`` says what sanitising changed (distinct messages, attribute keywords only).
    """

    by_uid: dict[str, Dataset]
    repairs: tuple[str, ...] = field(default=())

    def header(self, ref: SourceRef) -> Dataset:
        """The header of the instance ``ref`` points to; ResultError when it was not given."""
        try:
            return self.by_uid[ref.sop_uid]
        except KeyError:
            raise ResultError(
                f"volume slice refers to SOP instance {ref.sop_uid} that is not among the "
                "source files; pass every file of the source series"
            ) from None

    def ordered(self, volume: Volume) -> list[Dataset]:
        """Distinct source instances in the order their slices appear in ``volume``."""
        seen: dict[str, Dataset] = {}
        for ref in volume.sources:
            if ref.sop_uid not in seen:
                seen[ref.sop_uid] = self.header(ref)
        return list(seen.values())

    def first(self, volume: Volume) -> Dataset:
        """The header of the instance of the first slice."""
        return self.header(volume.sources[0])


def _hoist_shared_groups(ds: Dataset) -> None:
    """Copy per-frame Pixel Measures / Plane Orientation into the Shared Functional Groups when
    every frame has the same value (PS3.3 C.7.6.16: either place is valid; highdicom reads the
    shared one only)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    if not per_frame or not shared:
        return
    for keyword in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
        if keyword in shared[0] or not all(keyword in fg for fg in per_frame):
            continue
        first = per_frame[0][keyword]
        if all(fg[keyword].value == first.value for fg in per_frame):
            shared[0][keyword] = copy.deepcopy(first)


def _sanitise(ds: Dataset, repairs: dict[str, None], seen: set[Any]) -> Dataset:
    """Make the copy usable and valid for what results copy from it (see the module doc);
    ``seen`` carries the values found valid in the series' other headers."""
    with warnings.catch_warnings():
        # pydicom warns about the very values being repaired here; they are reported instead
        warnings.simplefilter("ignore", UserWarning)
        for message in sanitise_header(ds, seen):
            repairs.setdefault(message, None)
    _hoist_shared_groups(ds)
    if "BodyPartExamined" in ds and not ds.BodyPartExamined:
        del ds.BodyPartExamined
    return ds


def load_sources(
    paths: Sequence[Path], *, datasets: Mapping[Path, Dataset] | None = None
) -> SourceSet:
    """Read the headers of the source instances (pixel data is not loaded).

    Parameters
    ----------
    paths
        Files of the source series (at least those the Volume references).
    datasets
        Headers already read (without pixel data), by path; they are sanitised in place, so
        pass only copies the caller no longer uses otherwise. The other paths are read here.

    Returns
    -------
    SourceSet
        Sanitised copies keyed by SOP Instance UID.

    Raises
    ------
    ResultError
        A file is not readable DICOM, lacks a SOP Instance UID, or has an identifying attribute
        that is not valid DICOM (results would not match their patient).
    """
    by_uid: dict[str, Dataset] = {}
    repairs: dict[str, None] = {}
    seen: set[Any] = set()
    known = datasets or {}
    for path in paths:
        ds = known.get(Path(path))
        if ds is None:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except (InvalidDicomError, OSError) as exc:
                raise ResultError(f"source file {path.name} is not readable DICOM: {exc}") from exc
        uid = ds.get("SOPInstanceUID")
        if not uid:
            raise ResultError(f"source file {path.name} has no SOP Instance UID")
        by_uid[str(uid)] = _sanitise(ds, repairs, seen)
    log.debug("results.sources_loaded", extra={"instances": len(by_uid)})
    if repairs:
        log.info("results.sources_repaired", extra={"repairs": len(repairs)})
    return SourceSet(by_uid=by_uid, repairs=tuple(repairs))


@contextlib.contextmanager
def quiet_highdicom() -> Iterator[None]:
    """Silence highdicom's warning about single-component person names copied from the source.

    The source's Patient Name must be copied unchanged (same patient), so the warning cannot be
    acted upon here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*contains only a single component", category=UserWarning
        )
        yield
