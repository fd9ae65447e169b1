"""``report-text``: structured findings -> a short plain-language impression (template, demo).

Deterministic: the same findings always give the same text (findings are ordered by malignancy
probability, then diameter, then tracking id).  ``predict`` runs ``lung-nodule-classify`` on the
volume and words its findings; ``render_impression`` words any list of ``Finding``s, so the
results stage can use it on other models' outputs.  Every text says it is a demo.

With a prior study (a rule with ``priors``: ``predict_with_prior``) the findings are compared
with the prior's nodules by the classifier's detector (``LungNoduleDetection.compare``,
docs/followup.md "Tracking") and the text names the new, growing and resolved nodules, or says
that no prior was available.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from node.models.base import Model, ModelInfo, OutputKind, Task
from node.models.builtin._common import heldout_metrics, load_card
from node.models.builtin.lung_nodule_classify import LungNoduleClassifier
from node.types import Finding, NoduleChange, Prediction, PriorInput, Volume

__all__ = ["DEMO_DISCLAIMER", "ReportText", "render_impression"]

NAME = "report-text"
VERSION = "1.0.0"
DEMO_DISCLAIMER = (
    "DEMO OUTPUT from models trained on synthetic phantoms only; not for clinical use."
)
_HIGH = 0.7
_LOW = 0.3


def _side(f: Finding) -> str:
    if f.finding_site is None:
        return "lung"
    meaning = f.finding_site.meaning.lower()
    return "left lung" if "left" in meaning else "right lung" if "right" in meaning else "lung"


def _risk(p: float | None) -> str:
    if p is None:
        return "not characterised"
    if p >= _HIGH:
        return f"suspicious features (estimated malignancy probability {p:.0%})"
    if p <= _LOW:
        return f"features favouring a benign nodule (estimated malignancy probability {p:.0%})"
    return f"indeterminate features (estimated malignancy probability {p:.0%})"


def _sort_key(f: Finding) -> tuple[float, float, str]:
    return (-(f.malignancy_probability or 0.0), -(f.diameter_mm or 0.0), f.tracking_id)


def _size(f: Finding) -> str:
    return f"{f.diameter_mm:.0f} mm" if f.diameter_mm is not None else "unmeasured"


def _comparison_lines(
    findings: Sequence[Finding], resolved: Sequence[Finding], prior_note: str | None
) -> list[str]:
    """What changed since the prior: new, growing and resolved nodules (deterministic order)."""
    tracked = [f for f in findings if f.tracking is not None]
    if not tracked and not resolved:
        return [f"COMPARISON: {prior_note}."] if prior_note else []
    date = next((t.tracking.prior_study_date for t in (*tracked, *resolved) if t.tracking), None)
    when = f" of {date[:4]}-{date[4:6]}-{date[6:8]}" if date and len(date) >= 8 else ""
    lines = [f"COMPARISON with the prior study{when}:"]
    ordered = sorted(tracked, key=lambda f: (-(f.diameter_mm or 0.0), f.tracking_id))
    for f in ordered:
        t = f.tracking
        assert t is not None
        if t.status is NoduleChange.NEW:
            lines.append(f"New {_size(f)} nodule in the {_side(f)}, not seen on the prior study.")
        elif t.status is NoduleChange.GROWING:
            change = (
                f", volume {t.volume_change_percent:+.0f}%"
                if t.volume_change_percent is not None
                else ""
            )
            vdt = (
                f", volume doubling time {t.volume_doubling_days:.0f} days"
                if t.volume_doubling_days is not None
                else ""
            )
            prior = f" (was {t.prior_diameter_mm:.0f} mm)" if t.prior_diameter_mm else ""
            lines.append(f"Growing {_size(f)} nodule in the {_side(f)}{prior}{change}{vdt}.")
    for f in resolved:
        t = f.tracking
        size = f"{t.prior_diameter_mm:.0f} mm " if t and t.prior_diameter_mm else ""
        lines.append(f"The {size}nodule of the prior study in the {_side(f)} has resolved.")
    quiet = (NoduleChange.STABLE, NoduleChange.SHRINKING)
    others = sum(1 for f in tracked if f.tracking and f.tracking.status in quiet)
    if others:
        lines.append(f"{others} other {'nodule' if others == 1 else 'nodules'} without growth.")
    return lines


def render_impression(
    findings: Sequence[Finding],
    *,
    max_listed: int = 5,
    resolved: Sequence[Finding] = (),
    prior_note: str | None = None,
) -> str:
    """A short impression for lung-nodule findings.

    Parameters
    ----------
    findings
        Findings (typically from ``lung-nodule-classify``); order does not matter.
    max_listed
        At most this many nodules are described one by one.
    resolved
        Prior nodules no current one matches (``Prediction.resolved``).
    prior_note
        The result's statement about the prior study (``Prediction.prior_note``); None when
        the rule asked for none.

    Returns
    -------
    str
        Plain text: one impression sentence per nodule (largest risk first), a recommendation
        line when a nodule is suspicious, the comparison with the prior (new, growing and
        resolved nodules, or why there was no prior) when one was asked for, and the demo
        disclaimer.
    """
    if not findings:
        lines = ["IMPRESSION: No lung nodule detected."]
    else:
        ordered = sorted(findings, key=_sort_key)
        count = len(ordered)
        noun = "nodule" if count == 1 else "nodules"
        lines = [f"IMPRESSION: {count} lung {noun} detected."]
        for i, f in enumerate(ordered[:max_listed], start=1):
            lines.append(
                f"{i}. {_size(f)} nodule in the {_side(f)} with {_risk(f.malignancy_probability)}."
            )
        if count > max_listed:
            rest = count - max_listed
            lines.append(f"{rest} further {'nodule' if rest == 1 else 'nodules'} not listed.")
        if any((f.malignancy_probability or 0.0) >= _HIGH for f in ordered):
            lines.append("Suspicious nodule present: clinical correlation and follow-up advised.")
    lines += _comparison_lines(findings, resolved, prior_note)
    lines.append(DEMO_DISCLAIMER)
    return "\n".join(lines)


class ReportText(Model):
    """Plain-language impression of the lung-nodule findings (template-based demo)."""

    #: a rule with ``priors`` calls ``predict_with_prior`` (new and growing nodules in the text)
    uses_prior = True

    def __init__(self, classifier: LungNoduleClassifier | None = None) -> None:
        self.info = ModelInfo(
            name=NAME,
            version=VERSION,
            task=Task.REPORT,
            outputs=(OutputKind.TEXT, OutputKind.FINDINGS),
            modalities=("CT",),
            body_parts=("CHEST",),
            dims=(3,),
            min_slices=8,
            max_slice_spacing_mm=10.0,
            orientations=("AXIAL",),
            is_demo=True,
            description="Template impression from the demo lung-nodule findings",
            card=load_card(NAME),
            metrics=heldout_metrics(NAME),
        )
        self._classifier = classifier

    @property
    def classifier(self) -> LungNoduleClassifier:
        """The nodule classifier whose findings are worded (built on first use)."""
        if self._classifier is None:
            self._classifier = LungNoduleClassifier()
        return self._classifier

    def accepts(self, volume: Volume) -> str | None:
        """Same inputs as the nodule classifier."""
        return super().accepts(volume) or self.classifier.accepts(volume)

    def predict(self, volume: Volume) -> Prediction:
        """Run the nodule classifier, then word its findings."""
        upstream = self.classifier.predict(volume)
        t0 = time.perf_counter()
        text = render_impression(upstream.findings)
        timings = dict(upstream.timings_seconds)
        timings["report"] = time.perf_counter() - t0
        return Prediction(
            model_name=NAME,
            model_version=VERSION,
            task=Task.REPORT.value,
            is_demo=True,
            findings=upstream.findings,
            text=text,
            timings_seconds=timings,
        )

    def predict_with_prior(
        self, volume: Volume, prior: PriorInput | None, prior_reason: str | None
    ) -> Prediction:
        """``predict``, with the findings compared with the prior study's nodules and the
        text naming the new, growing and resolved ones (or why there was no prior)."""
        upstream = self.classifier.predict(volume)
        t0 = time.perf_counter()
        findings, resolved, note = self.classifier.detection.compare(
            volume, upstream.findings, prior, prior_reason
        )
        text = render_impression(findings, resolved=resolved, prior_note=note)
        timings = dict(upstream.timings_seconds)
        timings["report"] = time.perf_counter() - t0
        return Prediction(
            model_name=NAME,
            model_version=VERSION,
            task=Task.REPORT.value,
            is_demo=True,
            findings=findings,
            text=text,
            timings_seconds=timings,
            resolved=resolved,
            prior_note=note,
        )
