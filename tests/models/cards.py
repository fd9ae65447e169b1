"""The demo models' cards (node/models/builtin/*.metrics.json) as test assertions."""

from __future__ import annotations

from node.models.builtin._common import load_metrics

__all__ = ["assert_meets_card"]


def assert_meets_card(name: str, measured: dict[str, float]) -> None:
    """Every threshold of model ``name``'s card holds for ``measured`` (all failures listed)."""
    thresholds = load_metrics(name)["thresholds"]
    lower_is_better = {"false_positives_per_scan"}
    failures = []
    for metric, thr in thresholds.items():
        value = measured[metric]
        ok = value <= thr if metric in lower_is_better else value >= thr
        if not ok:
            failures.append(f"{metric} = {value:.4f} (threshold {thr})")
    assert not failures, f"{name}: " + "; ".join(failures) + f"; all: {measured}"
