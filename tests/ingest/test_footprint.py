"""Memory footprint of the receiving node (issue 3: SCP RSS < 150 MB with 4 associations).

The node process receives; models run in worker processes.  So the serving process must not load
the numerical stack the models need (torch, MONAI, scipy) nor the Celery client the embedded
engine never uses: each of them costs 10-30 MB of resident memory for nothing.  The test sends a
512x512 CT over four parallel ``storescu`` associations and then reads the process's peak RSS
(``VmHWM``) and its mapped shared objects from ``/proc``.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tests.ingest.synthetic import write_ct_series
from tests.peers.dcmtk import StorescuRun, storescu
from tests.peers.node import start_node

#: The issue's limit for the receiving process with four associations.
PEAK_RSS_LIMIT_MIB = 150.0
#: Shared objects whose presence means a heavy package was imported by the serving process.
HEAVY_LIBRARIES = ("/torch/", "/scipy/", "/monai/")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def test_four_associations_stay_under_the_rss_limit(tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "ct", 80, size=512, seed=3)
    quarters = [files[i::4] for i in range(4)]
    with start_node(tmp_path / "node", study={"stable_seconds": 3600}) as node:
        assert node.proc is not None
        runs: list[StorescuRun] = []

        def send(part: list[Path]) -> None:
            runs.append(storescu(node.dicom_port, part))

        threads = [threading.Thread(target=send, args=(q,)) for q in quarters]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(len(r.acknowledged) for r in runs) == sorted(len(q) for q in quarters), [
            r.output[-2000:] for r in runs if r.failed
        ]

        peak = _peak_rss_mib(node.proc.pid)
        maps = Path(f"/proc/{node.proc.pid}/maps").read_text()
        heavy = sorted({lib for lib in HEAVY_LIBRARIES if lib in maps})
        print(f"node peak RSS with 4 associations: {peak:.0f} MiB")
        assert not heavy, f"the serving process loaded {heavy}"
        assert peak < PEAK_RSS_LIMIT_MIB, peak
