"""ainode: an AI node for radiology departments."""

__version__ = "0.1.0"
__all__ = ["__version__"]
