"""Which volume a model gets, or why it gets none (headers only, before any job)."""

from __future__ import annotations

from pathlib import Path

import pydicom

import dicom_rules
from dicom_rules import SeriesInput, VolumeSelect
from node.imaging.dicom_json import header_from_file
from node.imaging.split import split_series
from node.models.base import ModelInfo, OutputKind, Task
from node.routing import DEFAULT_RULES
from node.routing.qualify import (
    SeriesQualifier,
    choose_volume,
    ignored_reason,
    ignored_series,
    no_model_reason,
    qualify_study,
    unrouted_series,
)
from node.types import NotApplicable
from tests.imaging.synthetic import constructed_series, write_mr_frames


def _info(**kw: object) -> ModelInfo:
    return ModelInfo(
        name="m",
        version="1",
        task=Task.SEGMENTATION,
        outputs=(OutputKind.LABEL_MAP,),
        **kw,  # type: ignore[arg-type]
    )


def _split(tmp_path: Path, name: str, modality: str = "MR"):  # type: ignore[no-untyped-def]
    return split_series(
        write_mr_frames(tmp_path / name, constructed_series()[name], modality=modality)
    )


def test_mr_never_reaches_a_ct_only_model(tmp_path: Path) -> None:
    split = _split(tmp_path, "plain-stack")
    q = choose_volume(split.volumes, refusal=_info(modalities=("CT",)).refusal)
    assert (q.volume_id, q.reason) == (None, NotApplicable.MODALITY)
    assert "modality 'MR' not in ['CT']" in (q.detail or "")


def test_single_slice_is_not_applicable_to_a_3d_model(corpus: Path) -> None:
    split = split_series([corpus / "ct" / "single-slices" / "CT_small.dcm"])
    q = choose_volume(split.volumes, refusal=_info(modalities=("CT",), dims=(3,)).refusal)
    assert q.reason is NotApplicable.DIMENSIONS


def test_survey_is_a_localizer_even_without_image_type(tmp_path: Path) -> None:
    split = _split(tmp_path, "three-plane-survey")
    q = choose_volume(split.volumes, refusal=_info(dims=(3, 2)).refusal)
    assert q.reason is NotApplicable.LOCALIZER


def test_select_echo_and_default_order(tmp_path: Path) -> None:
    split = _split(tmp_path, "multi-echo")
    refusal = _info(modalities=("MR",)).refusal
    assert choose_volume(split.volumes, refusal=refusal).volume_id.endswith("/echo=1")  # type: ignore[union-attr]
    q = choose_volume(split.volumes, select=VolumeSelect(echo=2), refusal=refusal)
    assert q.volume_id is not None and q.volume_id.endswith("/echo=2")
    none = choose_volume(split.volumes, select=VolumeSelect(orientation=("SAGITTAL",)))
    assert none.reason is NotApplicable.NO_VOLUME


def test_missing_slices_and_min_slices(tmp_path: Path) -> None:
    gap = _split(tmp_path, "missing-slices")
    q = choose_volume(gap.volumes, refusal=_info().refusal)
    assert q.reason is NotApplicable.GEOMETRY and "missing slices" in (q.detail or "")
    small = _split(tmp_path, "time-series")  # 5 slices per volume
    q = choose_volume(small.volumes, refusal=_info(min_slices=8).refusal)
    assert q.reason is NotApplicable.SLICES


def test_undecodable_instance_named_unless_partial_allowed(tmp_path: Path, corpus: Path) -> None:
    split = _split(tmp_path, "plain-stack")
    dropped = [("1.2.3.4", "Pixel Data holds 10 bytes where the header needs 512")]
    refusal = _info().refusal
    q = choose_volume(split.volumes, dropped=dropped, refusal=refusal)
    assert q.reason is NotApplicable.UNDECODABLE and "instance 1.2.3.4" in (q.detail or "")
    q = choose_volume(
        split.volumes, dropped=dropped, select=VolumeSelect(partial=True), refusal=refusal
    )
    assert q.volume_id is not None and q.dropped == (f"1.2.3.4: {dropped[0][1]}",)


def _study(groups: dict[str, list[Path]]) -> list[SeriesInput]:
    return [
        SeriesInput(series_uid=uid, header=header_from_file(files[0]), instance_count=len(files))
        for uid, files in groups.items()
    ]


def _by_series(paths: list[Path]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for p in paths:
        out.setdefault(
            str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID), []
        ).append(p)
    return out


def test_an_image_series_no_rule_routes_carries_a_reason(tmp_path: Path, corpus: Path) -> None:
    """The shipped rules send MR and PET to no model: each gets "no_model" (no installed model
    reads the modality) or "no_rule" (one could), never a silent fallback; SR and a routed CT
    get no such record."""
    mr = write_mr_frames(tmp_path / "mr", constructed_series()["plain-stack"])
    pet = [corpus / "other-modalities" / "pt" / "GH184.dcm"]
    sr = [corpus / "other-modalities" / "sr-text" / "test-SR.dcm"]
    ct = [corpus / "ct" / "single-slices" / "CT_small.dcm"]
    files = _by_series(mr + pet + sr + ct)
    rules = dicom_rules.load(DEFAULT_RULES)
    series = _study(files)
    decisions = dicom_rules.route(rules, series, destinations=["pacs"])
    mr_uid, pet_uid, sr_uid, ct_uid = (_by_series(f).popitem()[0] for f in (mr, pet, sr, ct))
    unrouted = unrouted_series(rules, decisions, list(files))
    assert sorted(unrouted) == sorted([("no-model-applies", mr_uid), ("no-model-applies", pet_uid)])

    ct_only = {"ct-model": _info(modalities=("CT",)).refusal}
    qualifier = SeriesQualifier(paths=lambda uid: files[uid], refusals=ct_only)
    out = qualify_study(
        rules=rules, decisions=decisions, series_uids=list(files), qualifier=qualifier
    )
    na = {n["series_uid"]: n for n in out["not_applicable"]}
    assert set(na) == {mr_uid, pet_uid}  # the CT went to ct-denoise, unknown here: no verdict
    assert na[mr_uid]["model"] is None and na[mr_uid]["rule"] == "no-model-applies"
    assert na[mr_uid]["reason"] == "no_model"
    assert na[mr_uid]["detail"] == "no model accepts modality 'MR' (1 model(s) installed)"
    assert na[pet_uid]["detail"].startswith("no model accepts modality 'PT'")
    assert sr_uid not in na and ct_uid not in na

    # an installed model could read the MR: the rules are what is missing
    mr_reader = {**ct_only, "mr-model": _info(modalities=("MR",)).refusal}
    q = SeriesQualifier(paths=lambda uid: files[uid], refusals=mr_reader).unrouted(mr_uid)
    assert q is not None and q.reason is NotApplicable.NO_RULE
    assert q.detail == "no rule routes this series to a model (mr-model could read it)"
    # the models could not be discovered: what is known is the rules
    q = SeriesQualifier(paths=lambda uid: files[uid], refusals={}).unrouted(mr_uid)
    assert q is not None and (q.reason, q.detail) == (
        NotApplicable.NO_RULE,
        "no rule routes this series to a model",
    )
    # a series with no image gets no record (the SR is ignored on purpose anyway)
    assert SeriesQualifier(paths=lambda uid: files[uid], refusals=ct_only).unrouted(sr_uid) is None


def test_no_model_names_the_refusal_when_the_modality_fits(tmp_path: Path) -> None:
    split = _split(tmp_path, "plain-stack")
    q = no_model_reason(split.volumes, {"mr-3d": _info(modalities=("MR",), min_slices=99).refusal})
    assert q.reason is NotApplicable.NO_MODEL
    assert q.detail is not None and q.detail.startswith(
        "no installed model can read this series (mr-3d: slices:"
    )


def test_a_series_without_any_rule_is_unrouted_with_no_rule_name(tmp_path: Path) -> None:
    rules = dicom_rules.parse(
        "version: 1\nrules:\n  - name: ct\n    when: {Modality: {equals: CT}}\n"
        "    then: {model: m}\n",
        models={"m"},
    )
    files = _by_series(write_mr_frames(tmp_path / "mr", constructed_series()["plain-stack"]))
    decisions = dicom_rules.route(rules, _study(files), destinations=["pacs"])
    assert unrouted_series(rules, decisions, list(files)) == [(None, next(iter(files)))]


def test_an_image_series_a_named_rule_ignores_says_why(tmp_path: Path) -> None:
    """A localizer or survey a rule ignores is "not applicable: localizer", another image series
    a named rule ignores is "not applicable: ignored"; both name the rule.  A series some rule
    sends to a model is not "ignored", nor one only the fallback matched."""
    survey = _split(tmp_path, "three-plane-survey")
    assert survey.volumes and all(v.is_localizer for v in survey.volumes)
    q = ignored_reason(survey.volumes, "ignore-localizers")
    assert q.reason is NotApplicable.LOCALIZER and q.volume_id is None
    assert (q.detail or "").endswith(": rule ignore-localizers ignores them")
    plain = _split(tmp_path, "plain-stack")
    q = ignored_reason(plain.volumes, "ignore-mr")
    assert (q.reason, q.detail) == (
        NotApplicable.IGNORED,
        "rule ignore-mr ignores this series on purpose",
    )

    rules = dicom_rules.parse(
        "version: 1\nrules:\n"
        "  - {name: ignore-mr, when: {Modality: MR}, then: ignore}\n"
        "  - {name: seg-ct, when: {Modality: CT}, then: {model: m}}\n"
        "  - {name: rest, type: fallback, then: ignore}\n"
    )
    mr = write_mr_frames(tmp_path / "mr", constructed_series()["plain-stack"])
    ct = write_mr_frames(tmp_path / "ct", constructed_series()["plain-stack"], modality="CT")
    files = _by_series(mr + ct)
    decisions = dicom_rules.route(rules, _study(files))
    mr_uid, ct_uid = (_by_series(f).popitem()[0] for f in (mr, ct))
    assert ignored_series(rules, decisions, list(files)) == [("ignore-mr", mr_uid)]
    qualifier = SeriesQualifier(paths=lambda uid: files[uid], refusals={})
    records = qualifier.unrouted_records(rules, decisions, list(files))
    assert records == [
        ("ignore-mr", None, mr_uid, "ignored", "rule ignore-mr ignores this series on purpose")
    ]
