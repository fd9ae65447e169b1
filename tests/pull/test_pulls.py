"""The node's background pull runner (node.ingest.pulls) with a real spool and real peers."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import DicomwebSource, DimseSource
from node.errors import AinodeError, NotFoundError
from node.ingest.pull import PullQuery
from node.ingest.pulls import PullRunner, PullState
from tests.pull.conftest import Archive, check_equal
from tests.pull.sink import spool_in, stored_study
from tests.util import free_port, wait_until


def test_unreachable_source_fails_with_the_reason_and_unknown_names_are_refused(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens here
    sources = {"gone": DimseSource(host="127.0.0.1", port=port, method="c-get")}
    with spool_in(tmp_path / "data") as spool:
        runner = PullRunner(sources, sink=spool, node_ae_title="AINODE", timeout_seconds=5)
        with pytest.raises(NotFoundError, match="unknown source 'nope'; configured: gone"):
            runner.submit("nope", PullQuery(study_uid="1.2.3"))
        with pytest.raises(ValueError, match="study UID"):
            runner.submit("gone", PullQuery(modality="CT"))
        rec = runner.submit("gone", PullQuery(study_uid="1.2.3"))
        wait_until(lambda: runner.get(rec.id).is_finished, timeout=60, what="pull finished")
        done = runner.get(rec.id)
        assert done.state is PullState.FAILED
        assert f"127.0.0.1:{port}" in done.errors[0] and "refused" in done.errors[0]
        with pytest.raises(NotFoundError, match="no pull with id"):
            runner.get("missing")
        runner.stop()
        with pytest.raises(AinodeError, match="stopping"):
            runner.submit("gone", PullQuery(study_uid="1.2.3"))


def test_wado_pull_in_the_background_reports_progress_and_completes(
    tmp_path: Path, archive: Archive
) -> None:
    pulled: list[str] = []

    def study_pulled(study_uid: str) -> bool:
        pulled.append(study_uid)
        return True

    sources = {"web": DicomwebSource(type="dicomweb", url=archive.orthanc.dicomweb_url)}
    with spool_in(tmp_path / "data") as spool:
        runner = PullRunner(
            sources,
            sink=spool,
            node_ae_title="AINODE",
            on_study_pulled=study_pulled,
        )
        rec = runner.submit("web", PullQuery(study_uid=archive.study_uid))
        wait_until(lambda: runner.get(rec.id).is_finished, timeout=120, what="pull finished")
        done = runner.get(rec.id)
        runner.stop()
    assert done.state is PullState.SUCCEEDED, done.errors
    assert (done.done, done.total) == (30, 30)
    assert done.received == done.expected == 30 and done.completed == [archive.study_uid]
    assert pulled == [archive.study_uid]
    assert [r.id for r in runner.records()] == [rec.id]
    check_equal(stored_study(tmp_path / "data", archive.study_uid), archive.stored, exact=True)
