"""Routing one study (``node.routing.plan_study``): one series lookup for the whole routing, and
the jobs' own fields (creation time, series numbers, model version) set by the planner."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dicom_rules
from node.imaging.dicom_json import header_from_file
from node.routing import SeriesLookup, plan_study, qualify_decisions, series_number_base
from node.types import Instance, Series, Study
from tests.util import stored_instance

RULES = """
version: 1
rules:
  - name: chest
    when: {Modality: CT}
    then:
      - {model: seg, deliver: [pacs]}
      - {model: detect, deliver: [pacs]}
      - {send_to: archive}
"""

CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"


def _stored(files: list[Path]) -> list[Instance]:
    return [stored_instance(p, sha256=p.name) for p in files]


def _study(instances: list[Instance]) -> Study:
    first = instances[0]
    series = Series(
        series_uid=first.series_uid,
        modality=first.modality,
        body_part=None,
        series_description=None,
        instance_count=len(instances),
        header=header_from_file(first.path),
    )
    return Study(study_uid=first.study_uid, series=(series,))


def test_a_routing_looks_each_series_up_once(corpus: Path, tmp_path: Path) -> None:
    instances = _stored(sorted((corpus / CHEST).glob("*.dcm")))
    study = _study(instances)
    asked: Counter[str] = Counter()

    def lookup(series_uid: str) -> list[Instance]:
        asked[series_uid] += 1
        return [i for i in instances if i.series_uid == series_uid]

    rules = dicom_rules.parse(RULES, destinations={"pacs", "archive"})
    series = SeriesLookup(lookup, data_dir=tmp_path)
    planned = plan_study(
        rules,
        study,
        destinations=["pacs", "archive"],
        series=series,
        refusals=dict,
        model_versions=lambda: {"seg": "1.4"},
        can_combine=True,
        combine=False,
        prior_timeout_seconds=60.0,
    )
    uid = study.series[0].series_uid
    # two model decisions and a forward of one series: the split, both jobs' input
    # fingerprints and the forward read one lookup
    assert [j.model for j in planned.jobs] == ["seg", "detect"]
    assert planned.plan.forwards == (("archive", uid),)
    assert [i.sop_uid for i in planned.series(uid)] == [i.sop_uid for i in instances]
    assert asked == {uid: 1}
    assert uid in planned.record["volumes"]
    assert [d["model"] for d in planned.record["decisions"]] == ["seg", "detect", None]
    # a dry run qualifies with a lookup of its own
    dry = qualify_decisions(
        rules,
        study,
        list(planned.decisions),
        series=SeriesLookup(lookup, data_dir=tmp_path),
        refusals=dict,
    )
    assert asked == {uid: 2} and dry["volumes"] == planned.record["volumes"]


def test_the_planner_sets_the_jobs_own_fields(corpus: Path, tmp_path: Path) -> None:
    instances = _stored(sorted((corpus / CHEST).glob("*.dcm")))
    study = _study(instances)
    rules = dicom_rules.parse(RULES, destinations={"pacs", "archive"})
    planned = plan_study(
        rules,
        study,
        destinations=["pacs", "archive"],
        series=SeriesLookup(lambda uid: instances, data_dir=tmp_path),
        refusals=dict,
        model_versions=lambda: {"seg": "1.4"},
        can_combine=True,
        combine=False,
        prior_timeout_seconds=60.0,
    )
    seg, detect = planned.jobs
    assert isinstance(seg.created_at, int) and seg.created_at == detect.created_at
    assert [seg.series_number_base, detect.series_number_base] == [
        series_number_base(0),
        series_number_base(1),
    ]
    assert (seg.model_version, detect.model_version) == ("1.4", None)
    # the fields are not parameters; the stored and sent form carries them as it always did
    assert "_created_at" not in seg.parameters and "_model_version" not in seg.parameters
    stored = seg.stored_parameters()
    assert stored["_created_at"] == seg.created_at
    assert stored["_series_number_base"] == 9000 and stored["_model_version"] == "1.4"
    assert "_model_version" not in detect.stored_parameters()
