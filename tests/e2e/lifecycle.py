"""What the result-lifecycle tests share (issue 18 §4): a running node whose CT rule delivers to
two real Orthancs, ``pacs`` over DIMSE (IOCM notes flag) and ``rest`` over REST with
``delete_rejected``, a small CT series to send, and what to read back from the peers and the
job store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import pydicom

from node.jobs.store import JobStore
from node.samples.writers import write_ct_series
from tests.peers.node import NodeProcess, start_node
from tests.peers.orthanc import OrthancPeer, start_orthanc

KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
SLICES = 8


@contextmanager
def lifecycle_node(
    tmp_path: Path, *, rules: Path, models: Path
) -> Iterator[tuple[NodeProcess, OrthancPeer, OrthancPeer]]:
    """Two Orthancs (``pacs``, ``rest``) and a node under ``tmp_path/node`` delivering to them
    with ``rules`` and the models under ``models``; yields (node, pacs, rest)."""
    with (
        start_orthanc(tmp_path / "pacs") as pacs,
        start_orthanc(tmp_path / "rest") as rest,
        start_node(
            tmp_path / "node",
            study={"stable_seconds": 1},
            rules=str(rules),
            models=[str(models)],
            inference={"workers": 1, "torch_threads": 1, "job_timeout_seconds": 120},
            destinations={
                "pacs": {"type": "dimse", "host": "127.0.0.1", "port": pacs.dicom_port},
                "rest": {"type": "orthanc", "url": rest.url, "delete_rejected": True},
            },
            delivery={"backoff_base_seconds": 0.2, "backoff_max_seconds": 1.0},
        ) as node,
    ):
        yield node, pacs, rest


def ct_series(out_dir: Path, *, seed: int) -> list[Path]:
    """A small random CT series (``SLICES`` slices of 48 x 48) written under ``out_dir``."""
    hu = np.random.default_rng(seed).integers(-1000, 400, size=(SLICES, 48, 48))
    return write_ct_series(hu.astype(np.float32), spacing=(2.5, 1.0, 1.0), out_dir=out_dir)


def sops(peer: OrthancPeer) -> dict[str, str]:
    """SOP Instance UID -> SOP Class UID of every instance in ``peer``."""
    out = {}
    for iid in httpx.get(f"{peer.url}/instances", timeout=30).json():
        tags = httpx.get(f"{peer.url}/instances/{iid}/simplified-tags", timeout=30).json()
        out[tags["SOPInstanceUID"]] = tags["SOPClassUID"]
    return out


def live(peer: OrthancPeer) -> set[str]:
    """SOP Instance UIDs in ``peer`` that are not rejection notes."""
    return {sop for sop, cls in sops(peer).items() if cls != KOS_CLASS}


def notes(peer: OrthancPeer) -> dict[str, set[str]]:
    """Rejection notes stored in ``peer``: note SOP Instance UID -> referenced SOP UIDs."""
    out = {}
    for iid in httpx.get(f"{peer.url}/instances", timeout=30).json():
        data = httpx.get(f"{peer.url}/instances/{iid}/file", timeout=30).content
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        if str(ds.SOPClassUID) != KOS_CLASS:
            continue
        if ds.ConceptNameCodeSequence[0].CodeValue != "113001":
            continue
        out[str(ds.SOPInstanceUID)] = {
            str(sop.ReferencedSOPInstanceUID)
            for study in ds.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence
            for sop in series.ReferencedSOPSequence
        }
    return out


def result_sops(store: JobStore, job_id: str) -> set[str]:
    """The SOP Instance UIDs of the objects job ``job_id`` made."""
    return {o["sop_uid"] for o in store.get(job_id).outputs["objects"]}


def runs(store: JobStore, job_id: str) -> int:
    """How many times job ``job_id`` succeeded."""
    return [e["state"] for e in store.events(job_id)].count("succeeded")
