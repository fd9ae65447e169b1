"""What MONAI's RetinaNet detector needs from torchvision, when torchvision cannot load.

MONAI's detection networks (``monai.apps.detection``) take exactly one function from torchvision
at inference: ``torchvision.models.detection.backbone_utils._validate_trainable_layers``, called
by ``resnet_fpn_feature_extractor`` to check how many backbone layers stay trainable (an
argument check that returns an int; no tensor is touched).  ``Matcher`` and
``BalancedPositiveNegativeSampler`` are training-only.  MONAI imports the function with
``optional_import``, so without torchvision the import silently yields a stub that raises when
the network is built.

PyPI's torchvision wheels for Linux x86-64 are CUDA builds: against a CPU build of torch their
compiled ops fail to load (``libtorch_cuda.so`` is missing) and ``import torchvision`` raises
``RuntimeError: operator torchvision::nms does not exist``.  With CUDA torch on a GPU machine
(or the CPU wheel from the PyTorch index), the real torchvision installs and imports; then it is
used and nothing here runs.

``ensure_detection_support()`` is the last resort of issue 16: when the real function cannot be
imported, MONAI's module-level stub is replaced by ``validate_trainable_layers`` below, written
from torchvision's documented contract, in the worker process only.  It is logged once.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["ensure_detection_support", "validate_trainable_layers"]

log = logging.getLogger(__name__)


def validate_trainable_layers(
    is_trained: bool,
    trainable_backbone_layers: int | None,
    max_value: int,
    default_value: int | None,
) -> int:
    """How many backbone layers stay trainable (torchvision's contract).

    An untrained backbone trains all ``max_value`` layers (a given value is overridden with a
    warning); a trained one keeps ``trainable_backbone_layers``, ``default_value`` when None.

    Raises
    ------
    ValueError
        The number is outside ``0..max_value``.
    """
    if not is_trained:
        if trainable_backbone_layers is not None:
            warnings.warn(
                f"trainable_backbone_layers is ignored for an untrained backbone: all "
                f"{max_value} layers stay trainable",
                stacklevel=2,
            )
        trainable_backbone_layers = max_value
    if trainable_backbone_layers is None:
        trainable_backbone_layers = default_value
    if trainable_backbone_layers is None or not 0 <= trainable_backbone_layers <= max_value:
        raise ValueError(
            f"trainable_backbone_layers must be within 0..{max_value}, "
            f"not {trainable_backbone_layers}"
        )
    return trainable_backbone_layers


def ensure_detection_support() -> str:
    """Make MONAI's RetinaNet buildable; returns who serves it: ``torchvision`` or ``ainode``."""
    from monai.apps.detection.networks import retinanet_network
    from monai.utils.module import optional_import

    _, has_real = optional_import(
        "torchvision.models.detection.backbone_utils", name="_validate_trainable_layers"
    )
    if has_real:
        return "torchvision"
    retinanet_network._validate_trainable_layers = validate_trainable_layers
    log.warning("models.torchvision_fallback", extra={"function": "_validate_trainable_layers"})
    return "ainode"
