"""`ainode rules explain` says what the live router does with volumes: chosen or not applicable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "rules.example.yaml"


@pytest.mark.slow  # discovers the built-in models (imports torch)
def test_explain_shows_volumes_and_not_applicable(corpus: Path) -> None:
    single = corpus / "ct" / "single-slices" / "SignedCT.dcm"  # "CT THORAX", one slice
    chest = corpus / "ct" / "chest-ct-siemens-sensation10-b40f-30sl"
    result = CliRunner().invoke(
        app, ["rules", "explain", "--rules", str(EXAMPLE), str(single), str(chest)]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert len(out["studies"]) == 2
    qualified = [q for s in out["studies"] for q in s["qualified"]]
    one_slice = [q for q in qualified if q["series_uid"].endswith("499420")]
    assert {q["reason"] for q in one_slice} == {"dimensions"}
    assert all("volume is 2D (1 slice)" in q["detail"] for q in one_slice)
    ct = [q for q in qualified if q["series_uid"].endswith("216610983")]
    assert {q["model"] for q in ct} == {
        "lung-nodule-seg", "lung-nodule-detect", "lung-nodule-classify", "report-text",
    }  # fmt: skip
    assert {q["volume_id"] for q in ct} == {ct[0]["series_uid"]} and not any(
        q["reason"] for q in ct
    )


@pytest.mark.slow  # discovers the built-in models (imports torch)
def test_explain_gives_a_reason_for_an_image_series_no_rule_routes(corpus: Path) -> None:
    """The shipped rules send MR to no model (only the fallback matches it): explain says why,
    from the installed models, as the live router records it."""
    mr = next((corpus / "mr" / "ge-signa-dwi-brain-14").iterdir())
    result = CliRunner().invoke(app, ["rules", "explain", "--rules", str(EXAMPLE), str(mr)])
    assert result.exit_code == 0, result.output
    (study,) = json.loads(result.stdout)["studies"]
    assert study["qualified"] == []
    (na,) = study["not_applicable"]
    assert (na["rule"], na["model"], na["reason"]) == ("no-model-applies", None, "no_model")
    assert na["detail"].startswith("no model accepts modality 'MR' (")
