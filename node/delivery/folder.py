"""Folder destination: copies each object to ``PATH/<study>/<series>/<sop>.dcm`` atomically.

For air-gapped sites and demos.  Writing to a temporary name, fsync, then ``os.replace`` makes a
re-send after a crash overwrite the same file instead of leaving a partial or a duplicate.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from node.config import FolderDestination
from node.delivery.base import Outcome, OutcomeKind, Parcel, Sender, SenderContext
from node.errors import DestinationError

__all__ = ["FolderSender"]


class FolderSender(Sender):
    """Writes parcels under a folder, one file per SOP instance."""

    def __init__(self, config: FolderDestination, context: SenderContext) -> None:
        self._root = Path(config.path)
        self._name = context.name

    def send(self, parcels: Sequence[Parcel]) -> list[Outcome]:
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestinationError(
                f"destination '{self._name}': cannot create folder ({exc.strerror})"
            ) from exc
        out = []
        for p in parcels:
            target = self._root / p.study_uid / p.series_uid / f"{p.sop_uid}.dcm"
            tmp = target.with_name(f".{target.name}.tmp")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with p.path.open("rb") as src, tmp.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                    dst.flush()
                    os.fsync(dst.fileno())
                os.replace(tmp, target)
            except OSError as exc:
                out.append(Outcome(p.row_id, OutcomeKind.RETRY, detail=f"write failed: {exc}"))
                continue
            out.append(
                Outcome(
                    p.row_id,
                    OutcomeKind.DELIVERED,
                    sent_sop_uid=p.sop_uid,
                    sent_transfer_syntax_uid=p.transfer_syntax_uid,
                )
            )
        return out
