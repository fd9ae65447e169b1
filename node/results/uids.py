"""Deterministic UIDs for result objects (PS3.5 B.2: UUID-derived UIDs under the ``2.25`` root).

A retried job must re-send byte-identical objects, so every UID ainode writes into a result is a
pure function of the job id, the model version, the object index and the role of the UID inside
that object (series, instance, tracking UID of finding 3, ...).
"""

from __future__ import annotations

import uuid

__all__ = ["algorithm_device_uid", "result_uid"]

#: Fixed namespace of ainode result UIDs (uuid5 of the project URL; never change it).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/ainode/ainode/results")


def result_uid(*, job_id: str, model_version: str, index: int, role: str) -> str:
    """A ``2.25.<int>`` UID that depends only on its inputs (PS3.5 B.2).

    Parameters
    ----------
    job_id
        Identifier of the job that produced the result.
    model_version
        Version of the model that produced it.
    index
        Index of the result object within the job (0 for the first object).
    role
        What the UID identifies inside that object, e.g. ``"series"``, ``"sop"``,
        ``"tracking/3"``.

    Returns
    -------
    str
        A UID of at most 64 characters.
    """
    name = "\x1f".join((job_id, model_version, str(index), role))
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"


def algorithm_device_uid(*, model_name: str, model_version: str, weights_sha256: str = "") -> str:
    """Device UID of a model version (IHE AIR: stable per model version and weights).

    Used when the model does not declare its own (``Prediction.device_uid``): a ``2.25`` UID
    derived from the model name, version and the SHA-256 of its weights (empty when unknown),
    so every result of the same model version carries the same Device UID.
    """
    name = "\x1f".join(("device", model_name, model_version, weights_sha256))
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"
