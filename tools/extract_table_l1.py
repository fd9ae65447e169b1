"""Extract PS3.16 Annex L Table L-1 (Body Part Examined terms) into tools/data/table-l1.tsv.

The body-part table takes Table L-1 from highdicom (tools/generate_body_parts.py); this file is
an independent cross-check of highdicom's copy (tests/dicom_rules/test_bodypart_standard.py).
Two other public copies are read here and only what they agree on is written (data, not code):

* the table itself, one row per term with its SNOMED CT code and the table's code meaning:
  ``allowedBodyParts`` in ``anonymize.cxx`` of mmiv-center/DICOMAnonymizer (H. Bartsch; public
  domain, The Unlicense), the first block of that array (from ABDOMEN to ZYGOMA; the blocks
  after it repeat terms of other PS3.16 tables);
* the list of terms: ``BODY_PARTS`` in ``dcm4chee-arc-ui2/src/app/constants/globalvar.ts`` of
  dcm4che/dcm4chee-arc-light (MPL 1.1 / GPL 2 / LGPL 2.1), whose archive UI offers them as
  Body Part Examined values.

A row is written when both list the term and the SNOMED CT code is one that pydicom's concept
tables (generated from the standard) know; the ``dcm4chee`` column says the second source agrees.
Rows left out are printed with the reason.

Usage: ``python tools/extract_table_l1.py ANONYMIZE_CXX GLOBALVAR_TS --anonymizer-commit SHA
--dcm4chee-commit SHA``
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from pydicom.sr._concepts_dict import concepts

OUT = Path(__file__).resolve().parent / "data" / "table-l1.tsv"

_ROW = re.compile(r'\{"(\w*)", "(\w*)", "([^"]*)", "([0-9A-Z]*)"\}')
_DCM4CHEE = re.compile(r"'([0-9A-Z]+)': \$localize `:@@[^:]*:([^`]*)`")


def _table(source: str) -> list[tuple[str, str, str, str]]:
    """(scheme, code, meaning, term) rows of the first block of ``allowedBodyParts``."""
    start = source.index("allowedBodyParts")
    rows = _ROW.findall(source[start : source.index("});", start)])
    rows = [r for r in rows if r[3] != "BODYPART"]  # the project's own fallback row
    end = next(i for i, r in enumerate(rows) if r[3] == "ZYGOMA")
    return rows[: end + 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("anonymizer", type=Path, help="anonymize.cxx of DICOMAnonymizer")
    parser.add_argument("dcm4chee", type=Path, help="globalvar.ts of dcm4chee-arc-light")
    parser.add_argument("--anonymizer-commit", default="unknown")
    parser.add_argument("--dcm4chee-commit", default="unknown")
    args = parser.parse_args()
    ui = args.dcm4chee.read_text(encoding="utf-8")
    ui = ui[ui.index("get BODY_PARTS") : ui.index("get OPTIONS")]
    listed = dict(_DCM4CHEE.findall(ui))
    known = {code for entries in concepts["SCT"].values() for code in entries}
    rows, left_out = [], []
    for scheme, code, meaning, term in _table(args.anonymizer.read_text(encoding="utf-8")):
        if not term:
            continue  # a Table L-1 code without a Body Part Examined term
        if scheme != "SCT" or code not in known:
            left_out.append(f"{term}: code {scheme or '-'} {code or '-'} not in pydicom's SCT")
        elif term not in listed:
            left_out.append(f"{term}: not in dcm4chee-arc-light's list")
        else:
            rows.append((term, code, meaning))
    if len(rows) < 250:
        raise SystemExit(f"only {len(rows)} terms found: has a source's layout changed?")
    header = [
        "# PS3.16 Annex L Table L-1: Body Part Examined term, SNOMED CT code, the table's code",
        "# meaning; written by tools/extract_table_l1.py from two public copies that agree:",
        "# table: github.com/mmiv-center/DICOMAnonymizer anonymize.cxx (allowedBodyParts, first "
        "block),",
        f"#   commit {args.anonymizer_commit}; public domain (The Unlicense)",
        "# terms: github.com/dcm4che/dcm4chee-arc-light "
        "dcm4chee-arc-ui2/src/app/constants/globalvar.ts",
        f"#   (BODY_PARTS), commit {args.dcm4chee_commit}; MPL 1.1 / GPL 2 / LGPL 2.1",
        "# codes: each one checked against pydicom's SNOMED CT concept tables",
        "term\tcode\tmeaning",
    ]
    body = [f"{t}\t{c}\t{m}" for t, c, m in sorted(rows)]
    OUT.write_text("\n".join(header + body) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(rows)} terms")
    for reason in left_out:
        print(f"left out: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
