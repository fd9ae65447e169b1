"""Empty states of the console (issue 22 §5): a fresh node with no study, no destination and
no delivery says what to do next, on a real node over HTTP (loopback, no credentials)."""

from __future__ import annotations

import html
import re

from tests.api.conftest import RunningNode


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_empty_pages_say_what_to_do_next(running: RunningNode) -> None:
    ae = running.node.config.node.ae_title
    studies = running.http.get("/console/studies")
    assert studies.status_code == 200
    assert (
        f"No study received yet: send DICOM to AE {ae} (C-STORE, or STOW-RS to "
        "/dicom-web/studies), e.g. ainode send --to HOST:PORT[:AET] PATH; see docs/operations.md."
    ) in _text(studies.text)
    search = running.http.get("/console/studies", params={"modality": "XA"})
    assert "No study matches: widen the dates, clear a filter" in _text(search.text)
    assert "No study received yet" not in search.text
    destinations = _text(running.http.get("/console/destinations").text)
    assert "No destinations yet: add one under destinations in ainode.yaml" in destinations
    assert "see docs/configuration.md" in destinations
    deliveries = _text(running.http.get("/console/deliveries").text)
    assert "No deliveries. Results and forwarded originals appear here once a rule sends" in (
        deliveries
    )
