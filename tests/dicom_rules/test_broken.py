"""Every file in broken/ gives exactly the problems its ``# expect:`` lines list, in order."""

from __future__ import annotations

from pathlib import Path

import pytest

import dicom_rules

BROKEN = Path(__file__).parent / "broken"
MODELS = {
    "lung-nodule-seg",
    "lung-nodule-detect",
    "lung-nodule-classify",
    "ct-denoise",
    "cxr-classify",
    "report-text",
}
DESTINATIONS = {"pacs", "viewer"}


def _expected(path: Path) -> list[str]:
    return [
        f"{path}:{line.removeprefix('# expect: ').rstrip()}"
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("# expect: ")
    ]


@pytest.mark.parametrize("path", sorted(BROKEN.glob("*.yaml")), ids=lambda p: p.stem)
def test_broken_rule_file(path: Path) -> None:
    expected = _expected(path)
    assert expected, f"{path.name} has no '# expect:' lines"
    with pytest.raises(dicom_rules.RuleError) as info:
        dicom_rules.load(path, models=MODELS, destinations=DESTINATIONS)
    assert info.value.lines == expected
    assert info.value.path == str(path)
    assert info.value.line == int(expected[0].split(":")[1])


def test_there_are_enough_broken_files() -> None:
    assert len(list(BROKEN.glob("*.yaml"))) >= 20
