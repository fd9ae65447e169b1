"""``node.web.multipart``: the one multipart/related parser and writer of the node."""

from __future__ import annotations

import pytest
from python_multipart.exceptions import FormParserError

from node.web.multipart import (
    PartCollector,
    boundary_of,
    encode_related,
    iter_related,
    related_content_type,
)


def test_parser_splits_parts_and_keeps_headers() -> None:
    body = b"--b1\r\nContent-Type: application/dicom\r\n\r\nAAA\r\n--b1\r\n\r\nBB\r\n--b1--\r\n"
    parts = list(iter_related(body, 'multipart/related; type="x"; boundary=b1'))
    assert [bytes(p.data) for p in parts] == [b"AAA", b"BB"]
    assert parts[0].media_type == "application/dicom" and parts[1].media_type == ""


def test_a_body_that_is_not_multipart_is_one_part() -> None:
    (part,) = iter_related(b"raw", "application/dicom")
    assert bytes(part.data) == b"raw" and part.media_type == "application/dicom"


def test_writer_and_streaming_parser_round_trip_in_any_chunking() -> None:
    payloads = [("application/json", b'{"a": 1}'), ("application/dicom", bytes(range(256)) * 40)]
    body, content_type = encode_related(payloads)
    media, boundary = boundary_of(content_type)
    assert media == "multipart/related" and boundary is not None
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    for size in (1, 7, 4096, len(body)):
        collector = PartCollector(boundary)
        got = []
        for i in range(0, len(body), size):
            collector.write(body[i : i + size])
            got += collector.take()
        assert collector.ended
        assert [(p.media_type, bytes(p.data)) for p in got] == payloads


def test_malformed_body_raises_the_parser_error() -> None:
    with pytest.raises(FormParserError):
        list(iter_related(b"--b1\r\nno-colon-header\r\n\r\nx", related_content_type("b1")))


def test_boundary_of_a_content_type_without_one() -> None:
    assert boundary_of("multipart/related") == ("multipart/related", None)
    assert boundary_of(None) == ("", None)
