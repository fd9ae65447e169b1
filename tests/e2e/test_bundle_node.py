"""A zoo bundle in the running node: storescu -> rules -> bundle job (worker) -> SEG in a folder.

The spleen bundle (zoo config, generated weights) is registered under ``models``; a rule routes
CT to it.  The SEG the node delivers decodes onto the source grid to exactly the label map the
same bundle gives in-process, which tests/models/test_bundle_zoo.py shows equals MONAI's own
``monai.bundle run`` (Dice 1.0).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from node.imaging import dicom_files, load_volume
from node.jobs.store import JobStore
from node.models.bundle import load_bundle
from node.types import JobState
from tests.models.bundle_weights import bundle_copy
from tests.models.zoo import CHEST, crop_series, seg_on_grid
from tests.peers.dcmtk import storescu
from tests.peers.node import start_node
from tests.util import wait_until

_RULES = """\
version: 1
rules:
  - name: spleen
    when: {Modality: CT}
    then: {model: spleen_ct_segmentation, deliver: [archive]}
"""
_FINAL = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)


@pytest.mark.slow
def test_spleen_bundle_runs_in_the_node(tmp_path: Path, corpus: Path, run_cache: Path) -> None:
    series = crop_series(corpus / CHEST, tmp_path / "series", size=192)
    bundle = bundle_copy("spleen_ct_segmentation", tmp_path / "models", cache=run_cache)
    rules = tmp_path / "rules.yaml"
    rules.write_text(_RULES, encoding="utf-8")
    archive = tmp_path / "archive"
    files = dicom_files([series])
    with start_node(
        tmp_path / "node",
        study={"stable_seconds": 1},
        rules=str(rules),
        models=[str(bundle)],
        inference={"device": "cpu"},
        destinations={"archive": {"type": "folder", "path": str(archive)}},
    ) as node:
        sent = storescu(node.dicom_port, files)
        assert len(sent.acknowledged) == len(files), sent.output[-2000:]
        store = JobStore(node.data_dir / "index.sqlite")

        def done() -> bool:
            jobs = store.list_jobs()
            return bool(jobs) and all(j.state in _FINAL for j in jobs)

        wait_until(done, timeout=600, what="the bundle job finished")
        [job] = store.list_jobs()
        assert job.state is JobState.SUCCEEDED, job.reason
        wait_until(lambda: bool(sorted(archive.rglob("*.dcm"))), timeout=120, what="SEG delivered")
    [seg_file] = [p for p in sorted(archive.rglob("*.dcm")) if _modality(p) == "SEG"]
    volume = load_volume(files)
    delivered = seg_on_grid(seg_file, volume)
    with warnings.catch_warnings():
        # MONAI's own warnings about the zoo config (deprecated metadata key, Orientationd's
        # changing default); the bundle is run unchanged, so they are expected here
        warnings.filterwarnings("ignore", message="Detected deprecated name", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*Orientationd.*", category=FutureWarning)
        expected = load_bundle(bundle, device=torch.device("cpu")).predict(volume).label_map
    assert expected is not None and int(expected.sum()) > 0
    np.testing.assert_array_equal(delivered, expected)


def _modality(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).Modality)
