"""Weights for the zoo bundles of tests/models/bundles, made here (no downloads).

Freshly initialised networks give near-constant output, which would make "ainode agrees with
MONAI" meaningless (both sides trivially empty).  So:

* **segmenter** (spleen UNet): ``network_def`` under ``torch.manual_seed(0)``, then
  ``SEG_STEPS`` Adam steps (lr 1e-2) on generated phantoms: soft-tissue ellipsoids (label 1)
  and fat/air/bone around them, in the bundle's own intensity scaling.  The BatchNorm running
  statistics are then re-estimated on phantoms (cumulative average) so eval mode behaves.  On a
  real chest CT the net marks soft tissue (heart, muscle, vessels): hundreds of thousands of
  voxels with long boundaries, so a one-voxel disagreement shows in the Dice.
* **detector** (RetinaNet): ``network_def`` under ``torch.manual_seed(0)``; the classification
  head's last convolution is scaled (``CLS_SCALE``) and its bias shifted (``CLS_AT_THRESHOLD``),
  so instead of hundreds of near-equal scores around the focal-loss prior (all boxes up to the
  bundle's 300 per image pass its 0.02 threshold) a few anchors score from 0.02 to ~0.7 and a
  handful of boxes survive NMS.

Both are deterministic on one machine (fixed seeds, one thread while training).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).parent / "bundles"
SEG_STEPS = 12
#: Detector head: logit' = CLS_SCALE * (logit - CLS_AT_THRESHOLD) + logit(0.02).  The freshly
#: initialised head's logits sit near -4.3 (the focal-loss prior) with a thin tail up to about
#: -2.1 on the test crop; the ones above CLS_AT_THRESHOLD (the top ~0.01 %) now pass the
#: bundle's 0.02 score threshold, with scores spread up to ~0.7.
CLS_SCALE = 45.0
CLS_AT_THRESHOLD = -2.25


def _network_def(bundle: Path) -> torch.nn.Module:
    from monai.bundle.config_parser import ConfigParser

    from node.models.torchvision_compat import ensure_detection_support

    ensure_detection_support()
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def", instantiate=True)
    assert isinstance(net, torch.nn.Module)
    return net


def _phantoms(rng: np.random.Generator, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` scaled CT-like phantoms (spleen window -57..164 HU -> 0..1) and their labels."""
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1).astype(np.float32)
    images, labels = [], []
    for _ in range(n):
        hu = np.full((size,) * 3, -1000.0, dtype=np.float32)  # air
        body = np.sum(((grid - size / 2) / (size * 0.45)) ** 2, axis=-1) < 1
        hu[body] = -100.0  # fat
        label = np.zeros((size,) * 3, dtype=np.float32)
        for _ in range(3):
            centre = rng.uniform(size * 0.3, size * 0.7, size=3)
            radii = rng.uniform(size * 0.08, size * 0.2, size=3)
            blob = np.sum(((grid - centre) / radii) ** 2, axis=-1) < 1
            hu[blob] = rng.uniform(30, 120)
            label[blob] = 1.0
        bone = np.sum(((grid - rng.uniform(0, size, 3)) / (size * 0.08)) ** 2, axis=-1) < 1
        hu[bone], label[bone] = 700.0, 0.0
        hu += rng.normal(0, 15, size=hu.shape).astype(np.float32)
        images.append(np.clip((hu + 57) / 221, 0, 1))
        labels.append(label)
    return torch.from_numpy(np.stack(images)[:, None]), torch.from_numpy(np.stack(labels)[:, None])


def spleen_weights(bundle: Path) -> dict[str, torch.Tensor]:
    """A state dict for the spleen bundle's UNet (see the module docstring)."""
    from monai.losses.dice import DiceCELoss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = _network_def(bundle)
        rng = np.random.default_rng(0)
        optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        net.train()
        for _ in range(SEG_STEPS):
            x, y = _phantoms(rng, 2, 32)
            optimiser.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            optimiser.step()
        for m in net.modules():  # running statistics = plain average over phantom batches
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        with torch.no_grad():
            for _ in range(4):
                net(_phantoms(rng, 2, 32)[0])
        net.eval()
        return {k: v.detach().clone() for k, v in net.state_dict().items()}
    finally:
        torch.set_num_threads(threads)


def detector_weights(bundle: Path) -> dict[str, torch.Tensor]:
    """A state dict for the lung-nodule bundle's RetinaNet (see the module docstring)."""
    net = _network_def(bundle)
    head: Any = net.classification_head
    threshold_logit = float(np.log(0.02 / 0.98))
    with torch.no_grad():
        head.cls_logits.weight.mul_(CLS_SCALE)
        bias = head.cls_logits.bias
        bias.copy_(CLS_SCALE * (bias - CLS_AT_THRESHOLD) + threshold_logit)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _weights_key(src: Path) -> str:
    """Hash of everything the generated weights depend on: this module, the bundle's configs
    and the torch/MONAI versions (a different build may train to different numbers)."""
    import monai

    h = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted((src / "configs").rglob("*")):
        if path.is_file():
            h.update(path.relative_to(src).as_posix().encode() + b"\0" + path.read_bytes())
    h.update(f"{torch.__version__} {monai.__version__}".encode())
    return h.hexdigest()[:16]


def _write_weights(name: str, src: Path, target: Path, cache: Path | None) -> None:
    """Generate the weights of bundle ``name`` into ``target``, or copy them from ``cache``.

    ``cache`` is a folder shared by the tests of one run (all xdist workers): the spleen
    weights take ~10-20 s of training, so they are made once per run, keyed by content.  A
    cached file is written whole and then renamed, so a concurrent reader sees all or nothing.
    """
    if cache is None:
        weights = spleen_weights(src) if name == "spleen_ct_segmentation" else detector_weights(src)
        torch.save(weights, target)
        return
    cached = cache / f"{name}-{_weights_key(src)}.pt"
    if not cached.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        _write_weights(name, src, tmp, None)
        os.replace(tmp, cached)
    shutil.copyfile(cached, target)


def bundle_copy(
    name: str, dest: Path, *, ainode_yaml: str | None = None, cache: Path | None = None
) -> Path:
    """Copy bundle ``name`` to ``dest/name`` with generated ``models/model.pt``.

    ``cache``: a folder where the generated weights are kept for the rest of the test run
    (the ``run_cache`` fixture); None generates them afresh.
    """
    src = HERE / name
    folder = dest / name
    shutil.copytree(src, folder)
    (folder / "models").mkdir()
    _write_weights(name, src, folder / "models" / "model.pt", cache)
    if ainode_yaml is not None:
        (folder / "ainode.yaml").write_text(ainode_yaml, encoding="utf-8")
    return folder


def metadata(folder: Path) -> dict[str, Any]:
    """The bundle's metadata.json."""
    data: dict[str, Any] = json.loads((folder / "configs" / "metadata.json").read_text())
    return data
