"""``ainode rules explain`` shows how a body part maps to its PS3.16 term and SNOMED CT code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from node.samples import write_projection

ROOT = Path(__file__).resolve().parents[2]


def test_explain_shows_the_standard_term_of_an_ankle(tmp_path: Path) -> None:
    image = np.arange(64 * 64, dtype=float).reshape(64, 64)
    write_projection(
        image,
        out_dir=tmp_path / "xr",
        body_part="ANKLE JOINT",
        study_description="XR ANKLE 2 VIEWS",
        series_description="Ankle AP",
    )
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nrules:\n"
        "  - {name: ankle, when: {Modality: DX, body_part: ANKLE}, then: {model: ankle-fx}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "node", "rules", "explain", "--rules", "rules.yaml", "xr"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    [study] = json.loads(result.stdout)["studies"]
    [series] = study["series"]
    body = series["body_part"]
    assert body["value"] == "ANKLE" and body["raw"] == "ANKLE JOINT"
    assert body["standard"]["code"] == ["70258002", "SCT", "Ankle joint"]
    assert "PS3.16 Annex L term ANKLE" in body["how"]
    assert [d["model"] for d in study["decisions"]] == ["ankle-fx"]
