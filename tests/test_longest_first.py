"""The long-files-first order of tests/conftest.py names files that exist (a renamed or split file
would silently lose its place and could start last, capping the parallel run; issue 19 §4)."""

from __future__ import annotations

from tests.conftest import LONGEST_FIRST, ROOT


def test_every_longest_first_entry_is_a_test_file() -> None:
    missing = [name for name in LONGEST_FIRST if not (ROOT / name).is_file()]
    assert missing == [], f"LONGEST_FIRST in tests/conftest.py names missing files: {missing}"
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST), "a file is listed twice"
    assert all(name.rsplit("/", 1)[-1].startswith("test_") for name in LONGEST_FIRST)
