"""Workitems as a RIS would send them (DICOM JSON, PS3.18 F.2), for the UPS-RS tests."""

from __future__ import annotations

import copy
from typing import Any

#: Attributes a scheduler gives at creation (the type 1 and 2 rows of PS3.4 Table CC.2.5-3 that
#: ``node.store.ups.REQUIREMENTS`` checks, plus a code for the work and the input study).
BASE: dict[str, Any] = {
    "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
    "00741000": {"vr": "CS", "Value": ["SCHEDULED"]},
    "00741200": {"vr": "CS", "Value": ["MEDIUM"]},
    "00741204": {"vr": "LO", "Value": ["AI lung nodule detection"]},
    "00404005": {"vr": "DT", "Value": ["20261207120000"]},
    "00404041": {"vr": "CS", "Value": ["READY"]},
    "00404018": {
        "vr": "SQ",
        "Value": [
            {
                "00080100": {"vr": "SH", "Value": ["LUNG-AI"]},
                "00080102": {"vr": "SH", "Value": ["99AINODE"]},
                "00080104": {"vr": "LO", "Value": ["Lung nodule detection"]},
            }
        ],
    },
    "00404025": {
        "vr": "SQ",
        "Value": [
            {
                "00080100": {"vr": "SH", "Value": ["AINODE-1"]},
                "00080102": {"vr": "SH", "Value": ["99AINODE"]},
                "00080104": {"vr": "LO", "Value": ["ainode one"]},
            }
        ],
    },
    "00404021": {
        "vr": "SQ",
        "Value": [
            {
                "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.10.543.7.1"]},
                "0020000E": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.10.543.7.2"]},
            }
        ],
    },
    "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.10.543.7.1"]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
    "00100020": {"vr": "LO", "Value": ["PID-0007"]},
    "00100030": {"vr": "DA"},
    "00100040": {"vr": "CS", "Value": ["F"]},
    "0040A370": {
        "vr": "SQ",
        "Value": [{"00080050": {"vr": "SH", "Value": ["ACC-42"]}}],
    },
}

#: What a performer sets before COMPLETED (the final-state rows of Table CC.2.5-3).
PERFORMED: dict[str, Any] = {
    "00741216": {
        "vr": "SQ",
        "Value": [
            {
                "00404028": {"vr": "SQ", "Value": [BASE["00404025"]["Value"][0]]},
                "00404050": {"vr": "DT", "Value": ["20261207120500"]},
                "00404051": {"vr": "DT", "Value": ["20261207121000"]},
                "00404019": {"vr": "SQ", "Value": [BASE["00404018"]["Value"][0]]},
                "00404033": {"vr": "SQ", "Value": []},
            }
        ],
    }
}


def workitem(**changes: Any) -> dict[str, Any]:
    """A copy of ``BASE``: ``TAG={...}`` replaces an attribute, ``TAG=None`` removes it."""
    ds = copy.deepcopy(BASE)
    for key, attr in changes.items():
        tag = key.removeprefix("t")
        if attr is None:
            ds.pop(tag, None)
        else:
            ds[tag] = attr
    return ds
