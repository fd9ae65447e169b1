"""Built-in models (placeholder: the demo models arrive from the demo-models branch at merge)."""

from __future__ import annotations

from node.models.base import Model

__all__ = ["builtin_models"]


def builtin_models() -> list[Model]:
    """The models shipped with ainode."""
    return []
