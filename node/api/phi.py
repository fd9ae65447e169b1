"""Patient data in the studies list and study pages: who may see it, masking, the audit.

``console.phi_roles`` lists the roles that see (and may search by) the PHI columns of a study
(``PHI_FIELDS``: Patient ID, Patient's Name, Accession Number); for every other role they are
masked (``null`` in the API, a dash in the console) and a search by them is refused (403), so a
role without rights cannot probe for a patient either.  Each response that shows PHI is audited
as ``phi.viewed`` (PS3.15 A.5.3.2 "Patient Record"/"DICOM Instances Accessed": actor, the study
UIDs shown, the purpose -- which page or route), with identifiers only: never the values, never
the search terms (only which PHI filters were used).
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request

from node.api.auditing import audit
from node.api.auth import Principal
from node.store.index import StudyQuery

__all__ = [
    "PHI_FIELDS",
    "audit_phi_view",
    "mask",
    "phi_allowed",
    "phi_filters",
    "refuse_phi_search",
]

PHI_FIELDS = ("patient_id", "patient_name", "accession")


def phi_allowed(request: Request) -> bool:
    """True when the caller's role is one of ``console.phi_roles``."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        return False
    roles: list[str] = request.app.state.node.config.console.phi_roles
    return principal.role.value in roles


def mask(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its PHI fields set to None."""
    return {**row, **dict.fromkeys(PHI_FIELDS)} if any(k in row for k in PHI_FIELDS) else row


def phi_filters(query: StudyQuery) -> list[str]:
    """Names of the PHI filters ``query`` uses (for the refusal and the audit; no values)."""
    return [name for name in PHI_FIELDS if getattr(query, name) is not None]


def refuse_phi_search(request: Request, used: list[str]) -> None:
    """403 when a caller without PHI rights searches by a PHI field (``used``: their names)."""
    if used and not phi_allowed(request):
        principal: Principal | None = getattr(request.state, "principal", None)
        who = principal.actor if principal is not None else "anonymous"
        role = principal.role.value if principal is not None else "none"
        raise HTTPException(
            403,
            f"{who} has role {role}, which may not search by patient data "
            f"({', '.join(used)}); see console.phi_roles",
        )


def audit_phi_view(
    request: Request, study_uids: list[str], *, purpose: str, filters: list[str] | None = None
) -> None:
    """Record that the caller was shown the PHI of ``study_uids`` (nothing when empty)."""
    if not study_uids:
        return
    one = {"study_uid": study_uids[0]} if len(study_uids) == 1 else {"study_uids": study_uids}
    audit(request, "phi.viewed", purpose=purpose, filters=filters or [], **one)
