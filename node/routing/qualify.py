"""Which volume of a series a routed model gets, or why it gets none ("not applicable").

Runs on headers only, before any job exists: the volumes come from
``node.imaging.split.split_series`` (wired by ``node/app.py`` and ``ainode rules explain``, so the
live router and the explanation agree), the model's requirements from its ``ModelInfo.refusal``.

Order of choice: the rule's ``select.volume`` filters (orientation, echo, uniform) and orders
(``prefer``); then non-localizer before localizer, loadable before problematic, axial before other
planes, more slices, thinner slices, and the split's own order.  The first candidate the model
accepts wins; when it accepts none, the reason is the best candidate's refusal.

An image series that no rule sends to a model (only a ``fallback`` rule that ignores, or no rule
at all, matched it) is "not applicable" too, with ``no_rule`` (an installed model could read it:
the rules do not send it there) or ``no_model`` (no installed model can read it, e.g. none
accepts its modality).  An image series an explicit (``route``) rule ignores on purpose is
"not applicable" with ``localizer`` (every volume is a localizer or survey) or ``ignored``, and
names that rule; a series with no image in it (SR, SEG...) gets no record.  ``qualify_study``
is the one code path of ``ainode rules explain`` and the console's dry run; the live router
records the same through ``plan_jobs`` plus ``SeriesQualifier.unrouted_records``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_rules import RuleKind, RuleSet, VolumeSelect
from node.types import NotApplicable, SeriesVolume

__all__ = [
    "Qualified",
    "Refusal",
    "SeriesQualifier",
    "choose_volume",
    "ignored_series",
    "no_model_reason",
    "qualify_study",
    "unrouted_series",
]

log = logging.getLogger(__name__)

#: A model's check of one volume: None when it can read it, else (reason, sentence).
Refusal = Callable[[SeriesVolume], "tuple[NotApplicable, str] | None"]


@dataclass(frozen=True, slots=True)
class Qualified:
    """The outcome for one (rule, model, series): a volume, or a not-applicable reason."""

    volume_id: str | None
    reason: NotApplicable | None = None
    detail: str | None = None
    dropped: tuple[str, ...] = ()  # instances left out (``partial: allow``), "SOP: reason"

    def to_json(self) -> dict[str, Any]:
        """As recorded with the study's routing."""
        return {
            "volume_id": self.volume_id,
            "reason": None if self.reason is None else self.reason.value,
            "detail": self.detail,
            "dropped": list(self.dropped),
        }


def _prefer_key(name: str, v: SeriesVolume) -> float:
    thick = v.slice_spacing or v.slice_thickness or 0.0
    echo = float(v.echo_number or 0)
    b = float(v.b_value or 0.0)
    return {
        "thinnest": thick,
        "thickest": -thick,
        "most_slices": -float(v.slices),
        "fewest_slices": float(v.slices),
        "lowest_echo": echo,
        "highest_echo": -echo,
        "lowest_b": b,
        "highest_b": -b,
        "first": 0.0,
        "last": 0.0,
    }.get(name, 0.0)


def _ranked(volumes: Sequence[SeriesVolume], select: VolumeSelect | None) -> list[SeriesVolume]:
    prefer = select.prefer if select is not None else ()
    indexed = list(enumerate(volumes))
    if "last" in prefer and prefer.index("last") == 0:
        indexed = [(len(volumes) - 1 - i, v) for i, v in indexed]

    def key(item: tuple[int, SeriesVolume]) -> tuple[Any, ...]:
        i, v = item
        return (
            *(_prefer_key(p, v) for p in prefer),
            v.is_localizer,
            v.problem is not None,
            v.orientation != "AXIAL",
            -v.slices,
            v.slice_spacing or v.slice_thickness or 0.0,
            i,
        )

    return [v for _, v in sorted(indexed, key=key)]


def choose_volume(
    volumes: Sequence[SeriesVolume],
    *,
    dropped: Sequence[tuple[str, str]] = (),
    select: VolumeSelect | None = None,
    refusal: Refusal | None = None,
) -> Qualified:
    """Choose the volume a model runs on, or say why none qualifies.

    Parameters
    ----------
    volumes:
        The volumes of the series (``SeriesSplit.volumes``).
    dropped:
        (SOP Instance UID or file, reason) of instances in no volume (undecodable...).
    select:
        The rule's ``select.volume`` (None: default order).
    refusal:
        The model's check (``ModelInfo.refusal``); None when the model is unknown here (the job
        then reports it).
    """
    names = tuple(f"{sop}: {reason}" for sop, reason in dropped)
    if dropped and not (select is not None and select.partial and volumes):
        sop, reason = dropped[0]
        more = f" (and {len(dropped) - 1} more)" if len(dropped) > 1 else ""
        if not volumes:
            return Qualified(None, NotApplicable.UNDECODABLE, f"instance {sop}: {reason}{more}")
        return Qualified(
            None,
            NotApplicable.UNDECODABLE,
            f"instance {sop}: {reason}{more}; the rule does not allow partial series "
            "(select.volume.partial: allow)",
        )
    if not volumes:
        return Qualified(None, NotApplicable.NO_IMAGE, "no image in the series")
    candidates = list(volumes)
    if select is not None:
        if select.orientation:
            candidates = [v for v in candidates if v.orientation in select.orientation]
        if select.echo is not None:
            candidates = [v for v in candidates if (v.echo_number or 1) == select.echo]
        if select.uniform:
            candidates = [v for v in candidates if v.is_uniform]
        if not candidates:
            found = ", ".join(sorted({v.orientation for v in volumes}))
            return Qualified(
                None,
                NotApplicable.NO_VOLUME,
                f"select.volume chose none of {len(volumes)} volume(s) ({found})",
            )
    ranked = _ranked(candidates, select)
    if refusal is None:
        return Qualified(ranked[0].volume_id, dropped=names)
    first: tuple[NotApplicable, str] | None = None
    for v in ranked:
        why = refusal(v)
        if why is None:
            return Qualified(v.volume_id, dropped=names)
        first = first or why
    assert first is not None
    reason, detail = first
    if len(ranked) > 1:
        detail = f"{detail} (best of {len(ranked)} volumes)"
    return Qualified(None, reason, detail)


def no_model_reason(volumes: Sequence[SeriesVolume], refusals: Mapping[str, Refusal]) -> Qualified:
    """Why an image series that no rule sends to a model runs none: ``no_rule`` or ``no_model``.

    Parameters
    ----------
    volumes:
        The series' volumes (``SeriesSplit.volumes``; empty when every instance was dropped).
    refusals:
        Every installed model's check (``ModelInfo.refusal``); empty when the models could not
        be discovered (the reason is then ``no_rule``: the rules are what is known).
    """
    rule_sentence = "no rule routes this series to a model"
    if not refusals or not volumes:
        return Qualified(None, NotApplicable.NO_RULE, rule_sentence)
    readers: list[str] = []
    refused: list[tuple[str, NotApplicable, str]] = []
    for name in sorted(refusals):
        whys = [refusals[name](v) for v in volumes]
        if any(w is None for w in whys):
            readers.append(name)
            continue
        reason, detail = next(w for w in whys if w is not None)
        refused.append((name, reason, detail))
    if readers:
        return Qualified(
            None, NotApplicable.NO_RULE, f"{rule_sentence} ({', '.join(readers)} could read it)"
        )
    if all(reason is NotApplicable.MODALITY for _, reason, _ in refused):
        modalities = ", ".join(sorted({repr(v.modality) for v in volumes}))
        return Qualified(
            None,
            NotApplicable.NO_MODEL,
            f"no model accepts modality {modalities} ({len(refused)} model(s) installed)",
        )
    name, reason, detail = next(r for r in refused if r[1] is not NotApplicable.MODALITY)
    return Qualified(
        None,
        NotApplicable.NO_MODEL,
        f"no installed model can read this series ({name}: {reason}: {detail})",
    )


def unrouted_series(
    rules: RuleSet, decisions: Sequence[Any], series_uids: Sequence[str]
) -> list[tuple[str | None, str]]:
    """The series of a study that no rule sends to a model, forwards or ignores on purpose.

    Parameters
    ----------
    rules:
        The rule set that made ``decisions`` (to tell ``fallback`` rules from ``route`` rules).
    decisions:
        ``RouteDecision``s of the study.
    series_uids:
        Every series of the study.

    Returns
    -------
    list[tuple[str | None, str]]
        (the fallback rule that ignored it, or None when no rule matched it; series UID).
    """
    fallback = {r.name for r in rules.rules if r.kind is RuleKind.FALLBACK}
    purposeful: set[str] = set()
    by_fallback: dict[str, str] = {}
    for d in decisions:
        for uid in d.series_uids:
            if d.ignored and d.rule in fallback:
                by_fallback.setdefault(uid, d.rule)
            else:
                purposeful.add(uid)
    return [(by_fallback.get(uid), uid) for uid in series_uids if uid not in purposeful]


def ignored_series(
    rules: RuleSet, decisions: Sequence[Any], series_uids: Sequence[str]
) -> list[tuple[str, str]]:
    """The series of a study that named (``route``) rules only ignore: (the first such rule,
    series UID).  A series some rule sends to a model or forwards is not among them, nor one
    only a ``fallback`` rule matched (``unrouted_series``)."""
    fallback = {r.name for r in rules.rules if r.kind is RuleKind.FALLBACK}
    first: dict[str, str] = {}
    acted: set[str] = set()
    for d in decisions:
        for uid in d.series_uids:
            if not d.ignored:
                acted.add(uid)
            elif d.rule not in fallback:
                first.setdefault(uid, d.rule)
    return [(first[uid], uid) for uid in series_uids if uid in first and uid not in acted]


def ignored_reason(volumes: Sequence[SeriesVolume], rule: str) -> Qualified:
    """Why an image series a named rule ignores runs no model: ``localizer`` or ``ignored``."""
    if volumes and all(v.is_localizer for v in volumes):
        why = next((v.localizer_reason for v in volumes if v.localizer_reason), None)
        return Qualified(
            None,
            NotApplicable.LOCALIZER,
            f"localizer or survey images{f' ({why})' if why else ''}: rule {rule} ignores them",
        )
    return Qualified(None, NotApplicable.IGNORED, f"rule {rule} ignores this series on purpose")


class SeriesQualifier:
    """Splits each routed series once (headers only) and qualifies decisions against it.

    Shared by the live router (``node/app.py``) and ``ainode rules explain``, so both say the
    same.  ``split`` is ``node.imaging.split.split_series`` (passed in: routing does not import
    the imaging stage).
    """

    def __init__(
        self,
        *,
        paths: Callable[[str], Sequence[Path]],
        refusals: Mapping[str, Refusal],
        split: Callable[[Sequence[Path]], Any] | None = None,
    ) -> None:
        if split is None:
            from node.imaging.split import split_series

            split = split_series
        self._paths = paths
        self._refusals = refusals
        self._split = split
        self._splits: dict[str, Any] = {}

    def split(self, series_uid: str) -> Any:
        """The ``SeriesSplit`` of a series (read once)."""
        if series_uid not in self._splits:
            self._splits[series_uid] = self._split(list(self._paths(series_uid)))
        return self._splits[series_uid]

    def choose(self, decision: Any, series_uid: str) -> Qualified | None:
        """The volume ``decision.model`` gets on ``series_uid``, or why none (None: the series
        could not be split; the job then loads the whole series as before)."""
        try:
            split = self.split(series_uid)
        except Exception:  # noqa: BLE001 - a bug here must not stop the study's routing
            log.exception("routing.split_failed", extra={"series_uid": series_uid})
            return None
        return choose_volume(
            split.volumes,
            dropped=[(d.sop_uid, d.reason) for d in split.dropped],
            select=getattr(decision, "volume", None),
            refusal=self._refusals.get(decision.model) if self._refusals else None,
        )

    def _image_volumes(self, series_uid: str) -> Sequence[SeriesVolume] | None:
        """The series' volumes; None when it holds no image (nothing to explain) or could not be
        split."""
        try:
            split = self.split(series_uid)
        except Exception:  # noqa: BLE001 - a bug here must not stop the study's routing
            log.exception("routing.split_failed", extra={"series_uid": series_uid})
            return None
        if not split.volumes and not split.dropped:
            return None
        volumes: Sequence[SeriesVolume] = split.volumes
        return volumes

    def unrouted(self, series_uid: str) -> Qualified | None:
        """Why a series no rule sends to a model runs none (``no_model_reason``); None when it
        holds no image (nothing to explain) or could not be split."""
        volumes = self._image_volumes(series_uid)
        return None if volumes is None else no_model_reason(volumes, self._refusals)

    def ignored(self, series_uid: str, rule: str) -> Qualified | None:
        """Why a series a named rule ignores runs no model (``ignored_reason``); None when it
        holds no image (nothing to explain) or could not be split."""
        volumes = self._image_volumes(series_uid)
        return None if volumes is None else ignored_reason(volumes, rule)

    def unrouted_records(
        self, rules: RuleSet, decisions: Sequence[Any], series_uids: Sequence[str]
    ) -> list[tuple[str | None, None, str, str, str]]:
        """(rule, model None, series UID, reason, detail) of the study's image series that no
        rule sends to a model, or that a named rule ignores (the live router adds these to
        ``Plan.not_applicable``)."""
        out: list[tuple[str | None, None, str, str, str]] = []
        for rule, uid in unrouted_series(rules, decisions, series_uids):
            q = self.unrouted(uid)
            if q is not None and q.reason is not None:
                out.append((rule, None, uid, q.reason.value, q.detail or ""))
        for named, uid in ignored_series(rules, decisions, series_uids):
            q = self.ignored(uid, named)
            if q is not None and q.reason is not None:
                out.append((named, None, uid, q.reason.value, q.detail or ""))
        return out

    def volumes_json(self) -> dict[str, Any]:
        """Every split series: its volumes and dropped instances (for the routing record)."""
        return {
            uid: {
                "volumes": [v.to_json() for v in split.volumes],
                "dropped": [{"instance": d.sop_uid, "reason": d.reason} for d in split.dropped],
                "not_images": [d.sop_uid for d in split.not_images],
            }
            for uid, split in self._splits.items()
        }


def qualify_study(
    *,
    rules: RuleSet,
    decisions: Sequence[Any],
    series_uids: Sequence[str],
    qualifier: SeriesQualifier,
) -> dict[str, Any]:
    """What the live router decides after the rules, without queueing anything: the volume each
    model decision gets, the not-applicable records (model decisions and unrouted image series)
    and every split series' volumes.  ``ainode rules explain`` and the console's dry run print it.

    Parameters
    ----------
    rules:
        The rule set that made ``decisions``.
    decisions:
        ``RouteDecision``s of the study (``Explanation.decisions``).
    series_uids:
        Every series of the study.
    qualifier:
        Reads the series' headers and holds the models' checks.

    Returns
    -------
    dict
        ``{"volumes": ..., "qualified": [...], "not_applicable": [...]}``; a not-applicable
        record is ``{"rule", "model", "series_uid", "volume_id", "reason", "detail",
        "dropped"}`` (``model`` is None for a series no rule sends to a model).
    """
    chosen: list[dict[str, Any]] = []
    for d in decisions:
        if d.model is None or d.ignored:
            continue
        for uid in d.series_uids:
            q = qualifier.choose(d, uid)
            if q is not None:
                chosen.append({"rule": d.rule, "model": d.model, "series_uid": uid, **q.to_json()})
    unrouted: list[dict[str, Any]] = []
    for rule, uid in unrouted_series(rules, decisions, series_uids):
        q = qualifier.unrouted(uid)
        if q is not None:
            unrouted.append({"rule": rule, "model": None, "series_uid": uid, **q.to_json()})
    for named, uid in ignored_series(rules, decisions, series_uids):
        q = qualifier.ignored(uid, named)
        if q is not None:
            unrouted.append({"rule": named, "model": None, "series_uid": uid, **q.to_json()})
    return {
        "volumes": qualifier.volumes_json(),
        "qualified": chosen,
        "not_applicable": [c for c in chosen if c["reason"] is not None] + unrouted,
    }
