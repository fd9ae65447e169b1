"""Body parts a model accepts, in the terms of the standard (PS3.16 Annex L, via dicom_rules).

A model spec (TorchScript/ONNX sidecar, a bundle's ``ainode.yaml``) declares ``body_parts`` as
Body Part Examined defined terms (``ANKLE``, ``CHEST``), their SNOMED CT code meanings
(``Ankle joint``) or ainode's synonyms (``THORAX``); each becomes the canonical term routing rules
compare ``body_part`` with.  Anything else is refused with the closest term.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from dicom_rules.bodypart import STANDARD, BodyPartTable, normalise
from node.errors import ModelError

__all__ = ["canonical_body_parts"]

_TABLE = BodyPartTable()


def canonical_body_parts(values: Iterable[str], *, where: str) -> tuple[str, ...]:
    """The canonical term of each declared body part, in order, without duplicates.

    Raises
    ------
    ModelError
        A value is neither an Annex L term, a CID 4031 code meaning nor a known synonym.
    """
    out: list[str] = []
    for value in values:
        canon, synonym = _TABLE.exact(value)
        if synonym is None:
            key = normalise(value).replace(" ", "")
            close = difflib.get_close_matches(key, sorted(STANDARD), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ModelError(
                f"{where}: body part {value!r} is not a PS3.16 Annex L Body Part Examined term, "
                f"a CID 4031 code meaning or a known synonym{hint}"
            )
        if canon not in out:
            out.append(canon)
    return tuple(out)
