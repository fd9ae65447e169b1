"""The training loops of the demo models (called through ``training``)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from node.models.builtin._common import ModelGrid, hu_normalise
from node.samples.phantoms import make_chest_ct
from training import evaluate as ev
from training import loop
from training.train import TrainResult, heldout_seeds

__all__ = [
    "calibrate_detection",
    "evaluate_report",
    "train_classifier",
    "train_cxr",
    "train_denoiser",
    "train_segmentation",
]


#: Held-out chest phantoms for the segmentation card (pooled nodule Dice varies by several
#: points between sets of 8 scans: a few large spiculated nodules dominate the pooled figure).
SEG_HELDOUT_SCANS = 32


def _log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------ segmentation
def _seg_sample(seed: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int]]]:
    """A phantom on the model grid: normalised image (1, z, y, x), labels (1, z, y, x), nodules."""
    from node.models.builtin.lung_nodule_seg import MODEL_SPACING_MM

    ph = make_chest_ct(seed)
    vox = torch.from_numpy(ph.hu)
    grid = ModelGrid.make(vox.shape, ph.spacing, MODEL_SPACING_MM)
    image = hu_normalise(grid.to_model(vox.unsqueeze(0)))
    onehot = F.one_hot(torch.from_numpy(ph.labels.astype(np.int64)), 3).permute(3, 0, 1, 2).float()
    labels = grid.to_model(onehot).argmax(dim=0, keepdim=True)
    centers = []
    for c in ph.nodule_centers_voxel():
        m = [
            (ci - a.offset) / a.step if a.step else 0.0 for ci, a in zip(c, grid.axes, strict=True)
        ]
        centers.append((int(round(m[0])), int(round(m[1])), int(round(m[2]))))
    return image, labels, centers


def _crop(
    rng: np.random.Generator,
    image: torch.Tensor,
    labels: torch.Tensor,
    centers: list[tuple[int, int, int]],
    size: tuple[int, int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    shape = image.shape[1:]
    pad = [max(0, s - n) for s, n in zip(size, shape, strict=True)]
    if any(pad):
        spec = (0, pad[2], 0, pad[1], 0, pad[0])
        image = F.pad(image, spec, value=float(image.min()))
        labels = F.pad(labels, spec, value=0)
        shape = image.shape[1:]
    if centers and rng.random() < 2 / 3:
        c = centers[int(rng.integers(len(centers)))]
        start = [
            int(np.clip(ci - s // 2 + rng.integers(-s // 4, s // 4 + 1), 0, n - s))
            for ci, s, n in zip(c, size, shape, strict=True)
        ]
    else:
        start = [int(rng.integers(0, n - s + 1)) for s, n in zip(size, shape, strict=True)]
    sl = (slice(None),) + tuple(slice(a, a + s) for a, s in zip(start, size, strict=True))
    img, lab = image[sl], labels[sl]
    if rng.random() < 0.5:
        img, lab = img.flip(-1), lab.flip(-1)
    return img, lab


def evaluate_segmentation(model: Any, seeds: list[int]) -> dict[str, float]:
    """Lung and nodule Dice of ``model`` (a LungNoduleSegmentation) on phantoms of ``seeds``.

    ``nodule_dice`` pools all nodule voxels of the set; ``nodule_dice_mean`` averages per scan
    (scans without nodules count 1.0 when nothing is predicted, else 0.0).
    """
    from training.volumes import ct_volume

    lung, nod_mean = [], []
    inter = total = 0.0
    for s in seeds:
        ph = make_chest_ct(s)
        pred = model.predict(ct_volume(ph, seed=s)).label_map
        lung.append(ev.dice(pred == 1, ph.labels == 1))
        p, t = pred == 2, ph.labels == 2
        nod_mean.append(ev.dice(p, t))
        inter += float(np.logical_and(p, t).sum())
        total += float(p.sum() + t.sum())
    return {
        "lung_dice": float(np.mean(lung)),
        "nodule_dice": 2 * inter / total if total else 1.0,
        "nodule_dice_mean": float(np.mean(nod_mean)),
        "scans": float(len(seeds)),
    }


def train_segmentation(
    seed: int, steps: int | None, *, resume: bool = False, data: int | None = None
) -> TrainResult:
    """3D UNet, DiceCE loss, Adam; crops centred on a nodule two times in three.

    Stage 1 trains from scratch on 48^3 crops (batch 2); with ``resume`` a second stage starts
    from the committed weights and continues on 64^3 crops (batch 1, more context), with a
    different data seed so it sees new phantoms.
    """
    import json

    from monai.losses.dice import DiceCELoss

    from node.models.builtin import lung_nodule_seg as seg
    from node.models.builtin._common import ASSETS

    steps = steps or 1500
    previous: dict[str, Any] = {}
    if resume:
        previous = json.loads((ASSETS / seg.NAME / "metrics.json").read_text(encoding="utf-8"))
    stage = len(previous.get("training", {}).get("stages", [{}])) + 1 if resume else 1
    data_seed = seed * 100_000 + 25_000 * (stage - 1)  # every stage sees fresh phantoms
    rng = np.random.default_rng(seed + 1000 * (stage - 1))
    crop, batch_size = ((64, 64, 64), 1) if resume else ((48, 48, 48), 2)
    pool_size = data or 24
    t0 = time.perf_counter()
    pool = [_seg_sample(data_seed + i) for i in range(pool_size)]
    _log(f"seg: {pool_size} phantoms in {time.perf_counter() - t0:.0f}s")
    net = seg.build_network()
    if resume:
        weights = ASSETS / seg.NAME / "weights.pt"
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    max_lr = 1.5e-3 if stage == 2 else 1e-3 if resume else 3e-3
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    refresh = pool_size

    def objective(net: torch.nn.Module, step: int) -> torch.Tensor:
        nonlocal refresh
        if step and step % 100 == 0:  # keep the data fresh: replace a few phantoms
            for _ in range(2):
                pool[int(rng.integers(pool_size))] = _seg_sample(data_seed + refresh)
                refresh += 1
        batch = [_crop(rng, *pool[int(rng.integers(pool_size))], crop) for _ in range(batch_size)]
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        loss: torch.Tensor = loss_fn(net(x), y)
        return loss

    net = loop.fit(net, objective, steps=steps, lr=max_lr, tag="seg")
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    model = seg.LungNoduleSegmentation()
    model._net._net = net  # evaluate the freshly trained network through the real predict()
    heldout = evaluate_segmentation(model, heldout_seeds(seed, SEG_HELDOUT_SCANS))
    _log(f"seg held-out {heldout}")
    stages = list(previous.get("training", {}).get("stages", []))
    if resume and not stages:
        old = previous.get("training", {})
        stages = [
            {"steps": old.get("steps"), "crop": 48, "batch": 2, "phantoms": old.get("phantoms")}
        ]
    stages.append({"steps": steps, "crop": crop[0], "batch": batch_size, "phantoms": refresh})
    return TrainResult(
        state_dict=state,
        heldout=heldout,
        facts={
            "steps": sum(int(st["steps"] or 0) for st in stages),
            "stages": stages,
            "parameters": sum(p.numel() for p in net.parameters()),
        },
    )


def _match(
    cands: list[Any], nodules: Any, spacing: tuple[float, float, float]
) -> tuple[list[tuple[float, bool]], int]:
    """(score, is_true_positive) per candidate, and the number of nodules; greedy by score.

    A candidate hits a nodule when its centre lies within the nodule's radius + 3 mm.
    """
    sp = np.asarray(spacing)
    used: set[int] = set()
    out = []
    for c in cands:
        pos = np.asarray(c.center_index) * sp
        hit = False
        for j, n in enumerate(nodules):
            if j in used:
                continue
            if float(np.linalg.norm(pos - np.asarray(n.center_mm))) <= n.radius_mm + 3.0:
                used.add(j)
                hit = True
                break
        out.append((c.score, hit))
    return out, len(nodules)


def evaluate_detection(model: Any, seeds: list[int]) -> dict[str, float]:
    """Sensitivity and false positives per scan of ``model`` (a LungNoduleDetection)."""
    from training.volumes import ct_volume

    tp = fp = total = 0
    for s in seeds:
        ph = make_chest_ct(s)
        _, kept, _ = model.findings(ct_volume(ph, seed=s))
        matched, n = _match(kept, ph.nodules, ph.spacing)
        tp += sum(1 for _, hit in matched if hit)
        fp += sum(1 for _, hit in matched if not hit)
        total += n
    return {
        "sensitivity": tp / total if total else 1.0,
        "false_positives_per_scan": fp / len(seeds),
        "nodules": float(total),
        "scans": float(len(seeds)),
    }


def _fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-2) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (x standardised); (weights, bias)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -50, 50)))
        grad = xb.T @ (p - y) + reg * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return w[:-1], float(w[-1])


def _detection_candidates(model: Any, seeds: list[int]) -> tuple[list[Any], list[bool], int]:
    """Candidates on phantoms of ``seeds``, whether each hits a nodule, and the nodule count."""
    from training.volumes import ct_volume

    cands: list[Any] = []
    hits: list[bool] = []
    nodules = 0
    for s in seeds:
        ph = make_chest_ct(s)
        found, _ = model.candidates(ct_volume(ph, seed=s))
        sp = np.asarray(ph.spacing)
        for c in found:
            pos = np.asarray(c.center_index) * sp
            cands.append(c)
            hits.append(
                any(
                    float(np.linalg.norm(pos - np.asarray(n.center_mm))) <= n.radius_mm + 3.0
                    for n in ph.nodules
                )
            )
        nodules += len(ph.nodules)
    return cands, hits, nodules


def calibrate_detection(seed: int, steps: int | None) -> TrainResult:  # noqa: ARG001
    """Fit the candidate scorer on training-seed phantoms, choose the operating point on a
    validation set, then evaluate on the held-out set.

    The scorer is a logistic regression on the candidate features (``lung_nodule_detect.FEATURES``)
    of 32 training phantoms.  The operating point is the lowest score keeping false positives at
    or below 0.5 per scan on 24 validation phantoms (half the issue's 1 FP/scan budget, leaving
    room for held-out variation).
    """
    from node.models.builtin import lung_nodule_detect as det

    model = det.LungNoduleDetection()
    # features of every candidate: score with a constant scorer (keeps all candidates)
    n_feat = len(det.FEATURES)
    model.scorer = det.CandidateScorer(
        mean=(0.0,) * n_feat, scale=(1.0,) * n_feat, weights=(0.0,) * n_feat, bias=0.0
    )
    t0 = time.perf_counter()
    train_seeds = [seed * 100_000 + 70_000 + i for i in range(32)]
    cands, hits, _ = _detection_candidates(model, train_seeds)
    _log(f"detect: {len(cands)} training candidates in {time.perf_counter() - t0:.0f}s")
    x = np.asarray([c.features for c in cands], dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    weights, bias = _fit_logistic((x - mean) / scale, np.asarray(hits, dtype=np.float64))
    model.scorer = det.CandidateScorer(
        mean=tuple(mean.tolist()),
        scale=tuple(scale.tolist()),
        weights=tuple(weights.tolist()),
        bias=bias,
    )
    val_seeds = [seed * 100_000 + 80_000 + i for i in range(24)]
    val, val_hits, val_nodules = _detection_candidates(model, val_seeds)
    fps = sorted((c.score for c, hit in zip(val, val_hits, strict=True) if not hit), reverse=True)
    budget = int(0.5 * len(val_seeds))
    min_score = 0.05 if len(fps) <= budget else max(0.05, fps[budget] + 1e-4)
    model.min_score = round(min_score, 4)
    val_tp = sum(1 for c, hit in zip(val, val_hits, strict=True) if hit and c.score >= min_score)
    _log(f"detect: validation sensitivity ~{val_tp / max(val_nodules, 1):.3f} at {min_score:.4f}")
    op = {"min_score": model.min_score, "min_volume_mm3": model.min_volume_mm3}
    heldout = evaluate_detection(model, heldout_seeds(seed, 32))
    _log(f"detect operating point {op} held-out {heldout}")
    return TrainResult(
        state_dict=None,
        heldout=heldout,
        facts={
            "steps": 0,
            "training_scans": len(train_seeds),
            "training_candidates": len(cands),
            "validation_scans": len(val_seeds),
            "operating_point": op,
            "scorer": model.scorer.to_json(),
        },
    )


def _crop_patch(
    crop: Any, rng: np.random.Generator, *, jitter_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Classifier patch from a nodule crop with a random centre offset, and the lesion mask."""
    from node.models.builtin.lung_nodule_classify import extract_patch

    c = crop.center_index
    off = rng.uniform(-jitter_mm, jitter_mm, size=2)
    dz = rng.uniform(-1.0, 1.0)
    centre = (
        c[0] + dz / crop.spacing[0],
        c[1] + off[0] / crop.spacing[1],
        c[2] + off[1] / crop.spacing[2],
    )
    patch = extract_patch(crop.hu, crop.spacing, centre)
    mask = extract_patch(
        np.where(crop.mask, 1000.0, -1000.0).astype(np.float32), crop.spacing, centre
    )
    return patch, mask[1] > (0.0 + 150.0) / 850.0


def _augment(
    x: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 90-degree rotation and flips of (N, 3, H, W) patches and their (N, H, W) masks."""
    k = int(rng.integers(4))
    x, mask = torch.rot90(x, k, dims=(2, 3)), torch.rot90(mask, k, dims=(1, 2))
    if rng.random() < 0.5:
        x, mask = x.flip(3), mask.flip(2)
    if rng.random() < 0.5:
        x = x.flip(1)  # swap the +-2 mm planes
    return x, mask


def _classification_metrics(probs: np.ndarray, labels: list[bool]) -> dict[str, float]:
    """AUC, accuracy, precision and recall at 0.5 of positive-class probabilities."""
    y = np.asarray(labels, dtype=bool)
    pred = np.asarray(probs) >= 0.5
    tp = float((pred & y).sum())
    return {
        "auc": ev.auc(np.asarray(probs).tolist(), labels),
        "accuracy": float((pred == y).mean()),
        "precision": tp / max(1.0, float(pred.sum())),
        "recall": tp / max(1.0, float(y.sum())),
    }


def _localisation_metrics(cams: np.ndarray, masks: list[np.ndarray]) -> dict[str, float]:
    """Grad-CAM pointing game (peak within 2 pixels of the lesion) and share of heat inside it."""
    from scipy import ndimage

    hits, shares, areas = [], [], []
    for cam, m in zip(cams, masks, strict=True):
        tol = ndimage.binary_dilation(m, iterations=2)
        peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
        hits.append(bool(tol[peak]))
        shares.append(float(cam[m].sum() / max(float(cam.sum()), 1e-9)))
        areas.append(float(m.mean()))
    return {
        "gradcam_pointing_game": float(np.mean(hits)),
        "gradcam_heat_in_lesion": float(np.mean(shares)),
        "gradcam_uniform_baseline": float(np.mean(areas)),
    }


def evaluate_classifier(
    model: Any, seeds: list[int], *, chest_seeds: list[int]
) -> dict[str, float]:
    """Classification and Grad-CAM localisation metrics on held-out nodules.

    Patches from nodule crops of ``seeds`` are centred with a random offset of up to 6 mm, so the
    pointing game cannot be won by always pointing at the centre.  ``chest_seeds`` adds nodules of
    full chest phantoms (4 each) to check the classifier there too.
    """
    from node.models.builtin.lung_nodule_classify import extract_patch
    from node.samples.phantoms import make_nodule_crop

    rng = np.random.default_rng(seeds[0] if seeds else 0)
    patches, masks, labels = [], [], []
    for s in seeds:
        crop = make_nodule_crop(s)
        p, m = _crop_patch(crop, rng, jitter_mm=6.0)
        patches.append(p)
        masks.append(m)
        labels.append(crop.nodule.is_malignant)
    x = np.stack(patches)
    out = _classification_metrics(model.classify_patches(x), labels)
    out["nodules"] = float(len(seeds))
    out.update(_localisation_metrics(model.gradcam(x), masks))
    # nodules of full chest phantoms (classifier only, at the true centres)
    cp, cl = [], []
    for s in chest_seeds:
        ph = make_chest_ct(s, n_nodules=4)
        for nod, c in zip(ph.nodules, ph.nodule_centers_voxel(), strict=True):
            cp.append(extract_patch(ph.hu, ph.spacing, c))
            cl.append(nod.is_malignant)
    if cp:
        out["auc_chest_phantoms"] = ev.auc(model.classify_patches(np.stack(cp)).tolist(), cl)
    return out


def train_classifier(seed: int, steps: int | None, *, data: int | None = None) -> TrainResult:
    """VGG-like patch CNN, cross-entropy + evidence localisation loss, Adam, on nodule crops.

    Patch centres are jittered by up to 6 mm.  The localisation term asks the true class's
    evidence to lie inside the nodule mask (see ``loop.localisation_loss``).
    """
    from node.models.builtin import lung_nodule_classify as cls
    from node.samples.phantoms import make_nodule_crop

    steps = steps or 900
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    n_crops = data or 2000
    xs, ms, ys = [], [], []
    for i in range(n_crops):
        crop = make_nodule_crop(seed * 100_000 + 50_000 + i)
        for _ in range(2):
            p, m = _crop_patch(crop, rng, jitter_mm=6.0)
            xs.append(p)
            ms.append(m)
            ys.append(int(crop.nodule.is_malignant))
    x_all = torch.from_numpy(np.stack(xs))
    m_all = torch.from_numpy(np.stack(ms))
    y_all = torch.tensor(ys)
    _log(f"classify: {len(xs)} patches in {time.perf_counter() - t0:.0f}s")
    ce = torch.nn.CrossEntropyLoss()

    def objective(net: torch.nn.Module, step: int) -> torch.Tensor:  # noqa: ARG001
        idx = torch.from_numpy(rng.integers(0, len(xs), size=64))
        xb, mb = _augment(x_all[idx], m_all[idx], rng)
        yb = y_all[idx]
        maps, logits = loop.evidence_maps(net, xb)
        loss: torch.Tensor = ce(logits, yb) + loop.localisation_loss(
            maps, yb, mb, torch.ones_like(yb, dtype=torch.bool)
        )
        return loss

    net = loop.fit(cls.build_network(), objective, steps=steps, lr=2e-3, tag="classify")
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    model = cls.LungNoduleClassifier()
    model._net._net = net
    heldout = evaluate_classifier(
        model, heldout_seeds(seed, 400), chest_seeds=heldout_seeds(seed, 10, base=950_000)
    )
    _log(f"classify held-out {heldout}")
    return TrainResult(
        state_dict=state,
        heldout=heldout,
        facts={
            "steps": steps,
            "patches": len(xs),
            "parameters": sum(p.numel() for p in net.parameters()),
            "gradcam_layer": cls.GRADCAM_LAYER,
            "loss": "cross-entropy + evidence localisation",
        },
    )


def _low_dose_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma=0.7)
    scaled: np.ndarray = noise * (sigma / (float(noise.std()) + 1e-6))
    return scaled


def _clean_ct(seed: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    from node.samples.phantoms import make_chest_scene, render_scene

    rng = np.random.default_rng(seed)
    scene = make_chest_scene(rng)
    px = float(rng.uniform(1.4, 2.2))
    spacing = (float(rng.uniform(1.5, 3.0)), px, px)
    return render_scene(scene, spacing, rng=None).hu, spacing


def evaluate_denoiser(model: Any, seeds: list[int]) -> dict[str, float]:
    """PSNR and SSIM (HU clipped to [-1000, 1000], range 2000) before and after denoising.

    Each held-out phantom is rendered noise-free (the reference) and with low-dose noise of
    60-120 HU; metrics are averaged over phantoms (SSIM over 8 evenly spaced axial slices).
    """
    from node.samples.phantoms import ChestPhantom
    from training.volumes import ct_volume

    rng = np.random.default_rng(seeds[0] if seeds else 0)
    p_in, p_out, s_in, s_out = [], [], [], []
    for s in seeds:
        clean, spacing = _clean_ct(s)
        noisy = clean + _low_dose_noise(rng, clean.shape, float(rng.uniform(60.0, 120.0)))
        ph = ChestPhantom(
            hu=noisy, labels=np.zeros(clean.shape, np.uint8), spacing=spacing, nodules=()
        )
        out = model.predict(ct_volume(ph, seed=s)).derived_voxels

        def clip(a: np.ndarray) -> np.ndarray:
            clipped: np.ndarray = np.clip(a, -1000.0, 1000.0)
            return clipped

        p_in.append(ev.psnr(clip(noisy), clip(clean), 2000.0))
        p_out.append(ev.psnr(clip(out), clip(clean), 2000.0))
        idx = np.linspace(0, clean.shape[0] - 1, 8).astype(int)
        s_in.append(np.mean([ev.ssim2d(clip(noisy[i]), clip(clean[i]), 2000.0) for i in idx]))
        s_out.append(np.mean([ev.ssim2d(clip(out[i]), clip(clean[i]), 2000.0) for i in idx]))
    return {
        "psnr_low_dose": float(np.mean(p_in)),
        "psnr_denoised": float(np.mean(p_out)),
        "psnr_gain": float(np.mean(p_out) - np.mean(p_in)),
        "ssim_low_dose": float(np.mean(s_in)),
        "ssim_denoised": float(np.mean(s_out)),
        "ssim_gain": float(np.mean(s_out) - np.mean(s_in)),
        "scans": float(len(seeds)),
    }


def train_denoiser(seed: int, steps: int | None) -> TrainResult:
    """Residual 2D UNet, L1 loss, Adam, on 96 x 96 slices of clean + low-dose phantom pairs."""
    from node.models.builtin import ct_denoise as dn

    steps = steps or 600
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    pool = [_clean_ct(seed * 100_000 + 30_000 + i)[0] for i in range(16)]
    _log(f"denoise: {len(pool)} phantoms in {time.perf_counter() - t0:.0f}s")
    size = 96

    def objective(net: torch.nn.Module, step: int) -> torch.Tensor:  # noqa: ARG001
        clean_b, noisy_b = [], []
        for _ in range(8):
            vol = pool[int(rng.integers(len(pool)))]
            z = int(rng.integers(vol.shape[0]))
            y = int(rng.integers(0, vol.shape[1] - size + 1))
            x = int(rng.integers(0, vol.shape[2] - size + 1))
            c = vol[z, y : y + size, x : x + size]
            clean_b.append(c)
            noisy_b.append(c + _low_dose_noise(rng, c.shape, float(rng.uniform(40.0, 140.0))))
        clean_t = torch.from_numpy(np.clip(np.stack(clean_b), -1024, 3071) / 1000.0).unsqueeze(1)
        noisy_t = torch.from_numpy(np.clip(np.stack(noisy_b), -1024, 3071) / 1000.0).unsqueeze(1)
        return F.l1_loss(net(noisy_t.float()), clean_t.float())

    net = loop.fit(dn.build_network(), objective, steps=steps, lr=2e-3, tag="denoise")
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    model = dn.CtDenoiser()
    model._net._net = net
    heldout = evaluate_denoiser(model, heldout_seeds(seed, 4))
    _log(f"denoise held-out {heldout}")
    return TrainResult(
        state_dict=state,
        heldout=heldout,
        facts={"steps": steps, "parameters": sum(p.numel() for p in net.parameters())},
    )


def _cxr_sample(seed: int) -> tuple[torch.Tensor, bool, torch.Tensor]:
    """Preprocessed radiograph (1, 128, 128), its label and its opacity mask on the 128 grid."""
    from node.models.builtin.cxr_classify import SIZE, preprocess
    from node.samples.phantoms import make_radiograph

    r = make_radiograph(seed)
    x, (top, left, nh, nw) = preprocess(r.image)
    canvas = torch.zeros(SIZE, SIZE)
    canvas[top : top + nh, left : left + nw] = F.interpolate(
        torch.from_numpy(r.opacity_mask.astype(np.float32))[None, None],
        size=(nh, nw),
        mode="bilinear",
        align_corners=False,
    )[0, 0]
    return x[0], r.has_opacity, canvas > 0.5


def evaluate_cxr(model: Any, seeds: list[int]) -> dict[str, float]:
    """AUC/accuracy and Grad-CAM pointing game (opacity-positive images) on radiographs."""
    samples = [_cxr_sample(s) for s in seeds]
    batch = torch.stack([x for x, _, _ in samples])
    labels = [y for _, y, _ in samples]
    probs = model.probabilities(batch)
    out = _classification_metrics(probs, labels)
    out["images"] = float(len(seeds))
    pos = [i for i, v in enumerate(labels) if v]
    cams = model.gradcam(batch[pos])
    out.update(_localisation_metrics(cams, [samples[i][2].numpy() for i in pos]))
    return out


def train_cxr(seed: int, steps: int | None, *, data: int | None = None) -> TrainResult:
    """Radiograph CNN, cross-entropy + evidence localisation loss, Adam, on projection phantoms.

    The localisation term (``loop.localisation_loss``) asks the opacity evidence to lie inside
    the phantom's opacity mask; with cross-entropy alone the evidence peaked at the opacity's
    upper edge and the Grad-CAM pointing game scored 0.0 (2x uniform heat in the opacity).
    """
    from node.models.builtin import cxr_classify as cx

    steps = steps or 500
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    n_images = data or 700
    samples = [_cxr_sample(seed * 100_000 + 20_000 + i) for i in range(n_images)]
    x_all = torch.stack([x for x, _, _ in samples])
    y_all = torch.tensor([int(y) for _, y, _ in samples])
    m_all = torch.stack([m for _, _, m in samples])
    _log(f"cxr: {n_images} radiographs in {time.perf_counter() - t0:.0f}s")
    ce = torch.nn.CrossEntropyLoss()

    def objective(net: torch.nn.Module, step: int) -> torch.Tensor:  # noqa: ARG001
        idx = torch.from_numpy(rng.integers(0, n_images, size=32))
        xb, mb, yb = x_all[idx], m_all[idx], y_all[idx]
        if rng.random() < 0.5:
            xb, mb = xb.flip(3), mb.flip(2)
        xb = xb * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.05, 0.05))
        maps, logits = loop.evidence_maps(net, xb)
        loss: torch.Tensor = ce(logits, yb) + loop.localisation_loss(maps, yb, mb, yb == 1)
        return loss

    net = loop.fit(cx.build_network(), objective, steps=steps, lr=2e-3, tag="cxr")
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    model = cx.CxrClassifier()
    model._net._net = net
    heldout = evaluate_cxr(model, heldout_seeds(seed, 200))
    _log(f"cxr held-out {heldout}")
    return TrainResult(
        state_dict=state,
        heldout=heldout,
        facts={
            "steps": steps,
            "images": n_images,
            "parameters": sum(p.numel() for p in net.parameters()),
            "gradcam_layer": cx.GRADCAM_LAYER,
            "loss": "cross-entropy + evidence localisation",
        },
    )


def evaluate_report(seed: int, steps: int | None) -> TrainResult:  # noqa: ARG001
    """No training (template); check determinism and coverage on held-out classifier findings."""
    return TrainResult(state_dict=None, heldout={}, facts={"steps": 0, "method": "template"})


def reevaluate(name: str, seed: int) -> dict[str, float]:
    """Held-out metrics of the committed weights of ``name`` (same sets as after training)."""
    from node.models.builtin.ct_denoise import CtDenoiser
    from node.models.builtin.cxr_classify import CxrClassifier
    from node.models.builtin.lung_nodule_classify import LungNoduleClassifier
    from node.models.builtin.lung_nodule_detect import LungNoduleDetection
    from node.models.builtin.lung_nodule_seg import LungNoduleSegmentation

    if name == "lung-nodule-seg":
        return evaluate_segmentation(
            LungNoduleSegmentation(), heldout_seeds(seed, SEG_HELDOUT_SCANS)
        )
    if name == "lung-nodule-detect":
        return evaluate_detection(LungNoduleDetection(), heldout_seeds(seed, 32))
    if name == "lung-nodule-classify":
        return evaluate_classifier(
            LungNoduleClassifier(),
            heldout_seeds(seed, 400),
            chest_seeds=heldout_seeds(seed, 10, base=950_000),
        )
    if name == "ct-denoise":
        return evaluate_denoiser(CtDenoiser(), heldout_seeds(seed, 4))
    if name == "cxr-classify":
        return evaluate_cxr(CxrClassifier(), heldout_seeds(seed, 200))
    if name == "chest-ct-register":
        from training.train_registration import reevaluate_registration

        return reevaluate_registration(seed)
    return {}
