#!/usr/bin/env python3
"""Write (or check) tests/corpus/MANIFEST: per corpus file its SHA-256, size and licence.

Usage: tools/corpus_manifest.py [--check]

The licence of a file follows from its source repository (column ``source_repo`` of
tests/corpus/manifest.csv); the licence texts are in tests/corpus/LICENSES/ and the provenance of
every folder is in tests/corpus/MANIFEST.md.  After adding a file to the corpus, add its row to
manifest.csv and a section to MANIFEST.md, then run this script and commit the new MANIFEST.
``--check`` exits 1 (and says why) when MANIFEST does not match the files.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus"
# the metadata files themselves are not listed
META = {"MANIFEST", "MANIFEST.md", "manifest.csv"}
LICENCE_OF_REPO = {
    "huyenbui117/lung_CT": "TCIA-Lung-PET-CT-Dx-CC-BY-4.0.txt",
    "cornerstonejs/cornerstoneWADOImageLoader": "cornerstoneWADOImageLoader-LICENSE.txt",
    "neurolabusc/dcm_qa_ge": "dcm_qa_ge-LICENSE.txt",
    "neurolabusc/dcm_qa_enh": "dcm_qa_enh-LICENSE.txt",
    "pydicom/pydicom": "pydicom-LICENSE.txt",
    "pydicom/pydicom-data": "pydicom-data-LICENSE.txt",
    "orthanc-mirrors/orthanc-tests": "orthanc-tests-COPYING-GPLv3.txt",
    "QIICR/dcmqi": "dcmqi-LICENSE.txt",
    "ImagingDataCommons/highdicom": "highdicom-LICENSE.txt",
    "fo-dicom/fo-dicom": "fo-dicom-License-MS-PL.txt",
    "ckswilliams/modOpenREM (fork of openrem/OpenREM)": "OpenREM-LICENSE.txt",
    "robyoung/dicom-test-files": "dicom-test-files-LICENSE.txt",
}
HEADER = (
    "# ainode test corpus: sha256  bytes  licence (in LICENSES/)  path (relative to this folder)\n"
    "# Provenance per folder: MANIFEST.md; per file: manifest.csv.\n"
    "# Regenerate: tools/corpus_manifest.py\n"
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_files(corpus: Path = CORPUS) -> list[str]:
    """Every corpus file but LICENSES/ and the metadata files, as sorted relative paths."""
    return sorted(
        p.relative_to(corpus).as_posix()
        for p in corpus.rglob("*")
        if p.is_file() and p.name not in META and "LICENSES" not in p.relative_to(corpus).parts
    )


def render(corpus: Path = CORPUS) -> str:
    with (corpus / "manifest.csv").open(encoding="utf-8") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    lines = [HEADER]
    for rel in data_files(corpus):
        if rel not in rows:
            raise SystemExit(f"{rel}: not in manifest.csv (add its provenance row first)")
        licence = LICENCE_OF_REPO.get(rows[rel]["source_repo"])
        if licence is None or not (corpus / "LICENSES" / licence).is_file():
            raise SystemExit(f"{rel}: no licence text for source {rows[rel]['source_repo']!r}")
        path = corpus / rel
        lines.append(f"{sha256(path)}  {path.stat().st_size}  {licence}  {rel}\n")
    return "".join(lines)


def main(argv: list[str]) -> int:
    text = render()
    target = CORPUS / "MANIFEST"
    if argv[1:] == ["--check"]:
        if target.read_text(encoding="utf-8") != text:
            print(f"{target}: out of date; run tools/corpus_manifest.py")
            return 1
        return 0
    if argv[1:]:
        print(__doc__)
        return 2
    target.write_text(text, encoding="utf-8")
    print(f"{target}: {text.count(chr(10)) - 3} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
