"""deploy/rules.example.yaml on the real-DICOM corpus: expected decisions, and no crash ever."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

import dicom_rules
from dicom_rules import SeriesInput, Status
from node.cli.rules import collect_studies
from node.imaging.dicom_json import header_from_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "rules.example.yaml"
LUNG = ("lung-nodule-seg", "lung-nodule-detect", "lung-nodule-classify", "report-text")
IGNORED = "ignore-non-images"
FALLBACK = "no-model-applies"


_HEADERS: dict[Path, Any] = {}


def cached_header(path: Path) -> dict[str, Any]:
    """header_from_file, read once per test session (pydicom's JSON conversion is slow)."""
    if path not in _HEADERS:
        try:
            _HEADERS[path] = header_from_file(path)
        except Exception as exc:  # remembered and re-raised: unreadable stays unreadable
            _HEADERS[path] = exc
    got = _HEADERS[path]
    if isinstance(got, Exception):
        raise got
    return got  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def rules() -> dicom_rules.RuleSet:
    return dicom_rules.load(EXAMPLE)


def _route(rules: dicom_rules.RuleSet, target: Path) -> tuple[list[dicom_rules.RouteDecision], int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the malformed files on purpose
        studies, unreadable = collect_studies([target], read=cached_header)
    assert not unreadable, unreadable
    assert len(studies) == 1
    (series,) = studies.values()
    assert len(series) == 1
    return dicom_rules.route(rules, series), series[0].instance_count


# (path in corpus, rule that must decide, models it must run, body part)
TABLE = [
    ("ct/chest-ct-siemens-sensation10-b40f-30sl", "chest-ct-lung-nodules", LUNG, "CHEST"),
    ("ct/single-slices/SignedCT.dcm", "chest-ct-lung-nodules", LUNG, "CHEST"),
    ("transfer-syntax/ge-ct-slice-15-syntaxes/CTImage.dcm", "chest-ct-lung-nodules", LUNG, "CHEST"),
    ("ct/single-slices/Issue141.dcm", "ct-enhance", ("ct-denoise",), "HEAD"),
    ("ct/abdomen-liver-ct-ge-lightspeed-3sl", "ct-enhance", ("ct-denoise",), None),
    ("ct/single-slices/CT_small.dcm", "ct-enhance", ("ct-denoise",), None),
    ("enhanced/enhanced-ct-2frame", "ct-enhance", ("ct-denoise",), "BRAIN"),
    # MR goes to no shipped model (ct-denoise reads CT only, issue 24)
    ("enhanced/siemens-xa10-enhanced-mr", FALLBACK, (), "BRAIN"),
    ("mr/ge-signa-dwi-brain-14", FALLBACK, (), "BRAIN"),
    ("mr/single-slices/2022-03-08-RicSmi.dcm", FALLBACK, (), "LSPINE"),
    ("other-modalities/dx/dx_image.dcm", "chest-radiograph", ("cxr-classify",), "CHEST"),
    ("other-modalities/pt/GH184.dcm", FALLBACK, (), "WHOLEBODY"),
    ("other-modalities/pt/2020-11-16-SalimKanounAnonymization.dcm", FALLBACK, (), None),
    ("other-modalities/us/US1_J2KR.dcm", FALLBACK, (), None),
    ("other-modalities/xa/HasFragmentSequence.dcm", FALLBACK, (), None),
    ("other-modalities/xa/XA1_JPLY.dcm", IGNORED, (), None),  # Secondary Capture SOP class
    ("other-modalities/nm/NM1_JLSL.dcm", IGNORED, (), "WHOLEBODY"),  # Secondary Capture too
    ("other-modalities/sc/SC_rgb.dcm", IGNORED, (), None),
    ("other-modalities/encapsulated-pdf/sample-pdf.dcm", IGNORED, (), None),
    ("other-modalities/rt/rtstruct.dcm", IGNORED, (), None),
    ("other-modalities/rt/rtplan.dcm", IGNORED, (), None),
    ("other-modalities/rt/rtdose.dcm", IGNORED, (), None),
    ("other-modalities/sr-text/test-SR.dcm", IGNORED, (), None),
    ("other-modalities/sr-dose/CT-RDSR-GEPixelMed.dcm", IGNORED, (), None),
    ("other-modalities/sr-dose/CT-RDSR-Siemens_Flash-TAP-SS.dcm", IGNORED, (), "CHEST"),
    ("reference-results/dcmqi-liver-seg/liver.dcm", IGNORED, (), "ABDOMEN"),
    ("reference-results/dcmqi-tid1500-sr-example/sr.dcm", IGNORED, (), "CHEST"),
    ("reference-results/dcmqi-tid1500-sr-example/seg.dcm", IGNORED, (), "HEADNECK"),
    ("reference-results/dcmqi-tid1500-sr-example/rwvm.dcm", IGNORED, (), "HEADNECK"),
    ("reference-results/highdicom/seg_image_ct_binary.dcm", IGNORED, (), "HEAD"),
    ("reference-results/highdicom/sr_document.dcm", IGNORED, (), None),
    ("reference-results/parametric-map/parametric_map_float.dcm", IGNORED, (), None),
    ("malformed/no-pixel-data.dcm", IGNORED, (), None),  # an SR
    ("malformed/badVR.dcm", IGNORED, (), None),  # RTDOSE with a bad value
    ("malformed/UnknownSopClassUid.dcm", FALLBACK, (), None),
    ("malformed/MR_truncated.dcm", FALLBACK, (), None),  # DERIVED\SECONDARY MR
]


@pytest.mark.parametrize(("rel", "rule", "models", "body_part"), TABLE, ids=[t[0] for t in TABLE])
def test_expected_decision(
    rules: dicom_rules.RuleSet,
    corpus: Path,
    rel: str,
    rule: str,
    models: tuple[str, ...],
    body_part: str | None,
) -> None:
    decisions, _ = _route(rules, corpus / rel)
    assert {d.rule for d in decisions} == {rule}
    assert tuple(d.model for d in decisions if d.model) == models
    assert all(d.ignored for d in decisions) is (not models)
    expl = decisions[0].explanation
    assert expl is not None
    (series,) = expl.series
    assert series.body_part.value == body_part
    assert series.verdict(rule).status is Status.MATCHED


def test_chest_ct_series_is_selected_whole(rules: dicom_rules.RuleSet, corpus: Path) -> None:
    decisions, count = _route(rules, corpus / "ct/chest-ct-siemens-sensation10-b40f-30sl")
    assert count == 30
    assert {d.series_uids for d in decisions} == {
        ("1.3.6.1.4.1.14519.5.2.1.6655.2359.207154000096236603057216610983",)
    }
    assert all(d.deliver_source == dicom_rules.DeliverSource.CONFIG for d in decisions)


def test_head_ct_never_reaches_chest_models(rules: dicom_rules.RuleSet, corpus: Path) -> None:
    decisions, _ = _route(rules, corpus / "ct/single-slices/Issue141.dcm")
    assert not {d.model for d in decisions} & set(LUNG) - {None}
    expl = decisions[0].explanation
    assert expl is not None
    reason = expl.series[0].verdict("chest-ct-lung-nodules").reason
    assert reason == ("body_part in ['CHEST', 'CHESTABDOMEN', 'CHESTABDPELVIS']: seen 'HEAD'")


def _all_files(corpus: Path) -> list[Path]:
    return sorted(
        p for p in corpus.rglob("*") if p.is_file() and p.suffix not in (".md", ".csv", ".txt")
    )


def test_every_readable_corpus_header_routes(rules: dicom_rules.RuleSet, corpus: Path) -> None:
    routed = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in _all_files(corpus):
            try:
                header = cached_header(path)
            except Exception:  # unreadable files are the ingest stage's business
                continue
            expl = dicom_rules.explain(rules, [SeriesInput(path.name, header, 1)])
            (series,) = expl.series
            assert len(series.verdicts) == len(rules.rules)
            assert all(v.reason for v in series.verdicts)
            # every series ends up somewhere: a model, an ignore, or the fallback
            assert expl.decisions, path
            routed += 1
    assert routed >= 100


def test_whole_corpus_grouped_by_study_routes(rules: dicom_rules.RuleSet, corpus: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        studies, _ = collect_studies([corpus], read=cached_header)
    assert len(studies) >= 20
    for series in studies.values():
        decisions = dicom_rules.route(rules, series)
        uids = {s.series_uid for s in series}
        assert uids == {u for d in decisions for u in d.series_uids} | {
            s.series_uid
            for s in series
            if decisions
            and decisions[0].explanation is not None
            and decisions[0].explanation.for_series(s.series_uid).outcome.startswith("no rule")
        }
        for d in decisions:
            if d.model in LUNG:
                assert d.rule == "chest-ct-lung-nodules"
