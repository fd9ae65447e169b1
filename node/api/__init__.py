"""The HTTP API (FastAPI): REST under ``/api``, STOW-RS under ``/dicom-web``, problem JSON."""

from node.api.app import create_app

__all__ = ["create_app"]
