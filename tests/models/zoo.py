"""Helpers of the zoo-bundle acceptance tests and bench/bundles.py: inputs, both runs, read-back.

* ``crop_series``: a copy of a corpus series cut to a central square (both sides get it);
* ``run_ainode_predict``: ``ainode predict`` on that folder with the bundle registered;
* ``run_monai_bundle``: MONAI's own ``python -m monai.bundle run`` on the same folder, with the
  datalist pointed at it and its ``LoadImaged`` reader set to ``PydicomReader``;
* ``seg_on_grid`` / ``monai_label_map``: both answers as label maps on the ``Volume`` grid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from node.models.bundle_input import lps_affine
from node.types import Volume

REPO = Path(__file__).resolve().parents[2]
CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Runs MONAI's own CLI (``python -m monai.bundle``) after making its RetinaNet buildable where
#: torchvision cannot load (node/models/torchvision_compat.py); a no-op with a real torchvision.
_MONAI_MAIN = (
    "import runpy, sys; "
    "from node.models.torchvision_compat import ensure_detection_support; "
    "ensure_detection_support(); sys.argv[0] = 'monai.bundle'; "
    "runpy.run_module('monai.bundle', run_name='__main__', alter_sys=True)"
)


def crop_series(src: Path, dest: Path, *, size: int) -> Path:
    """Write ``src``'s files cut to the central ``size`` x ``size`` pixels (geometry adjusted)."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in src.iterdir() if p.is_file()):
        ds = pydicom.dcmread(path)
        r0, c0 = (int(ds.Rows) - size) // 2, (int(ds.Columns) - size) // 2
        pixels = ds.pixel_array[r0 : r0 + size, c0 : c0 + size]
        ori = np.asarray(ds.ImageOrientationPatient, dtype=float)
        row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
        pos = np.asarray(ds.ImagePositionPatient, dtype=float)
        pos = pos + c0 * col_sp * ori[:3] + r0 * row_sp * ori[3:]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.Rows, ds.Columns = size, size
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(dest / path.name, enforce_file_format=True)
    return dest


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _timed(cmd: list[str], *, cwd: Path, timeout: float) -> dict[str, Any]:
    """Run ``cmd``; its output, wall seconds and peak RSS in MiB (``wait4`` rusage)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        with proc.stdout:
            out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": proc.returncode,
        "output": out,
        "wall_seconds": time.perf_counter() - start,
        "peak_rss_mib": usage.ru_maxrss / 1024.0,
    }


def run_ainode_predict(
    bundle: Path, series: Path, out: Path, *, model: str, timeout: float = 900
) -> dict[str, Any]:
    """``ainode predict`` with ``models: [bundle]``; returns prediction.json plus the run."""
    out.mkdir(parents=True, exist_ok=True)
    config = out.parent / f"{out.name}-ainode.yaml"
    config.write_text(
        f"models: [{json.dumps(str(bundle))}]\ninference: {{device: cpu}}\n", encoding="utf-8"
    )
    run = _timed(
        [
            sys.executable,
            "-c",
            "from node.cli import main; main()",
            "predict",
            "--config",
            str(config),
            "--model",
            model,
            "--out",
            str(out),
            str(series),
        ],
        cwd=out,
        timeout=timeout,
    )
    assert run["returncode"] == 0, run["output"][-4000:]
    run["prediction"] = json.loads((out / "prediction.json").read_text())
    return run


def run_monai_bundle(
    bundle: Path, series: Path, out: Path, *, detection: bool, timeout: float = 900
) -> dict[str, Any]:
    """MONAI's own ``python -m monai.bundle run`` of ``bundle`` on the DICOM folder ``series``."""
    out.mkdir(parents=True, exist_ok=True)
    overrides = [
        "--preprocessing#transforms#0#reader",
        "PydicomReader",
        "--dataloader#num_workers",
        "0",
        "--output_dir",
        str(out),
    ]
    if detection:
        overrides += ["--test_datalist", repr([{"image": str(series)}])]
    else:
        overrides += ["--datalist", repr([str(series)])]
    run = _timed(
        [
            sys.executable,
            "-c",
            _MONAI_MAIN,
            "run",
            "--config_file",
            str(bundle / "configs" / "inference.json"),
            "--meta_file",
            str(bundle / "configs" / "metadata.json"),
            "--bundle_root",
            str(bundle),
            *overrides,
        ],
        cwd=bundle,  # as the zoo's README runs it: `scripts.*` targets import from there
        timeout=timeout,
    )
    assert run["returncode"] == 0, run["output"][-4000:]
    return run


def ras_affine(volume: Volume) -> npt.NDArray[np.float64]:
    """RAS affine of ``volume``'s (column, row, slice) indices."""
    return _LPS_TO_RAS @ lps_affine(volume)


def monai_label_map(nifti: Path, volume: Volume) -> npt.NDArray[np.uint8]:
    """MONAI's saved label image resampled (index mapping, no interpolation) onto ``volume``."""
    import nibabel as nib

    img: Any = nib.load(str(nifti))
    data = np.asarray(img.dataobj)
    data = data.reshape(data.shape[:3])
    mapping = np.linalg.inv(img.affine) @ ras_affine(volume)
    assert np.allclose(mapping[:3, :3], np.round(mapping[:3, :3]), atol=1e-3), mapping
    k, r, c = np.indices(volume.voxels.shape)
    idx = np.stack([c, r, k, np.ones_like(k)], axis=-1) @ mapping.T
    i, j, m = (np.rint(idx[..., n]).astype(int) for n in range(3))
    assert i.min() >= 0 and j.min() >= 0 and m.min() >= 0
    return np.asarray(data[i, j, m], dtype=np.uint8)


def seg_on_grid(seg_path: Path, volume: Volume) -> npt.NDArray[np.uint8]:
    """A DICOM-SEG decoded back onto ``volume``'s grid (label = segment number)."""
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    uids = [s.sop_uid for s in volume.sources]
    present = {
        str(item.ReferencedSOPInstanceUID)
        for fg in seg.PerFrameFunctionalGroupsSequence
        for d in fg.DerivationImageSequence
        for item in d.SourceImageSequence
    }
    labels = np.zeros(volume.voxels.shape, dtype=np.uint8)
    wanted = [u for u in uids if u in present]
    if wanted:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=wanted, combine_segments=True, skip_overlap_checks=True
        )
        for n, uid in enumerate(wanted):
            labels[uids.index(uid)] = pixels[n]
    return labels


def dice(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def run_checker(checker_tools: Path, name: str, *args: object) -> str:
    """Run one checker of tools/checkers; fail unless it exits 0; return its output."""
    proc = subprocess.run(
        [str(checker_tools / name), *map(str, args)], capture_output=True, text=True, timeout=240
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name}: {out[-6000:]}"
    return out


def check_all(checker_tools: Path, sources: Path, *files: Path, is_sr: bool = False) -> None:
    """dciodvfy (check-dicom), references to the sources, dcmjs (what OHIF uses), SR tools."""
    out = run_checker(checker_tools, "check-dicom", *files)
    assert "0 error(s)" in out.splitlines()[-1]
    run_checker(checker_tools, "check-refs", "--sources", sources, *files)
    run_checker(checker_tools, "check-dcmjs", "--strict", "--sources", sources, *files)
    if is_sr:
        run_checker(checker_tools, "check-sr", "--quiet", *files)
