"""The built-in demo models (trained in-repo on synthetic phantoms; not for clinical use).

``builtin_models()`` instantiates all seven cheaply: weights load lazily on the first ``predict``.
"""

from __future__ import annotations

from node.models.base import Model

__all__ = ["BUILTIN_NAMES", "builtin_models"]

BUILTIN_NAMES = (
    "lung-nodule-seg",
    "lung-nodule-detect",
    "lung-nodule-classify",
    "ct-denoise",
    "cxr-classify",
    "report-text",
    "chest-ct-register",
)


def builtin_models() -> list[Model]:
    """One instance of every built-in model, in ``BUILTIN_NAMES`` order.

    The lung models share one segmentation network (detect -> classify -> report reuse it), so
    running several of them in one process loads the weights once.
    """
    from node.models.builtin.ct_denoise import CtDenoiser
    from node.models.builtin.ct_register import ChestCtRegistration
    from node.models.builtin.cxr_classify import CxrClassifier
    from node.models.builtin.lung_nodule_classify import LungNoduleClassifier
    from node.models.builtin.lung_nodule_detect import LungNoduleDetection
    from node.models.builtin.lung_nodule_seg import LungNoduleSegmentation
    from node.models.builtin.report_text import ReportText

    seg = LungNoduleSegmentation()
    detect = LungNoduleDetection(seg)
    classify = LungNoduleClassifier(detect)
    return [
        seg,
        detect,
        classify,
        CtDenoiser(),
        CxrClassifier(),
        ReportText(classify),
        ChestCtRegistration(),
    ]
