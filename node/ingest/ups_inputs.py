"""Where a UPS performer fetches a workitem's input study from (PS3.3 Table 10-3b locations).

* ``ups-rs``: WADO-RS from the item's Retrieve URL when it lies on the manager's host (so the
  source's credentials go only there), else from ``fetch_from``, else from the source's ``url``.
* ``ups-dimse``: C-GET or C-MOVE (the source's ``method``) from the item's Retrieve AE Title:
  the manager's own AE title (or none given) is the manager, another one must be the
  ``ae_title`` of a configured ``dimse`` source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from node.config import DicomwebSource, DimseSource, UpsDimseSource, UpsRsSource

__all__ = ["InputLocationError", "retrieve_ae_input", "wado_input", "where"]


class InputLocationError(Exception):
    """The input's location is not one this node may fetch from; the message says why."""


def _as_dicomweb(source: UpsRsSource, base: str) -> DicomwebSource:
    return DicomwebSource(
        type="dicomweb",
        url=base,
        auth=source.auth,
        username=source.username,
        password=source.password,
        token=source.token,
        verify_tls=source.verify_tls,
        ca=source.ca,
    )


def wado_input(
    source: UpsRsSource, url: str | None, *, fetch_from: Any, source_name: str
) -> DicomwebSource:
    """The DICOMweb source to fetch an input with Retrieve URL ``url`` (or None) from.

    Raises
    ------
    InputLocationError
        ``url`` is on another host than the source's and no ``fetch_from`` is configured.
    """
    base_url = source.url.rstrip("/")
    if url is not None:
        base = url.split("/studies/", 1)[0].rstrip("/")
        mine, theirs = urlsplit(base_url), urlsplit(base)
        if (mine.scheme, mine.netloc) == (theirs.scheme, theirs.netloc):
            return _as_dicomweb(source, base)
    if isinstance(fetch_from, DicomwebSource):
        return fetch_from
    if url is not None:
        raise InputLocationError(
            f"input Retrieve URL {url[:200]} is not on {base_url}; configure"
            f" sources.{source_name}.fetch_from to fetch it"
        )
    return _as_dicomweb(source, base_url)


def retrieve_ae_input(
    source: UpsDimseSource, aet: str | None, *, sources: Mapping[str, Any]
) -> DimseSource:
    """The DICOM source to fetch an input with Retrieve AE Title ``aet`` (or None) from.

    Raises
    ------
    InputLocationError
        ``aet`` is neither the manager's AE title nor a configured ``dimse`` source's.
    """
    if aet is None or aet == source.ae_title:
        host, port, title, tls = source.host, source.port, source.ae_title, source.tls
    else:
        known = [s for s in sources.values() if isinstance(s, DimseSource) and s.ae_title == aet]
        if not known:
            raise InputLocationError(
                f"input Retrieve AE Title {aet} is neither the manager ({source.ae_title}) nor a"
                " dimse source of this node; add it to sources to fetch from it"
            )
        host, port, title, tls = known[0].host, known[0].port, aet, known[0].tls
    return DimseSource(
        host=host,
        port=port,
        ae_title=title,
        calling_ae_title=source.calling_ae_title,
        tls=tls,
        method=source.method,
    )


def where(source: DicomwebSource | DimseSource) -> str:
    """A source as named in a cancellation reason (URL, or AE title and address)."""
    if isinstance(source, DicomwebSource):
        return source.url
    return f"{source.ae_title} ({source.host}:{source.port})"
