"""Benchmark: UPS-RS workitem lifecycles per second on a real ``ainode serve`` (issue 23).

One node process (bearer-token auth, as a RIS would use it).  Figures:

* ``health``    - reference: authenticated ``GET /api/health`` round trips (the HTTP floor);
* ``create``    - ``POST /dicom-web/workitems`` (validation + one fsync'd SQLite commit);
* ``lifecycle`` - create, claim (IN PROGRESS), update (Performed Procedure sequence), complete:
  four requests, three of them state-checked commits;
* ``race``      - ``--performers`` threads claim the same ``--items`` workitems in parallel;
  prints claims per second and checks that each workitem was won exactly once;
* ``search``    - ``GET /dicom-web/workitems?ProcedureStepState=SCHEDULED`` with every
  workitem above stored.

Run:  PYTHONPATH=. python bench/ups.py [--items 200] [--performers 4]
Report ``uptime`` with the figures: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.api.upsdata import PERFORMED, workitem  # noqa: E402
from tests.peers.node import start_node  # noqa: E402

TOKEN = "bench-ups-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/dicom+json"}
ROOT_UID = "1.2.826.0.1.3680043.10.543.2399"


def _state(http: httpx.Client, uid: str, state: str, txn: str) -> httpx.Response:
    body = [{"00741000": {"vr": "CS", "Value": [state]}, "00081195": {"vr": "UI", "Value": [txn]}}]
    return http.put(f"/dicom-web/workitems/{uid}/state", content=json.dumps(body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--performers", type=int, default=4)
    args = parser.parse_args()
    body = json.dumps([workitem()])
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "token").write_text(TOKEN + "\n")
        auth = {"tokens": {"ris": {"token_file": str(tmp / "token"), "role": "operator"}}}
        with (
            start_node(tmp / "node", auth=auth) as node,
            httpx.Client(base_url=node.url, headers=HEADERS, timeout=60) as http,
        ):
            n = args.items
            t0 = time.perf_counter()
            for _ in range(n):
                http.get("/api/health").raise_for_status()
            health = n / (time.perf_counter() - t0)

            t0 = time.perf_counter()
            for i in range(n):
                http.post(
                    "/dicom-web/workitems", params={"workitem": f"{ROOT_UID}.1.{i}"}, content=body
                ).raise_for_status()
            create = n / (time.perf_counter() - t0)

            t0 = time.perf_counter()
            performed = json.dumps([PERFORMED])
            for i in range(n):
                uid, txn = f"{ROOT_UID}.2.{i}", f"{ROOT_UID}.3.{i}"
                http.post(
                    "/dicom-web/workitems", params={"workitem": uid}, content=body
                ).raise_for_status()
                _state(http, uid, "IN PROGRESS", txn).raise_for_status()
                http.post(
                    f"/dicom-web/workitems/{uid}",
                    params={"transaction-uid": txn},
                    content=performed,
                ).raise_for_status()
                _state(http, uid, "COMPLETED", txn).raise_for_status()
            lifecycle = n / (time.perf_counter() - t0)

            wins: dict[str, int] = {}
            lock = threading.Lock()
            barrier = threading.Barrier(args.performers)

            def perform(k: int) -> None:
                with httpx.Client(base_url=node.url, headers=HEADERS, timeout=60) as own:
                    barrier.wait()
                    for i in range(n):
                        uid = f"{ROOT_UID}.1.{i}"
                        if _state(own, uid, "IN PROGRESS", f"{ROOT_UID}.4.{k}").status_code == 200:
                            with lock:
                                wins[uid] = wins.get(uid, 0) + 1

            threads = [threading.Thread(target=perform, args=(k,)) for k in range(args.performers)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            race_s = time.perf_counter() - t0
            claims = n * args.performers / race_s
            once = len(wins) == n and set(wins.values()) == {1}

            t0 = time.perf_counter()
            found = http.get(
                "/dicom-web/workitems", params={"ProcedureStepState": "COMPLETED", "limit": 10000}
            ).json()
            search = time.perf_counter() - t0
    print(f"health    {health:8.1f} requests/s (reference)")
    print(f"create    {create:8.1f} workitems/s   ({create / health:.2f} x health)")
    print(
        f"lifecycle {lifecycle:8.1f} workitems/s   "
        f"(4 requests each; {4 * lifecycle / health:.2f} x health per request)"
    )
    print(
        f"race      {claims:8.1f} claim requests/s with {args.performers} performers on {n} "
        f"workitems; each won exactly once: {once}"
    )
    print(f"search    {search * 1000:8.1f} ms for {len(found)} COMPLETED of {2 * n} workitems")


if __name__ == "__main__":
    main()
