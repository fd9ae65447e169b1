"""MONAI bundle folders (``configs/inference.json`` + ``models/model.pt``), run as MONAI runs them.

Loaded from a local folder only, without ``monai.bundle.load``/``download`` (network; and ``load``
defaults to the train workflow) and without ``verify_metadata`` (downloads a JSON schema).

Description (``ainode models list``; nothing is evaluated):

* identity from ``configs/metadata.json``: ``version``, ``description``, the task (from
  ``network_data_format.outputs``: ``format: segmentation`` -> segmentation, a ``dict``/``object``
  output -> detection, ``format: classification`` -> classification), the modality of the
  input (``network_data_format.inputs.<key>.modality``), segment names from the output's
  ``channel_def``;
* an optional ``ainode.yaml`` in the bundle (a ``ModelSpec`` without ``file``) overrides any of
  these and adds what metadata.json does not state: body parts for routing, label codes/colours
  (``labels`` entries replace the derived ones label by label, and may add labels), detection
  class names.  Its pipeline keys (``spacing``, ``normalise``, ``roi_size``) are not
  used for bundles: the bundle's own transforms run.

Prediction (node/models/bundle_run.py, bundle_input.py, bundle_outputs.py): the ``Volume``
becomes the ``MetaTensor`` MONAI's ``PydicomReader`` would load, the bundle's own
``preprocessing`` (minus its loader), ``network``, ``inferer`` and ``postprocessing`` (minus its
savers, with its ``Invertd``) run on it, and the output becomes a label map on the source grid,
findings in patient coordinates, or class probabilities.  ``models/model.ts`` (TorchScript)
bundles run their config the same way, with the TorchScript module as ``network``.

Bundle configs are code (``$`` expressions, ``_target_``): only folders listed in the node's
``models`` configuration are ever parsed.
"""

from __future__ import annotations

import json
import pickle
import re
import threading
from pathlib import Path
from typing import Any

import torch
from pydicom.sr.codedict import codes as sr_codes

from node.errors import ModelError
from node.models.base import Model, ModelInfo, OutputKind, Task
from node.models.bundle_codes import segment_codes
from node.models.network import LabelSpec, ModelSpec, read_spec
from node.models.runtime import stage_timer
from node.types import Code, Prediction, SegmentDescription, Volume

__all__ = ["BundleModel", "is_bundle", "load_bundle"]

_CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")


def is_bundle(folder: Path) -> bool:
    """True when ``folder`` looks like a MONAI bundle (has ``configs/inference.*``)."""
    return any((folder / "configs" / n).is_file() for n in _CONFIG_NAMES)


def _config_file(folder: Path) -> Path:
    for name in _CONFIG_NAMES:
        path = folder / "configs" / name
        if path.is_file():
            return path
    raise ModelError(f"{folder}: not a MONAI bundle (no configs/inference.json or .yaml)")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._") or "bundle"


def _metadata(folder: Path) -> dict[str, Any]:
    meta_path = folder / "configs" / "metadata.json"
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{meta_path}: invalid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path}: metadata must be a JSON object")
    return meta


def _first(mapping: Any) -> dict[str, Any]:
    if isinstance(mapping, dict) and mapping:
        value = next(iter(mapping.values()))
        return value if isinstance(value, dict) else {}
    return {}


def _task(meta: dict[str, Any]) -> Task:
    out = _first(meta.get("network_data_format", {}).get("outputs"))
    kind, fmt = str(out.get("type", "")).lower(), str(out.get("format", "")).lower()
    if fmt == "segmentation":
        return Task.SEGMENTATION
    if fmt in ("classification", "probabilities") or kind in ("probabilities", "label"):
        return Task.CLASSIFICATION
    if kind == "object" or fmt == "dict" or "detection" in str(meta.get("task", "")).lower():
        return Task.DETECTION
    return Task.SEGMENTATION


def _metadata_defaults(folder: Path) -> dict[str, Any]:
    defaults: dict[str, Any] = {"name": _slug(folder.name)}
    meta = _metadata(folder)
    if meta.get("version"):
        defaults["version"] = str(meta["version"])
    if meta.get("description"):
        defaults["description"] = str(meta["description"])
    defaults["task"] = _task(meta).value
    data_format = meta.get("network_data_format", {})
    modality = _first(data_format.get("inputs")).get("modality")
    if isinstance(modality, str) and modality:
        defaults["modalities"] = [modality.upper()]
    channels = _first(data_format.get("outputs")).get("channel_def")
    if isinstance(channels, dict) and defaults["task"] == Task.SEGMENTATION.value:
        labels = {}
        for k, v in channels.items():
            if not str(k).isdigit() or int(k) == 0 or str(v).lower() == "background":
                continue
            category, property_type, _ = segment_codes(str(v))
            labels[int(k)] = {
                "name": str(v),
                "category": (category.value, category.scheme, category.meaning),
                "type": (property_type.value, property_type.scheme, property_type.meaning),
            }
        if labels:
            defaults["labels"] = labels
    elif isinstance(channels, dict) and defaults["task"] == Task.CLASSIFICATION.value:
        defaults["classes"] = [str(channels[k]) for k in sorted(channels, key=str)]
    return defaults


def _spec(folder: Path) -> ModelSpec:
    defaults = _metadata_defaults(folder)
    override = folder / "ainode.yaml"
    if override.is_file():
        spec = read_spec(override, defaults=defaults)
        # ainode.yaml labels extend/override the channel_def ones label by label
        derived = {k: LabelSpec.model_validate(v) for k, v in defaults.get("labels", {}).items()}
        return spec.model_copy(update={"labels": {**derived, **spec.labels}})
    try:
        return ModelSpec.model_validate(defaults)
    except ValueError as exc:
        raise ModelError(f"{folder}: cannot describe bundle: {exc}") from exc


class BundleModel(Model):
    """A MONAI bundle run by its own config items (see the module docstring)."""

    def __init__(
        self, info: ModelInfo, spec: ModelSpec, folder: Path, *, device: torch.device
    ) -> None:
        self.info = info
        self.spec = spec
        self.folder = folder
        self.device = device
        self._run: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        """Parse the config and instantiate its items now (otherwise the first ``predict`` does)."""
        from node.models.bundle_run import BundleRun
        from node.models.torchvision_compat import ensure_detection_support

        with self._lock:
            if self._run is None:
                if self.info.task is Task.DETECTION:
                    ensure_detection_support()
                try:
                    config = _config_file(self.folder)
                    self._run = BundleRun(self.folder, config, device=self.device)
                except pickle.UnpicklingError as exc:
                    raise ModelError(
                        f"model {self.info.name!r} refused: its weights file is not a plain "
                        f"state dict ({exc.__class__.__name__}); only tensors are loaded"
                    ) from exc
                except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
                    raise ModelError(f"model {self.info.name!r} failed to load: {exc}") from exc
            return self._run

    def predict(self, volume: Volume) -> Prediction:
        """Run the bundle on ``volume``; timings: load (1st call), input, bundle, outputs.

        Raises
        ------
        ModelError
            The volume is not accepted, or the bundle fails to load or to run (the message
            names the config item).
        """
        from node.models.bundle_input import volume_metatensor

        reason = self.accepts(volume)
        if reason is not None:
            raise ModelError(f"model {self.info.name!r} cannot run on this series: {reason}")
        timings: dict[str, float] = {}
        if self._run is None:
            with stage_timer(timings, "load"):
                self.load()
        run = self.load()
        with stage_timer(timings, "input"):
            image = volume_metatensor(volume)
        with stage_timer(timings, "bundle"):
            result = run(image)
        with stage_timer(timings, "outputs"):
            fields = self._fields(run, result, image, volume)
        return Prediction(
            model_name=self.info.name,
            model_version=self.info.version,
            task=self.info.task.value,
            is_demo=self.info.is_demo,
            timings_seconds=timings,
            **fields,
        )

    def _fields(
        self, run: Any, result: dict[str, Any], image: Any, volume: Volume
    ) -> dict[str, Any]:
        from node.models import bundle_outputs as outputs

        spec = self.spec
        task = self.info.task
        if task is Task.DETECTION:
            detector = getattr(run.inferer, "detector", None)
            label_key = str(getattr(detector, "target_label_key", "label"))
            codes = {i: segment_codes(name) for i, name in enumerate(spec.classes)}
            types = {i: c[1] for i, c in codes.items()}
            found, boxes = outputs.findings_and_boxes(
                result,
                space=outputs.box_space(run.postprocessing),
                volume=volume,
                box_key=str(getattr(detector, "target_box_key", "box")),
                label_key=label_key,
                score_key=str(getattr(detector, "pred_score_key", f"{label_key}_scores")),
                types=types,
                default_type=_LESION,
                with_boxes=spec.box_segments,
            )
            if not spec.box_segments or not found:
                return {"findings": found}
            labels, segments, found = outputs.box_label_map(
                found,
                boxes,
                volume,
                categories={c[1].value: c[0] for c in codes.values()},
                default_category=_ABNORMAL,
            )
            return {"findings": found, "label_map": labels, "segments": segments}
        if run.output_key not in result:
            raise ModelError(
                f"model {self.info.name!r}: the bundle's postprocessing gave no "
                f"'{run.output_key}' (keys: {sorted(map(str, result))})"
            )
        pred = result[run.output_key]
        if task is Task.CLASSIFICATION:
            return {"class_probabilities": outputs.probabilities(pred, list(spec.classes))}
        labels = outputs.label_map(pred, image, volume)
        segments = tuple(
            SegmentDescription(
                label=value,
                name=label.name,
                category=Code(*label.category),
                property_type=Code(*label.type),
                color_rgb=label.color,
            )
            for value, label in sorted(spec.labels.items())
        )
        return {"label_map": labels, "segments": segments}


def _sct(concept: Any) -> Code:
    return Code(concept.value, concept.scheme_designator, concept.meaning)


_LESION = _sct(sr_codes.SCT.Lesion)
_ABNORMAL = _sct(sr_codes.SCT.MorphologicallyAbnormalStructure)

_OUTPUTS = {
    Task.SEGMENTATION: (OutputKind.LABEL_MAP,),
    Task.DETECTION: (OutputKind.FINDINGS,),
    Task.CLASSIFICATION: (OutputKind.PROBABILITIES,),
}


def load_bundle(folder: Path, *, device: torch.device) -> BundleModel:
    """Describe (not load) the model of one MONAI bundle folder.

    Raises
    ------
    ModelError
        The folder is not a bundle, has no weights, or its metadata/spec is invalid.
    """
    _config_file(folder)
    if not any((folder / "models" / n).is_file() for n in ("model.pt", "model.ts")):
        raise ModelError(f"{folder}: bundle has no models/model.ts or models/model.pt")
    spec = _spec(folder)
    if spec.task not in _OUTPUTS:
        raise ModelError(f"{folder}: bundles of task {spec.task.value!r} are not supported")
    card = ""
    for name in ("MODEL_CARD.md", "docs/README.md"):
        if (folder / name).is_file():
            card = (folder / name).read_text(encoding="utf-8", errors="replace")
            break
    info = ModelInfo(
        name=spec.name,
        version=spec.version,
        task=spec.task,
        outputs=_OUTPUTS[spec.task]
        + ((OutputKind.LABEL_MAP,) if spec.box_segments and spec.task is Task.DETECTION else ()),
        modalities=tuple(m.upper() for m in spec.modalities),
        body_parts=tuple(spec.body_parts),
        dims=tuple(spec.dims),
        is_demo=spec.is_demo,
        description=spec.description,
        card=card,
        source="bundle",
    )
    return BundleModel(info, spec, folder, device=device)
