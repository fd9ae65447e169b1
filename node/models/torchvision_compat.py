"""What MONAI's RetinaNet detector needs from torchvision, when torchvision cannot load.

MONAI's RetinaNet (``monai.apps.detection``, the zoo's ``lung_nodule_ct_detection``) takes two
pure-Python pieces of torchvision to build its network; ``Matcher`` and
``BalancedPositiveNegativeSampler`` are used by training only:

* ``torchvision.models.detection.backbone_utils._validate_trainable_layers``, called by
  ``resnet_fpn_feature_extractor`` to check how many backbone layers stay trainable (an
  argument check returning an int; no tensor is touched);
* ``torchvision.models._utils.IntermediateLayerGetter``, the ``nn.ModuleDict`` of the backbone's
  first children that returns the feature maps of chosen layers (its children's names are the
  state-dict keys of a saved detector, ``feature_extractor.body.layer1...``).

MONAI imports both with ``optional_import``, so without torchvision the import silently yields a
stub that raises when the network is built.

PyPI's torchvision wheels for Linux x86-64 are CUDA builds: against a CPU build of torch their
compiled ops fail to load (``libtorch_cuda.so`` is missing) and ``import torchvision`` raises
``RuntimeError: operator torchvision::nms does not exist``.  With CUDA torch on a GPU machine
(or the CPU wheel from the PyTorch index), the real torchvision installs and imports; then it is
used and nothing here runs.

``ensure_detection_support()`` is the last resort of issue 16: when the real torchvision cannot
be imported, MONAI's two module-level stubs are replaced by ``validate_trainable_layers`` and
``IntermediateLayerGetter`` below, written from torchvision's documented contract, in the
process that runs the bundle only (a job's worker, ``ainode predict``).  A warning is logged.
``tests/models/test_bundle_zoo_detection.py`` shows the detector built this way gives MONAI's
answer, and ``tests/models/test_torchvision_compat.py`` pins the two pieces' behaviour.
"""

from __future__ import annotations

import logging
import types
import warnings
from collections import OrderedDict
from typing import Any

import torch

__all__ = ["IntermediateLayerGetter", "ensure_detection_support", "validate_trainable_layers"]

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


class IntermediateLayerGetter(torch.nn.ModuleDict):
    """The children of ``model`` up to the last one named in ``return_layers``, run in order.

    ``forward`` returns ``{return_layers[name]: output of child name}`` for the named children.
    The children keep their names, so state-dict keys are those of torchvision's class.

    Raises
    ------
    ValueError
        A name of ``return_layers`` is not a direct child of ``model``.
    """

    def __init__(self, model: torch.nn.Module, return_layers: dict[str, str]) -> None:
        children = dict(model.named_children())
        missing = set(return_layers) - set(children)
        if missing:
            raise ValueError(f"return_layers {sorted(missing)} are not children of the model")
        wanted = {str(k): str(v) for k, v in return_layers.items()}
        layers: OrderedDict[str, torch.nn.Module] = OrderedDict()
        pending = set(wanted)
        for name, module in children.items():
            layers[name] = module
            pending.discard(name)
            if not pending:
                break
        super().__init__(layers)
        self.return_layers = wanted

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the children in order; collect the outputs of the named ones."""
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


def ensure_detection_support() -> str:
    """Make MONAI's RetinaNet buildable; returns who serves it: ``torchvision`` or ``ainode``."""
    from monai.apps.detection.networks import retinanet_network
    from monai.networks.blocks import backbone_fpn_utils
    from monai.utils.module import optional_import

    _, has_validate = optional_import(
        "torchvision.models.detection.backbone_utils", name="_validate_trainable_layers"
    )
    _, has_getter = optional_import("torchvision.models._utils", name="IntermediateLayerGetter")
    if has_validate and has_getter:
        return "torchvision"
    retinanet_network._validate_trainable_layers = validate_trainable_layers
    models: Any = types.SimpleNamespace(
        _utils=types.SimpleNamespace(IntermediateLayerGetter=IntermediateLayerGetter)
    )
    backbone_fpn_utils.torchvision_models = models
    log.warning("models.torchvision_fallback", extra={"reason": "torchvision cannot be imported"})
    return "ainode"
