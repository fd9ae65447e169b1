"""``report-text``: structured findings -> a short plain-language impression (template, demo).

Deterministic: the same findings always give the same text (findings are ordered by malignancy
probability, then diameter, then tracking id).  ``predict`` runs ``lung-nodule-classify`` on the
volume and words its findings; ``render_impression`` words any list of ``Finding``s, so the
results stage can use it on other models' outputs.  Every text says it is a demo.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from node.models.base import Model, ModelInfo, OutputKind, Task
from node.models.builtin._common import heldout_metrics, load_card
from node.models.builtin.lung_nodule_classify import LungNoduleClassifier
from node.types import Finding, Prediction, Volume

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


def render_impression(findings: Sequence[Finding], *, max_listed: int = 5) -> str:
    """A short impression for lung-nodule findings.

    Parameters
    ----------
    findings
        Findings (typically from ``lung-nodule-classify``); order does not matter.
    max_listed
        At most this many nodules are described one by one.

    Returns
    -------
    str
        Plain text: one impression sentence per nodule (largest risk first), a recommendation
        line when a nodule is suspicious, and the demo disclaimer.
    """
    if not findings:
        lines = ["IMPRESSION: No lung nodule detected."]
    else:
        ordered = sorted(findings, key=_sort_key)
        count = len(ordered)
        noun = "nodule" if count == 1 else "nodules"
        lines = [f"IMPRESSION: {count} lung {noun} detected."]
        for i, f in enumerate(ordered[:max_listed], start=1):
            size = f"{f.diameter_mm:.0f} mm" if f.diameter_mm is not None else "unmeasured"
            lines.append(
                f"{i}. {size} nodule in the {_side(f)} with {_risk(f.malignancy_probability)}."
            )
        if count > max_listed:
            rest = count - max_listed
            lines.append(f"{rest} further {'nodule' if rest == 1 else 'nodules'} not listed.")
        if any((f.malignancy_probability or 0.0) >= _HIGH for f in ordered):
            lines.append("Suspicious nodule present: clinical correlation and follow-up advised.")
    lines.append(DEMO_DISCLAIMER)
    return "\n".join(lines)


class ReportText(Model):
    """Plain-language impression of the lung-nodule findings (template-based demo)."""

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
