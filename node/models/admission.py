"""``ainode models add PATH``: admit a model into the node's model store, or refuse it with why.

A model is admitted when every check passes, in this order:

1. PATH is a folder, a zip (extracted safely: no absolute paths, no ``..``, no links, at most
   ``MAX_UNZIPPED_BYTES``) or a sidecar/network file, and holds exactly one model that the
   registry can describe (TorchScript, ONNX or MONAI bundle);
2. its name is not already taken by another model of the node;
3. in an isolated worker process (node/models/isolation.py), it loads and runs once on a
   synthetic input of its declared modality and dimensionality (``synthetic_volume``), and
   produces the outputs its task declares;
4. its files are copied to ``<data_dir>/models/<name>/files/`` and the SHA-256 of every file,
   the weights hash and the Device UID are written to ``<data_dir>/models/<name>/admission.json``.

The node discovers admitted models in ``<data_dir>/models`` after the ``models`` config paths
(``model_paths``); at load the registry re-hashes their files and refuses a model whose files
changed (node/models/identity.py).  ``ainode models verify`` runs the same check on demand.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from node.errors import ModelError
from node.models.identity import (
    ADMISSION_FILE,
    changed_files,
    device_uid,
    file_hashes,
    weights_sha256,
)

__all__ = [
    "MAX_UNZIPPED_BYTES",
    "STORE_FOLDER",
    "add_model",
    "admitted_records",
    "model_paths",
    "synthetic_volume",
    "trial_run",
    "verify_models",
]

STORE_FOLDER = "models"
MAX_UNZIPPED_BYTES = 8 << 30


def store_root(data_dir: Path) -> Path:
    """``<data_dir>/models``: where admitted models live."""
    return data_dir / STORE_FOLDER


def admitted_records(data_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(store folder, admission record) of every admitted model, by name."""
    root = store_root(data_dir)
    out: list[tuple[Path, dict[str, Any]]] = []
    if not root.is_dir():
        return out
    for folder in sorted(root.iterdir()):
        record_path = folder / ADMISSION_FILE
        if record_path.is_file():
            try:
                out.append((folder, json.loads(record_path.read_text(encoding="utf-8"))))
            except (OSError, ValueError):
                out.append((folder, {"name": folder.name, "entry": None}))
    return out


def model_paths(models: Iterable[Path], data_dir: Path) -> list[Path]:
    """What the registry discovers: the ``models`` config paths, then every admitted model."""
    paths = [Path(p) for p in models]
    for folder, record in admitted_records(data_dir):
        entry = record.get("entry")
        paths.append(folder / "files" / entry if entry else folder / "files")
    return paths


# ------------------------------------------------------------------------------- synthetic input
def synthetic_volume(modalities: tuple[str, ...], dims: tuple[int, ...]) -> Any:
    """A deterministic ``Volume`` of the declared modality (first one; CT when any) and 2D/3D.

    CT: HU in [-1000, 400] on (40, 96, 96) at 2.5 x 1 x 1 mm; MR/PT/NM: [0, 1000]; 2D
    (CR/DX/MG...): one (256, 256) image of [0, 4095].
    """
    from node.types import SourceRef, Volume

    modality = modalities[0] if modalities else "CT"
    is_3d = 3 in dims
    rng = np.random.default_rng(16)
    shape = (40, 96, 96) if is_3d else (1, 256, 256)
    low, high = (-1000, 400) if modality == "CT" else (0, 1000) if is_3d else (0, 4095)
    voxels = rng.integers(low, high, size=shape).astype(np.int16)
    sop_class = "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.7"
    return Volume(
        voxels=voxels,
        spacing=(2.5, 1.0, 1.0) if is_3d else (1.0, 0.5, 0.5),
        origin=(0.0, 0.0, 0.0),
        direction=np.eye(3),
        sources=tuple(SourceRef(f"2.25.16.{i + 1}", sop_class) for i in range(shape[0])),
        study_uid="2.25.16",
        series_uid="2.25.16.0",
        modality=modality,
        is_3d=is_3d,
    )


def trial_run(path: str, name: str, device: str) -> dict[str, Any]:
    """Load model ``name`` from ``path`` and run it once on a synthetic input (worker process).

    Returns what it produced (checked against the task by ``add_model``).
    """
    from node.models.registry import discover

    registry = discover([Path(path)], device=device, builtins=False, entry_points=False)
    model = registry.get(name)
    info = model.info
    volume = synthetic_volume(info.modalities, info.dims)
    start = time.perf_counter()
    prediction = model.predict(volume)
    seconds = time.perf_counter() - start
    label_shape = None if prediction.label_map is None else list(prediction.label_map.shape)
    return {
        "modality": volume.modality,
        "input_shape": list(volume.voxels.shape),
        "seconds": round(seconds, 3),
        "label_map_shape": label_shape,
        "class_probabilities": len(prediction.class_probabilities),
        "findings": len(prediction.findings),
        "derived_image": prediction.derived_voxels is not None,
        "text": prediction.text is not None,
        "task": prediction.task,
    }


def _check_outputs(task: str, result: dict[str, Any]) -> str | None:
    shape = result["input_shape"]
    if task == "segmentation":
        got = result["label_map_shape"]
        want = shape
        if got is None:
            return "declares task segmentation but returned no label map"
        if got != want:
            return f"returned a label map of shape {got} for an input of shape {want}"
    if task == "classification" and not result["class_probabilities"]:
        return "declares task classification but returned no class probabilities"
    if task == "enhancement" and not result["derived_image"]:
        return "declares task enhancement but returned no derived image"
    if task == "report" and not result["text"]:
        return "declares task report but returned no text"
    return None


# ---------------------------------------------------------------------------------- unpacking
def _unzip(archive: Path, into: Path) -> Path:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{archive}: not a readable zip file ({exc})") from exc
    with zf:
        total = 0
        for info in zf.infolist():
            member = Path(info.filename)
            if member.is_absolute() or ".." in member.parts:
                raise ModelError(f"{archive}: member {info.filename!r} escapes the archive")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ModelError(f"{archive}: member {info.filename!r} is a symbolic link")
            total += info.file_size
            if total > MAX_UNZIPPED_BYTES:
                raise ModelError(f"{archive}: unpacks to more than {MAX_UNZIPPED_BYTES} bytes")
        zf.extractall(into)
    children = [c for c in into.iterdir() if not c.name.startswith((".", "__MACOSX"))]
    return children[0] if len(children) == 1 and children[0].is_dir() else into


def _candidate(path: Path, device: str) -> tuple[Path, str, Any]:
    """(path to give the registry, model name, entry) of the one model at ``path``."""
    from node.models.registry import discover

    registry = discover([path], device=device, builtins=False, entry_points=False)
    entries = registry.entries()
    broken = [e for e in entries if not e.is_ok]
    ok = [e for e in entries if e.is_ok]
    if broken:
        e = broken[0]
        raise ModelError(f"{path}: {e.name!r} cannot be described: {e.error}")
    if not ok:
        raise ModelError(
            f"{path}: no model found (a MONAI bundle folder, or a TorchScript/ONNX file with "
            "its YAML sidecar)"
        )
    if len(ok) > 1:
        raise ModelError(
            f"{path}: holds {len(ok)} models ({', '.join(e.name for e in ok)}); add them one "
            "at a time"
        )
    return Path(ok[0].location), ok[0].name, ok[0]


def _files_to_copy(entry: Any) -> tuple[Path, list[Path]]:
    from node.models.identity import model_files

    root, files = model_files(entry.source, entry.location, entry.name)
    if not files:
        raise ModelError(f"model {entry.name!r}: found no files to admit")
    return root, files


def _write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def add_model(
    path: Path,
    *,
    data_dir: Path,
    existing: Iterable[str] = (),
    device: str = "cpu",
    timeout_seconds: float = 600.0,
    replace: bool = False,
) -> dict[str, Any]:
    """Admit the model at ``path`` (folder, zip or file) into ``<data_dir>/models/<name>``.

    Parameters
    ----------
    path:
        A bundle folder, a folder with one sidecar + network file, such a file, or a zip of those.
    data_dir:
        ``node.data_dir``.
    existing:
        Names of the node's other models (a clash is refused unless ``replace``).
    device:
        ``inference.device`` for the trial run.
    timeout_seconds:
        Deadline of the isolated trial run.
    replace:
        Re-admit a model of that name (a new version or retrained weights).

    Returns
    -------
    dict
        The admission record (also written to ``admission.json``).

    Raises
    ------
    ModelError
        A check failed; the message says which and why.
    """
    from node.models.isolation import run_isolated

    if not path.exists():
        raise ModelError(f"{path}: no such file or folder")
    with tempfile.TemporaryDirectory(prefix="ainode-add-") as tmp:
        source = path
        if path.is_file() and path.suffix.lower() == ".zip":
            source = _unzip(path, Path(tmp) / "unzipped")
        location, name, entry = _candidate(source, device)
        if name in set(existing) and not replace:
            raise ModelError(
                f"a model named {name!r} already exists on this node; use --replace to "
                "admit this one in its place"
            )
        root, files = _files_to_copy(entry)
        # a bundle keeps its folder (its name may come from it); a sidecar sits at the top
        base = root.resolve().parent if entry.source == "bundle" else root.resolve()
        # stage the copy first: the trial runs on exactly the bytes that will be stored
        staged = _stage(files, base, Path(tmp) / "files")
        entry_rel = location.resolve().relative_to(base).as_posix()
        staged_entry = staged / entry_rel
        result = run_isolated(
            trial_run,
            str(staged_entry),
            name,
            device,
            timeout_seconds=timeout_seconds,
            what=f"model {name!r} (admission trial run)",
        )
        problem = _check_outputs(entry.info.task.value, result)
        if problem is not None:
            raise ModelError(f"model {name!r} refused: on a synthetic input it {problem}")
        record = _admission_record(path, staged, name, entry, entry_rel, result, device)
        store = store_root(data_dir) / name
        try:
            _install(staged, store, record)
        except OSError as exc:
            raise ModelError(f"model {name!r}: cannot write {store}: {exc}") from exc
        return record


def _stage(files: list[Path], base: Path, staged: Path) -> Path:
    """Copy ``files`` (under ``base``) to ``staged``, keeping their relative paths."""
    staged.mkdir()
    for f in files:
        rel = f.resolve().relative_to(base)
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, staged / rel)
    return staged


def _admission_record(
    path: Path,
    staged: Path,
    name: str,
    entry: Any,
    entry_rel: str,
    result: Any,
    device: str,
) -> dict[str, Any]:
    """What ``admission.json`` says: the files and their hashes, the identity, the checks."""
    hashes = file_hashes(staged, sorted(p for p in staged.rglob("*") if p.is_file()))
    weights = weights_sha256(hashes)
    record: dict[str, Any] = {
        "name": name,
        "version": entry.info.version,
        "format": entry.source,
        "entry": entry_rel,
        "source_path": str(path.resolve()),
        "admitted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "files": hashes,
        "weights_sha256": weights,
        "device_uid": device_uid(name, entry.info.version, weights),
        "checks": {
            "described": "sidecar/bundle config read and validated",
            "isolated_load_and_run": result,
            "sha256": f"{len(hashes)} files hashed",
        },
    }
    return record


def _install(staged: Path, store: Path, record: dict[str, Any]) -> None:
    """Move the staged files and the record into ``store`` (replacing it) in one rename."""
    store.parent.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(dir=store.parent, prefix=f".{store.name}-"))
    shutil.copytree(staged, incoming / "files")
    for p in (incoming, *incoming.rglob("*")):
        p.chmod(p.stat().st_mode & ~stat.S_IWOTH)
    _write_json(incoming / ADMISSION_FILE, record)
    if store.exists():
        old = store.with_name(f".{store.name}-replaced-{int(time.time())}")
        store.rename(old)
        shutil.rmtree(old)
    incoming.rename(store)


def verify_models(data_dir: Path, names: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Re-hash every admitted model (or those named) against its admission record.

    Returns one row per model: ``name``, ``ok``, ``problems`` (what changed), ``device_uid``.

    Raises
    ------
    ModelError
        A name given is not an admitted model.
    """
    wanted = set(names)
    records = admitted_records(data_dir)
    known = {r.get("name", f.name) for f, r in records}
    missing = sorted(wanted - known)
    if missing:
        raise ModelError(
            f"not admitted: {', '.join(missing)} (admitted: {', '.join(sorted(known)) or 'none'})"
        )
    rows = []
    for folder, record in records:
        name = record.get("name", folder.name)
        if wanted and name not in wanted:
            continue
        if "files" not in record:
            rows.append({"name": name, "ok": False, "problems": [f"{ADMISSION_FILE} unreadable"]})
            continue
        problems = changed_files(folder, record)
        rows.append(
            {
                "name": name,
                "ok": not problems,
                "problems": problems,
                "files": len(record["files"]),
                "device_uid": record.get("device_uid"),
                "admitted_at": record.get("admitted_at"),
            }
        )
    return rows
