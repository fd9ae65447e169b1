"""Extract DCMTK's Body Part Examined -> CID 4031 table into tools/data/dcmtk-annex-l.tsv.

DCMTK (OFFIS, BSD-style licence, tools/data/DCMTK-COPYRIGHT) maps the Body Part Examined
defined terms of PS3.16 Annex L Table L-1 to CID 4031 concepts in
``dcmsr/libcmr/cid4031e.cc`` ("mapping extracted manually from DICOM PS 3.16 ... Table L-1",
maintained by J. Riesmeier) and generates the concepts' codes from the standard in
``dcmsr/libcmr/cid4031.cc``.  This script reads those two files from a DCMTK checkout and writes
one row per term (term, SNOMED CT code, code meaning): data, not code.  The generator
(tools/generate_body_parts.py) takes its Annex L terms from that file.

Usage: ``python tools/extract_dcmtk_body_parts.py DCMTK_CHECKOUT [--commit SHA]``
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "dcmtk-annex-l.tsv"

_MAP = re.compile(r'\{"([A-Z0-9]+)",\s+CID4031_CommonAnatomicRegion::(\w+)\}')
_CODE = re.compile(r'OFMake_pair\((\w+), DSRBasicCodedEntry\("([^"]+)", "SCT", "([^"]+)"\)\)')
_EDITION = re.compile(r"PS 3\.16-(\d{4}[a-z])")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dcmtk", type=Path, help="a DCMTK source checkout")
    parser.add_argument("--commit", default="", help="the checkout's commit (for provenance)")
    args = parser.parse_args()
    mapping_src = (args.dcmtk / "dcmsr/libcmr/cid4031e.cc").read_text(encoding="utf-8")
    codes_src = (args.dcmtk / "dcmsr/libcmr/cid4031.cc").read_text(encoding="utf-8")
    codes = {name: (code, meaning) for name, code, meaning in _CODE.findall(codes_src)}
    rows = []
    for term, name in _MAP.findall(mapping_src):
        if name not in codes:
            raise SystemExit(f"{term}: {name} has no SNOMED CT code in cid4031.cc")
        rows.append((term, *codes[name]))
    if len(rows) < 50:
        raise SystemExit(f"only {len(rows)} terms found: has the file's layout changed?")
    header = [
        "# Body Part Examined defined term -> CID 4031 concept, from DCMTK (OFFIS e.V.; licence:",
        "# tools/data/DCMTK-COPYRIGHT), written by tools/extract_dcmtk_body_parts.py.",
        f"# commit: {args.commit or 'unknown'}",
        "# terms: dcmsr/libcmr/cid4031e.cc, 'mapping extracted manually from DICOM PS 3.16-"
        f"{_EDITION.search(mapping_src).group(1) if _EDITION.search(mapping_src) else '?'}"
        " Table L-1'",
        "# codes: dcmsr/libcmr/cid4031.cc, generated from DICOM PS 3.16-"
        f"{_EDITION.search(codes_src).group(1) if _EDITION.search(codes_src) else '?'}",
        "term\tcode\tmeaning",
    ]
    body = [f"{t}\t{c}\t{m}" for t, c, m in rows]
    OUT.write_text("\n".join(header + body) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(rows)} terms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
