"""Run a MONAI bundle's own inference config items on an in-memory image.

The way MONAI Deploy's ``MonaiBundleInferenceOperator`` does it, with two differences (any
output type; a precise error naming the config item a bundle cannot run without):

1. ``configs/inference.json|yaml`` and ``configs/metadata.json`` are parsed with
   ``monai.bundle.ConfigParser``; the image goes under the config's ``image_key`` (else the first
   key of ``network_data_format.inputs``), the output is read under the first key of
   ``network_data_format.outputs`` (``pred``); ``bundle_root`` is the bundle folder, ``device``
   ainode's device, and the bundle folder goes on ``sys.path`` (as ``monai.bundle run`` does)
   so ``scripts.*`` targets resolve; each bundle's own ``scripts`` modules are swapped into
   ``sys.modules`` only while it is built or run, so bundles sharing a worker never mix them.
2. ``preprocessing`` (a ``Compose``) loses its file loaders (``LoadImage``/``LoadImaged``): its
   input is ``{image_key: MetaTensor}`` from node/models/bundle_input.py.  ``postprocessing``
   loses its savers (``Save*``, ``*Saver``, ``*Writer``).  Both edits are made in the config
   before parsing, so ``Invertd(transform=@preprocessing)`` inverts exactly what ran.
3. ``network`` (else ``network_def``) is instantiated, ``models/model.pt`` loaded into it
   (``torch.load(weights_only=True)``, strict, as ``CheckpointLoader`` does), and put in eval
   mode; a bundle with only ``models/model.ts`` uses that TorchScript module as ``network``.
   The evaluator's ``_requires_`` items (e.g. the detector's ``detector_ops``) run next, before
   ``inferer``, in the order MONAI's own run resolves them.
4. A batch is formed as the bundle's ``dataloader`` forms it: ``list_data_collate`` (a batch
   tensor), or a list of images when its ``collate_fn`` is ``no_collation`` (detection).
5. ``inferer(inputs, network)`` runs under ``torch.no_grad()``; AMP (the evaluator's ``amp``)
   only on CUDA: on CPU MONAI's own evaluator disables it too (``torch.autocast("cuda")`` without
   CUDA).
6. The output, whatever its type, is put beside the input image the way MONAI's engines do:
   a tensor or dict of tensors is decollated and merged with the batch (``SupervisedEvaluator``),
   a list of dicts (detectors) gives one dict per image merged with its image (the zoo
   detector's ``output_transform``); ``postprocessing`` then runs on that dict.

Bundle configs are code (``$`` expressions, ``_target_``): only folders an administrator
configured under ``models`` are parsed (node/models/registry.py checks their permissions).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from node.errors import ModelError

__all__ = ["BundleRun", "bundle_error"]

#: Loaders dropped from ``preprocessing``: ainode gives the image in memory.
_LOADERS = frozenset({"LoadImage", "LoadImaged"})


def bundle_error(config: Path, item: str, message: str) -> ModelError:
    """A ``ModelError`` naming the config file and the item (``preprocessing#transforms#0``)."""
    return ModelError(f"{config}: {item}: {message}")


def _short(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1] if isinstance(target, str) else ""


def _is_saver(name: str) -> bool:
    return name.startswith("Save") or name.endswith(("Saver", "Saverd", "Writer", "Writerd"))


def _top_names(folder: Path) -> frozenset[str]:
    """Top-level module names a bundle folder provides (``scripts`` and any ``*.py``)."""
    names = {p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    names |= {p.stem for p in folder.glob("*.py")}
    return frozenset(names)


def _take(names: frozenset[str]) -> dict[str, ModuleType]:
    return {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in names}


class BundleRun:
    """A bundle's inference items, parsed and instantiated once, run per image.

    Parameters
    ----------
    folder:
        The bundle folder.
    config:
        Its ``configs/inference.json|yaml``.
    device:
        Where the network runs.

    Raises
    ------
    ModelError
        The config lacks an item inference needs, has a preprocessing step that reads files
        other than the image loader, or an item fails to instantiate; the message names it.
    """

    def __init__(self, folder: Path, config: Path, *, device: torch.device) -> None:
        from monai.bundle.config_parser import ConfigParser

        self.folder = folder
        self.config = config
        self.device = device
        parser = ConfigParser()
        parser.read_config(str(config))
        meta = folder / "configs" / "metadata.json"
        self.metadata: dict[str, Any] = {}
        if meta.is_file():
            parser.read_meta(str(meta))
            self.metadata = json.loads(meta.read_text(encoding="utf-8"))
        parser["bundle_root"] = str(folder)
        parser["device"] = device
        data_format = self.metadata.get("network_data_format", {})
        inputs, outputs = data_format.get("inputs", {}), data_format.get("outputs", {})
        first_input = next(iter(inputs), "image") if isinstance(inputs, dict) else "image"
        self.image_key = str(parser.get("image_key", first_input))
        self.output_key = next(iter(outputs), "pred") if isinstance(outputs, dict) else "pred"
        self._strip(parser)
        self.parser = parser
        self._names = _top_names(folder)
        self._modules: dict[str, ModuleType] = {}
        with self._own_modules():
            self.network = self._network()
            self._requires()
            self.preprocessing = self._parsed("preprocessing")
            self.inferer = self._parsed("inferer")
            has_post = "postprocessing" in parser
            self.postprocessing = self._parsed("postprocessing") if has_post else None
        collate = parser.get("dataloader", {})
        collate_fn = collate.get("collate_fn", "") if isinstance(collate, dict) else ""
        self.is_list_batch = "no_collation" in str(collate_fn)
        evaluator = parser.get("evaluator", {})
        amp = evaluator.get("amp", False) if isinstance(evaluator, dict) else False
        self.amp = bool(self._value(amp))

    @contextlib.contextmanager
    def _own_modules(self) -> Iterator[None]:
        """This bundle's ``scripts.*`` (and other top-level) modules, for the duration.

        Zoo bundles all call their code ``scripts``; a worker keeps several bundles loaded, so
        each bundle's modules are swapped into ``sys.modules`` (and its folder onto
        ``sys.path``, as ``monai.bundle run`` puts it) only while that bundle is instantiated
        or run, and another bundle's ``scripts`` is never picked up.
        """
        saved = _take(self._names)
        sys.modules.update(self._modules)
        sys.path.insert(1, str(self.folder))
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(self.folder))
            self._modules = _take(self._names)
            sys.modules.update(saved)

    # ------------------------------------------------------------ config edits
    def _strip(self, parser: Any) -> None:
        for item in ("preprocessing", "inferer"):
            if item not in parser:
                raise bundle_error(self.config, item, "missing; ainode runs the bundle's own")
        for item, keep in (("preprocessing", self._keep_pre), ("postprocessing", self._keep_post)):
            if item not in parser:
                continue
            raw = parser.get(item)
            if not (isinstance(raw, dict) and isinstance(raw.get("transforms"), list)):
                raise bundle_error(
                    self.config,
                    item,
                    "is not a Compose with a 'transforms' list, so its file loader/saver cannot "
                    "be replaced by the in-memory image; restate it as "
                    '{"_target_": "Compose", "transforms": [...]}',
                )
            kept = [t for i, t in enumerate(raw["transforms"]) if keep(f"{item}#transforms#{i}", t)]
            parser[f"{item}#transforms"] = kept

    def _keep_pre(self, where: str, transform: Any) -> bool:
        name = _short(transform.get("_target_")) if isinstance(transform, dict) else ""
        if name in _LOADERS:
            return False
        if name.startswith("Load") or "Reader" in name:
            raise bundle_error(
                self.config,
                where,
                f"'{name}' reads files; ainode gives the image in memory after the loader and "
                "knows only LoadImage/LoadImaged as loaders; remove it or replace it with "
                "LoadImaged",
            )
        return True

    def _keep_post(self, where: str, transform: Any) -> bool:
        name = _short(transform.get("_target_")) if isinstance(transform, dict) else ""
        return not _is_saver(name)

    # ------------------------------------------------------------ instantiation
    def _parsed(self, item: str) -> Any:
        try:
            return self.parser.get_parsed_content(item, instantiate=True)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - bundle code may raise anything; name the item
            raise bundle_error(self.config, item, f"cannot instantiate: {exc}") from exc

    def _value(self, raw: Any) -> Any:
        if isinstance(raw, str) and raw.startswith("@"):
            return self._parsed(raw[1:])
        return raw

    def _network(self) -> torch.nn.Module:
        weights = self.folder / "models" / "model.pt"
        if not weights.is_file():  # a TorchScript bundle: the archive is the network
            from node.models.runtime import load_torchscript_file

            module = load_torchscript_file(self.folder / "models" / "model.ts", self.device)
            module.eval()
            self.parser["network"] = module
            return module
        item = "network" if "network" in self.parser else "network_def"
        if item not in self.parser:
            raise bundle_error(self.config, "network_def", "missing")
        network = self._parsed(item)
        if not isinstance(network, torch.nn.Module):
            raise bundle_error(self.config, item, f"is a {type(network).__name__}, not a module")
        # weights_only: a pickle asking for anything but tensors and containers is refused
        state = torch.load(weights, map_location=self.device, weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]  # CheckpointLoader's {"model": state_dict}
        if not isinstance(state, dict):
            raise ModelError(f"{weights}: expected a state dict")
        network.load_state_dict(state)
        network.to(self.device)
        network.eval()
        return network

    def _requires(self) -> None:
        evaluator = self.parser.get("evaluator")
        if not isinstance(evaluator, dict):
            return
        required = evaluator.get("_requires_")
        for ref in required if isinstance(required, list) else [required]:
            if isinstance(ref, str) and ref.startswith("@"):
                self._parsed(ref[1:])

    # ------------------------------------------------------------ running
    def __call__(self, image: Any) -> dict[str, Any]:
        """Run preprocessing, inferer and postprocessing on one image (a ``MetaTensor``).

        Returns
        -------
        dict
            The postprocessed item: the output under the metadata's output key (``pred``) or the
            keys of a dict output (``box``, ``label``, ``label_scores``...), and the image.
        """
        with self._own_modules():
            return self._run(image)

    def _run(self, image: Any) -> dict[str, Any]:
        from monai.data.utils import decollate_batch, list_data_collate

        try:
            item = self.preprocessing({self.image_key: image})
        except Exception as exc:  # noqa: BLE001 - bundle transforms may raise anything
            raise bundle_error(self.config, "preprocessing", f"failed: {exc}") from exc
        if self.is_list_batch:
            inputs: Any = [item[self.image_key].to(self.device)]
        else:
            inputs = list_data_collate([item])[self.image_key].to(self.device)
        amp = self.amp and self.device.type == "cuda"
        with torch.no_grad(), torch.autocast("cuda", enabled=amp) if amp else _null():
            try:
                pred = self.inferer(inputs, self.network)
            except Exception as exc:  # noqa: BLE001
                raise bundle_error(self.config, "inferer", f"failed: {exc}") from exc
        if isinstance(pred, list) and pred and isinstance(pred[0], dict):
            out = {**pred[0], self.image_key: inputs[0]}
        elif isinstance(pred, list):
            out = {self.output_key: pred[0], self.image_key: inputs[0]}
        else:
            batch = {self.image_key: inputs, self.output_key: pred}
            if isinstance(pred, dict):
                batch = {self.image_key: inputs, **pred}
            out = decollate_batch(batch)[0]
        if self.postprocessing is None:
            return dict(out)
        try:
            result = self.postprocessing(out)
        except Exception as exc:  # noqa: BLE001
            raise bundle_error(self.config, "postprocessing", f"failed: {exc}") from exc
        if isinstance(result, list):  # a transform that returned several items
            result = result[0]
        return dict(result)


@contextlib.contextmanager
def _null() -> Iterator[None]:
    yield
