"""What identifies a model: the SHA-256 of its files, its weights hash and its Device UID.

A model's **Device UID** is a DICOM UID (2.25 root, name-based UUID, PS3.5 B.2) computed from its
name, version and weights hash, so the same model gives the same UID on every node and a
retrained model (new weights, same name and version) is visibly a different device.  It goes
into every result the model writes (IHE AI Results: Contributing Equipment Sequence, TID 1004).

Which files a model has:

* TorchScript / ONNX: the sidecar, the network file it names, the model card;
* MONAI bundle: every file under the bundle folder;
* built-in: every file under its ``assets/<name>`` folder (weights, metrics, card);
* entry point: the files of its Python distribution (as installed, ``RECORD``).

The **weights hash** is the SHA-256 over the (path, SHA-256) pairs of the weight files among those
(``.pt .pth .ts .pt2 .onnx .safetensors .bin .ckpt``), or of all of them when there is none.

An admitted model (``ainode models add``, node/models/admission.py) lives in
``<data_dir>/models/<name>/files`` beside its ``admission.json``, which holds the hashes taken
at admission; ``identify`` refuses such a model when a file changed since.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.errors import ModelError

if TYPE_CHECKING:
    from node.models.base import ModelInfo
    from node.types import Prediction

__all__ = [
    "ADMISSION_FILE",
    "WEIGHT_SUFFIXES",
    "Identity",
    "admission_for",
    "changed_files",
    "device_uid",
    "file_hashes",
    "identify",
    "model_files",
    "sha256_file",
    "stamp",
    "weights_sha256",
]

ADMISSION_FILE = "admission.json"
WEIGHT_SUFFIXES = (".pt", ".pth", ".ts", ".pt2", ".onnx", ".safetensors", ".bin", ".ckpt")
_CHUNK = 1 << 20

#: (path, size, mtime_ns) -> sha256: a file is hashed once per process unless it changes.
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of one file's bytes (cached per path, size and modification time)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    cached = _HASH_CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def file_hashes(root: Path, files: list[Path]) -> dict[str, str]:
    """``{path relative to root (POSIX): sha256}`` for ``files``, sorted by path."""
    out = {}
    for f in sorted(files):
        rel = f.resolve().relative_to(root.resolve()).as_posix() if f.is_absolute() else str(f)
        out[rel] = sha256_file(f)
    return dict(sorted(out.items()))


def weights_sha256(hashes: dict[str, str]) -> str:
    """SHA-256 over the (path, hash) lines of the weight files (all files if none is weights)."""
    weights = {k: v for k, v in hashes.items() if k.lower().endswith(WEIGHT_SUFFIXES)} or hashes
    text = "".join(f"{Path(k).name}\0{v}\n" for k, v in sorted(weights.items()))
    return hashlib.sha256(text.encode()).hexdigest()


#: Namespace of the name-based (RFC 9562 version 5) UUIDs behind Device UIDs.
_DEVICE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ainode:model-device")


def device_uid(name: str, version: str, weights: str) -> str:
    """The Device UID of (name, version, weights hash): ``2.25.<UUID as integer>`` (PS3.5 B.2).

    The UUID is name-based (version 5) over the three values, so it is the same on every node.
    """
    key = "\0".join((name, version, weights))
    return f"2.25.{uuid.uuid5(_DEVICE_NAMESPACE, key).int}"


def _spec_files(sidecar: Path) -> list[Path]:
    from ruamel.yaml import YAML

    data = YAML(typ="safe").load(sidecar.read_text(encoding="utf-8")) or {}
    files = [sidecar]
    names: list[str] = []
    if isinstance(data, dict):
        names = [str(data[k]) for k in ("file", "card") if data.get(k)]
    for n in names:
        candidate = sidecar.parent / n
        if candidate.is_file():
            files.append(candidate)
    if not (isinstance(data, dict) and data.get("file")):
        for suffix in (".onnx", ".ts", ".pt", ".pth", ".pt2"):
            if sidecar.with_suffix(suffix).is_file():
                files.append(sidecar.with_suffix(suffix))
                break
    return files


def _tree(folder: Path) -> list[Path]:
    return [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and not any(part.startswith(".") or part == "__pycache__" for part in p.parts)
    ]


def model_files(source: str, location: str, name: str) -> tuple[Path, list[Path]]:
    """(root, files) of a discovered model (see the module docstring); files may be empty."""
    if source in ("torchscript", "onnx"):
        sidecar = Path(location)
        return sidecar.parent, _spec_files(sidecar)
    if source == "bundle":
        folder = Path(location)
        return folder, _tree(folder)
    if source == "builtin":
        from node.models.builtin._common import ASSETS

        folder = ASSETS / name
        return folder, _tree(folder) if folder.is_dir() else []
    if source == "entry-point" and "(" in location:
        dist_name = location.rsplit("(", 1)[1].rstrip(")")
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            return Path("."), []
        root = Path(str(dist.locate_file("")))
        files = [
            Path(str(dist.locate_file(f)))
            for f in dist.files or ()
            if not str(f).endswith((".pyc", "RECORD", "INSTALLER", "REQUESTED"))
        ]
        return root, [f for f in files if f.is_file()]
    return Path("."), []


def admission_for(location: str) -> tuple[Path, dict[str, Any]] | None:
    """(store folder, admission record) when ``location`` lies in an admitted model's ``files``."""
    path = Path(location)
    for parent in (path, *path.parents):
        if parent.name == "files" and (parent.parent / ADMISSION_FILE).is_file():
            try:
                record = json.loads((parent.parent / ADMISSION_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ModelError(f"{parent.parent / ADMISSION_FILE} is unreadable: {exc}") from exc
            return parent.parent, record
    return None


def changed_files(store: Path, record: dict[str, Any]) -> list[str]:
    """What differs between an admitted model's files and its admission hashes (empty: none)."""
    root = store / "files"
    recorded: dict[str, str] = record.get("files", {})
    problems = []
    for rel, want in sorted(recorded.items()):
        f = root / rel
        if not f.is_file():
            problems.append(f"{rel} is missing")
            continue
        got = sha256_file(f)
        if got != want:
            problems.append(f"{rel} changed (sha256 {want[:12]}… admitted, {got[:12]}… now)")
    present = {p.relative_to(root).as_posix() for p in _tree(root)} if root.is_dir() else set()
    problems += [f"{rel} was added" for rel in sorted(present - set(recorded))]
    return problems


@dataclass(frozen=True, slots=True)
class Identity:
    """A model's file hashes, weights hash and Device UID (``admitted``: from ``models add``)."""

    files: dict[str, str] = field(default_factory=dict)
    weights_sha256: str = ""
    device_uid: str = ""
    admitted: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form (inventory)."""
        return {
            "files": dict(self.files),
            "weights_sha256": self.weights_sha256,
            "device_uid": self.device_uid,
            "admitted_at": (self.admitted or {}).get("admitted_at"),
            "admission_checks": (self.admitted or {}).get("checks"),
        }


def identify(*, name: str, version: str, source: str, location: str) -> Identity:
    """Hash a model's files and derive its Device UID.

    Raises
    ------
    ModelError
        The model was admitted and a file changed, vanished or appeared since (the message
        lists which), or its files cannot be read.
    """
    admitted = admission_for(location)
    if admitted is not None:
        store, record = admitted
        problems = changed_files(store, record)
        if problems:
            raise ModelError(
                f"model {name!r} refused: its files differ from those admitted on "
                f"{record.get('admitted_at', '?')}: {'; '.join(problems)}; restore them or "
                "re-admit the model with 'ainode models add'"
            )
        files = dict(record["files"])
        return Identity(files, record["weights_sha256"], record["device_uid"], record)
    try:
        root, paths = model_files(source, location, name)
        hashes = file_hashes(root, paths)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model {name!r}: cannot hash its files: {exc}") from exc
    weights = weights_sha256(hashes)
    return Identity(hashes, weights, device_uid(name, version, weights))


def stamp(prediction: Prediction, info: ModelInfo) -> Prediction:
    """``prediction`` carrying the producing model's Device UID (unless the model set one)."""
    if prediction.device_uid is not None or info.device_uid is None:
        return prediction
    return dataclasses.replace(prediction, device_uid=info.device_uid)
