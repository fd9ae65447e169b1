"""The test corpus in tests/corpus is complete, unchanged and licensed: every file is listed in
MANIFEST with its SHA-256, size and licence text, and every listed file is there byte for byte."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

from tests.conftest import CORPUS

META = {"MANIFEST", "MANIFEST.md", "manifest.csv"}


def _manifest() -> dict[str, tuple[str, int, str]]:
    entries: dict[str, tuple[str, int, str]] = {}
    for number, line in enumerate((CORPUS / "MANIFEST").read_text("utf-8").splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        digest, size, licence, rel = line.split("  ", 3)
        assert rel not in entries, f"MANIFEST:{number}: {rel} listed twice"
        entries[rel] = (digest, int(size), licence)
    return entries


def _on_disk() -> set[str]:
    return {
        p.relative_to(CORPUS).as_posix()
        for p in CORPUS.rglob("*")
        if p.is_file() and p.name not in META and p.relative_to(CORPUS).parts[0] != "LICENSES"
    }


def test_corpus_fixture_is_inside_the_repository(corpus: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    assert corpus.resolve().is_relative_to(root)
    assert (corpus / "ct" / "chest-ct-siemens-sensation10-b40f-30sl").is_dir()


def test_every_file_is_listed_and_every_listed_file_exists() -> None:
    listed, present = set(_manifest()), _on_disk()
    assert not present - listed, f"not in tests/corpus/MANIFEST: {sorted(present - listed)}"
    assert not listed - present, f"listed but absent: {sorted(listed - present)}"
    assert len(listed) == 107


def test_every_checksum_and_size_matches() -> None:
    bad = []
    for rel, (digest, size, _) in _manifest().items():
        data = (CORPUS / rel).read_bytes()
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            bad.append(rel)
    assert not bad, f"changed corpus files (sha256/size differ from MANIFEST): {bad}"


def test_every_file_has_a_licence_text_and_a_provenance_row() -> None:
    with (CORPUS / "manifest.csv").open(encoding="utf-8") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    for rel, (_, _, licence) in _manifest().items():
        assert (CORPUS / "LICENSES" / licence).is_file(), f"{rel}: licence {licence} missing"
        assert rel in rows, f"{rel}: no provenance row in manifest.csv"
        assert rows[rel]["source_repo"] and rows[rel]["source_commit"], rel


def test_manifest_is_what_the_generator_writes() -> None:
    script = Path(__file__).resolve().parent.parent / "tools" / "corpus_manifest.py"
    proc = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
