"""The model inventory: what each model is, what was checked, who routes to it, how it runs.

One row per discovered model, shown by ``GET /api/models``, the console's models page and
``ainode models list --json`` (the inventory the ACR-SIIM practice parameter for imaging AI asks
a site to keep):

* identity: version, format (``source``), the SHA-256 of every file, the weights hash and the
  Device UID (node/models/identity.py), the device it runs on;
* ``status`` and ``checked``: ``admitted`` (loaded and run once on a synthetic input in an
  isolated process by ``ainode models add``; hashes recorded and re-checked), ``described``
  (only read: sidecar or bundle config validated, files present; never loaded) or ``broken``
  (with the reason); ``changed`` when an admitted model's files differ from its record;
* ``rules``: the rules of the node's rule file whose actions run it;
* ``usage``: runs, failures and latency p50/p95 over the last 24 hours and 30 days, from the
  job store (``JobStore.model_runs``);
* ``feedback``: radiologists' verdicts on this version's results (accept / reject / modify,
  ``acceptance_rate`` = accept / all verdicts) and ``feedback_by_version`` for every version
  that received any (``node.store.feedback``);
* the model card.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from node.errors import ModelError
from node.models.devices import describe_device
from node.models.identity import admission_for, identify
from node.store.feedback import acceptance

__all__ = ["WINDOWS", "feedback_columns", "inventory_rows", "routes_by_model", "usage_by_model"]

#: Usage windows: name -> seconds.
WINDOWS: dict[str, float] = {"24h": 86_400.0, "30d": 30 * 86_400.0}

_DESCRIBED = {
    "builtin": "built-in: code imported and its weights file found; not loaded",
    "entry-point": "entry point imported and its model described; not loaded",
    "bundle": "bundle configs and metadata.json read; network not loaded",
    "torchscript": "sidecar validated and network file found; network not loaded",
    "onnx": "sidecar validated and ONNX file found; session not created",
}


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 3)


def usage_by_model(
    runs_since: Callable[[float], Iterable[tuple[str, bool, float | None]]],
    *,
    now: float | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {window: {runs, failures, p50_seconds, p95_seconds}}}`` for ``WINDOWS``.

    ``runs_since(t)`` yields (model, ok, seconds) of every run that ended at or after ``t``
    (``JobStore.model_runs``); latency percentiles are over successful runs.
    """
    now = time.time() if now is None else now
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for window, span in WINDOWS.items():
        by_model: dict[str, list[tuple[bool, float | None]]] = {}
        for model, ok, secs in runs_since(now - span):
            by_model.setdefault(model, []).append((ok, secs))
        for model, items in by_model.items():
            latencies = [s for ok, s in items if ok and s is not None]
            out.setdefault(model, _empty_usage())[window] = {
                "runs": len(items),
                "failures": sum(1 for ok, _ in items if not ok),
                "p50_seconds": _percentile(latencies, 0.5),
                "p95_seconds": _percentile(latencies, 0.95),
            }
    return out


def routes_by_model(ruleset: Any) -> dict[str, list[str]]:
    """``{model: [rule names]}``: which rules of a ``dicom_rules.RuleSet`` run each model."""
    out: dict[str, list[str]] = {}
    for rule in getattr(ruleset, "rules", ()):
        for action in rule.actions:
            if action.model and rule.name not in out.get(action.model, []):
                out.setdefault(action.model, []).append(rule.name)
    return out


def _empty_usage() -> dict[str, dict[str, Any]]:
    return {
        w: {"runs": 0, "failures": 0, "p50_seconds": None, "p95_seconds": None} for w in WINDOWS
    }


def feedback_columns(
    name: str,
    version: str | None,
    counts: Mapping[tuple[str, str | None], Mapping[str, int]] | None,
) -> dict[str, Any]:
    """The ``feedback`` and ``feedback_by_version`` of model ``name`` at ``version``.

    ``counts`` is ``{(model, version): {verdict: n}}`` (``FeedbackStore.counts``); a verdict
    whose result named no model version is listed under the version ``"unknown"``.
    """
    mine = {v: c for (m, v), c in (counts or {}).items() if m == name}
    return {
        "feedback": acceptance(mine.get(version, {}) if version is not None else {}),
        "feedback_by_version": {
            (v if v is not None else "unknown"): acceptance(c)
            for v, c in sorted(mine.items(), key=lambda kv: str(kv[0]))
        },
    }


def inventory_rows(
    entries: Iterable[Any],
    *,
    device: str,
    routes: Mapping[str, list[str]] | None = None,
    usage: Mapping[str, dict[str, dict[str, Any]]] | None = None,
    card: Callable[[str], str] | None = None,
    preference: str | None = None,
    feedback: Mapping[tuple[str, str | None], Mapping[str, int]] | None = None,
) -> list[dict[str, Any]]:
    """The inventory row of every registry entry (``ModelEntry``), broken ones included.

    ``device`` is the torch device of the registry; with ``preference`` (``inference.device``)
    an ONNX model's ``device`` names the onnxruntime provider it would use.  Hashing reads
    every model file (cached per process while files are unchanged).  ``feedback``:
    radiologist verdicts per (model, version) (``FeedbackStore.counts``).
    """
    rows = []
    onnx_device = device
    if preference is not None:
        providers = describe_device(preference).get("onnxruntime") or []
        onnx_device = f"onnxruntime:{providers[0]}" if providers else device
    for entry in entries:
        row = entry.as_json(onnx_device if entry.source == "onnx" else device, card=card)
        row["format"] = entry.source
        row["rules"] = list((routes or {}).get(entry.name, []))
        row["usage"] = dict((usage or {}).get(entry.name) or _empty_usage())
        version = None if row.get("version") is None else str(row["version"])
        row.update(feedback_columns(entry.name, version, feedback))
        row.update(files={}, weights_sha256=None, device_uid=None, admitted_at=None)
        if not entry.is_ok:
            row.update(status="broken", checked=f"not usable: {entry.error}")
            rows.append(row)
            continue
        try:
            identity = identify(
                name=entry.name,
                version=entry.info.version,
                source=entry.source,
                location=entry.location,
            )
        except ModelError as exc:
            admitted = admission_for(entry.location) is not None
            row.update(
                ok=False,
                error=str(exc),
                status="changed" if admitted else "broken",
                checked=str(exc),
            )
            rows.append(row)
            continue
        row.update(identity.to_json())
        if identity.admitted is not None:
            trial = (identity.admitted.get("checks") or {}).get("isolated_load_and_run") or {}
            row.update(
                status="admitted",
                checked=(
                    f"admitted {identity.admitted.get('admitted_at')}: loaded and run once on a "
                    f"synthetic {trial.get('modality', '?')} input {trial.get('input_shape')} "
                    f"in an isolated process ({trial.get('seconds')} s); "
                    f"{len(identity.files)} file hashes recorded and unchanged"
                ),
            )
        else:
            row.update(
                status="described",
                checked=_DESCRIBED.get(entry.source, "described; not loaded")
                + f"; {len(identity.files)} files hashed",
            )
        rows.append(row)
    return rows
