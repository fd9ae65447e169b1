"""A destination down for hours, on a simulated clock: nothing is lost, nothing dead-lettered
early, everything delivered exactly once when the peer (a real dcmtk ``storescp``) returns.

The outbox takes its clock as a parameter and keeps every due time in its table, so hours of
back-off run in milliseconds, and a node restart in the middle of the outage (a new ``Outbox``
on the same index) continues the schedule from the stored timestamps.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from node.config import DeliveryConfig, DimseDestination
from node.delivery import Outbox
from node.types import DeliveryState
from tests.peers.dcmtk import start_storescp
from tests.util import free_port

POLICY = DeliveryConfig()  # the defaults: 30 attempts, 5 s doubling to 600 s, with jitter
SHORT = DeliveryConfig(max_attempts=8, backoff_base_seconds=60, backoff_max_seconds=3600)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _received(folder: Path) -> Counter[str]:
    return Counter(
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in folder.iterdir()
        if p.is_file()
    )


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _min_time_to_dead(policy: DeliveryConfig) -> float:
    """Shortest possible outage before a row is dead: every jittered wait at its lower half."""
    return sum(
        0.5 * min(policy.backoff_max_seconds, policy.backoff_base_seconds * 2 ** max(k - 1, 0))
        for k in range(1, policy.max_attempts)
    )


@pytest.mark.slow
def test_long_outage_on_a_simulated_clock_loses_nothing(tmp_path: Path, corpus: Path) -> None:
    files = sorted((corpus / "ct" / "chest-ct-siemens-sensation10-b40f-30sl").glob("*.dcm"))
    first, second = files[:10], files[10:15]
    port = free_port()
    dest = {"pacs": DimseDestination(host="127.0.0.1", port=port, ae_title="STORESCP")}
    clock = _Clock()
    db = tmp_path / "index.sqlite"

    def outbox() -> Outbox:
        return Outbox(db, dest, clock=clock, policy=POLICY, rng=random.Random(11))

    # 1) two hours down, with a node restart half way: still pending, attempts spaced out
    box = outbox()
    box.enqueue_many(first, destinations=["pacs"], job_id="job-1")
    start = clock.now
    while clock.now < start + 2 * 3600:
        if start + 3600 <= clock.now < start + 3660:
            box.close()
            box = outbox()  # restart: the schedule comes from the stored next_attempt_at
        box.run_once()
        clock.now += 60
    rows = box.list()
    assert {r.state for r in rows} == {DeliveryState.PENDING}
    attempts = [r.attempts for r in rows]
    # retried all along (each row on its own jittered schedule), far from the dead letter
    assert min(attempts) >= 10 and max(attempts) < POLICY.max_attempts, attempts
    # the peer returns: everything is delivered, once
    received = tmp_path / "pacs"
    with start_storescp(received, port=port):
        clock.now += POLICY.backoff_max_seconds
        box.run_once()
        assert box.counts() == {"pacs": {"delivered": len(first)}}
        assert _received(received) == Counter({_sop(f): 1 for f in first})
        box.run_once()  # nothing is sent again
    assert _received(received) == Counter({_sop(f): 1 for f in first})

    # 2) down until the dead letter (a shorter policy, to keep the test quick): each row dies
    # exactly at max_attempts, never earlier; then retried by hand once the peer is back
    box.close()
    box = Outbox(db, dest, clock=clock, policy=SHORT, rng=random.Random(12))
    box.enqueue_many(second, destinations=["pacs"], job_id="job-2")
    start = clock.now
    while clock.now < start + 72 * 3600:
        box.run_once()
        rows = [r for r in box.list() if r.job_id == "job-2"]
        for r in rows:
            expected = (
                DeliveryState.DEAD if r.attempts >= SHORT.max_attempts else DeliveryState.PENDING
            )
            assert r.state is expected, r
        if all(r.state is DeliveryState.DEAD for r in rows):
            break
        clock.now += 60
    assert {r.attempts for r in rows} == {SHORT.max_attempts}
    assert clock.now - start >= _min_time_to_dead(SHORT) > 3600
    with start_storescp(received, port=port):
        assert box.retry_dead(destination="pacs") == len(second)
        box.run_once()
        assert box.counts() == {"pacs": {"delivered": len(first) + len(second)}}
    assert _received(received) == Counter({_sop(f): 1 for f in first + second})
    box.close()
