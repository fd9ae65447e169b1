"""Models declare the body parts they accept in the standard's terms (PS3.16 Annex L)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.errors import ModelError
from node.models.anatomy import canonical_body_parts
from node.models.registry import discover
from tests.models.builders import Threshold3d, write_torchscript


def test_declared_body_parts_become_annex_l_terms() -> None:
    parts = canonical_body_parts(
        ["Ankle joint", "ankle", "THORAX", "Sacroiliac joint", "wrist"], where="m"
    )
    assert parts == ("ANKLE", "CHEST", "SIJOINT", "WRIST")
    with pytest.raises(ModelError, match=r"m: body part 'ANKEL' .*did you mean 'ANKLE'\?"):
        canonical_body_parts(["ANKEL"], where="m")


def test_a_sidecar_with_an_unknown_body_part_is_broken(tmp_path: Path) -> None:
    for name, parts in (("good", "[Ankle joint, KNEE]"), ("bad", "[ANKEL]")):
        write_torchscript(
            tmp_path, name, Threshold3d(), f"name: {name}\nbody_parts: {parts}\nlabels: {{}}\n"
        )
    rows = {
        e.name: e
        for e in discover([tmp_path], device="cpu", builtins=False, entry_points=False).entries()
    }
    assert rows["good"].info is not None and rows["good"].info.body_parts == ("ANKLE", "KNEE")
    assert not rows["bad"].is_ok and "did you mean 'ANKLE'" in str(rows["bad"].error)
