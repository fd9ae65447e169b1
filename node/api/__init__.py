"""The HTTP API (FastAPI): REST under ``/api``, STOW-RS under ``/dicom-web``, problem JSON.

``create_app`` is imported on first use, so a CLI command that needs one helper of this package
(``ainode users`` hashes a password with ``node.api.auth``) does not build every router.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from node.api.app import create_app

        return create_app
    raise AttributeError(f"module 'node.api' has no attribute {name!r}")
