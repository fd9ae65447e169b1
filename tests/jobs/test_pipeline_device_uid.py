"""The job pipeline stamps every prediction with the model's Device UID."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import node.jobs.pipeline as pipeline
from node.imaging import dicom_files
from node.models.identity import identify
from node.types import Job
from tests.models.builders import write_body_model

CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"


@pytest.mark.slow  # one TorchScript run over a 30-slice CT: ~5 s on CI
def test_run_series_writes_the_device_uid(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "_REGISTRY", None)  # this test's models, not a cached registry
    sidecar = write_body_model(tmp_path / "models", roi="[32, 256, 256]")
    job = Job("job-1", "1.2.3", ("1.2.3.4",), "tiny-body", "ct-body")
    context = {"model_paths": [str(tmp_path / "models")], "device": "cpu", "torch_threads": 2}
    out = pipeline.run_series(
        job,
        dicom_files([corpus / CHEST]),
        context=context,
        out_dir=tmp_path / "out",
        relative_to=tmp_path,
    )
    expected = identify(
        name="tiny-body", version="1.2", source="torchscript", location=str(sidecar)
    ).device_uid
    assert out["summary"]["device_uid"] == expected
    written = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert written["device_uid"] == expected
