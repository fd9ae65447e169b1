"""Models: the ``Model`` contract, the registry of every source, runtime helpers, built-ins."""

from node.models.base import Model, ModelInfo, OutputKind, Task

__all__ = ["Model", "ModelInfo", "OutputKind", "Task"]
