"""``multipart/related`` bodies (RFC 2387; PS3.18 8.6): one parser and one writer for the node.

The parser is python-multipart's streaming ``MultipartParser``: ``PartCollector`` is fed body
chunks as they arrive and queues each part once it is complete, so STOW-RS can store a part
while the rest of the request streams in.  ``iter_related`` parses a body held in memory (a
WADO-RS response) the same way.  ``encode_related`` writes a body.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.multipart import MultipartParser, parse_options_header

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = [
    "Part",
    "PartCollector",
    "boundary_of",
    "encode_related",
    "iter_related",
    "related_content_type",
]


@dataclass
class Part:
    """One body part: its headers (names lower-cased) and its bytes."""

    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)

    @property
    def media_type(self) -> str:
        """The part's media type without parameters, lower-cased (``application/dicom``...)."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


class PartCollector:
    """Feeds body chunks to ``MultipartParser``; completed parts queue up until ``take()``.

    Raises
    ------
    python_multipart.exceptions.FormParserError
        From the constructor for an unusable boundary, from ``write`` for a malformed body.
    """

    def __init__(self, boundary: bytes) -> None:
        self.ready: list[Part] = []
        self.ended = False
        self._part = Part()
        self._field = bytearray()
        self._value = bytearray()
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_part_end": self._end,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_end": self._finish,
        }
        self.parser = MultipartParser(boundary, callbacks)

    def _begin(self) -> None:
        self._part = Part()

    def _data(self, data: bytes, start: int, end: int) -> None:
        self._part.data += data[start:end]

    def _end(self) -> None:
        self.ready.append(self._part)
        self._part = Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._part.headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _finish(self) -> None:
        self.ended = True

    def write(self, chunk: bytes) -> None:
        """Parse the next chunk of the body."""
        self.parser.write(chunk)

    def take(self) -> list[Part]:
        """The parts completed since the last call."""
        parts, self.ready = self.ready, []
        return parts


def boundary_of(content_type: str | None) -> tuple[str, bytes | None]:
    """Media type (lower-cased) and boundary (``None`` when absent) of a Content-Type value."""
    media, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    return media.decode("latin-1").lower(), boundary or None


def iter_related(body: bytes, content_type: str | None) -> Iterator[Part]:
    """The parts of a ``multipart/related`` body held in memory.

    A body that is not multipart (no boundary) is one part with the given Content-Type, as a
    DICOMweb server may answer a single-instance retrieve.

    Raises
    ------
    python_multipart.exceptions.FormParserError
        The body is malformed.
    """
    media, boundary = boundary_of(content_type)
    if not media.startswith("multipart/") or boundary is None:
        yield Part(headers={"content-type": content_type or ""}, data=bytearray(body))
        return
    collector = PartCollector(boundary)
    collector.write(body)
    yield from collector.take()


def related_content_type(boundary: str, part_type: str = "application/dicom") -> str:
    """The Content-Type of a ``multipart/related`` body whose root parts are ``part_type``."""
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def encode_related(
    parts: Iterable[tuple[str, bytes]], *, part_type: str = "application/dicom"
) -> tuple[bytes, str]:
    """Write a ``multipart/related`` body from ``(content type, bytes)`` pairs.

    Returns
    -------
    tuple[bytes, str]
        The body and its Content-Type (with a fresh random boundary).
    """
    boundary = secrets.token_hex(16)
    delimiter = f"--{boundary}\r\n".encode("ascii")
    body = b"".join(
        delimiter + f"Content-Type: {media}\r\n\r\n".encode("ascii") + data + b"\r\n"
        for media, data in parts
    )
    return body + f"--{boundary}--\r\n".encode("ascii"), related_content_type(boundary, part_type)
