"""Test models that misbehave (or are just slow) on purpose, offered to a real node through
the ``ainode.models`` entry-point group.

``install(folder)`` writes a minimal ``*.dist-info`` (METADATA + entry_points.txt) into
``folder``; a node started with ``folder`` as its working directory has it on ``sys.path`` (``python
-m`` puts the working directory first, and spawned workers inherit the parent's ``sys.path``), so
``importlib.metadata`` finds these entry points exactly as it finds an installed package's.  The
classes themselves are imported from this module (``PYTHONPATH`` = repository root).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from node.models.base import Model, ModelInfo, OutputKind, Task
from node.types import Code, Prediction, SegmentDescription, Volume

__all__ = ["MODELS", "install"]


def _info(name: str) -> ModelInfo:
    return ModelInfo(
        name=name,
        version="0.1",
        task=Task.SEGMENTATION,
        outputs=(OutputKind.LABEL_MAP,),
        modalities=("CT",),
        dims=(3,),
        is_demo=True,
        description="test model that misbehaves on purpose",
    )


class RaisingModel(Model):
    info = _info("misbehave-raise")

    def predict(self, volume: Volume) -> Prediction:
        raise RuntimeError("misbehaving model raised on purpose")


class HangingModel(Model):
    info = _info("misbehave-hang")

    def predict(self, volume: Volume) -> Prediction:
        time.sleep(3600)
        raise AssertionError("not reached")


class ExitingModel(Model):
    info = _info("misbehave-exit")

    def predict(self, volume: Volume) -> Prediction:
        os._exit(7)


class SelfKillingModel(Model):
    info = _info("misbehave-sigkill")

    def predict(self, volume: Volume) -> Prediction:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
        raise AssertionError("not reached")


class SlowModel(Model):
    """Labels HU >= -600 as 'Body' after sleeping ``SLOW_SECONDS`` (a job surely running)."""

    info = _info("slow-body")

    def predict(self, volume: Volume) -> Prediction:
        time.sleep(SLOW_SECONDS)
        return Prediction(
            model_name=self.info.name,
            model_version=self.info.version,
            task=self.info.task.value,
            is_demo=True,
            label_map=(np.asarray(volume.voxels) >= -600).astype(np.uint8),
            segments=(
                SegmentDescription(
                    label=1,
                    name="Body",
                    category=Code("91723000", "SCT", "Anatomical Structure"),
                    property_type=Code("38266002", "SCT", "Entire body"),
                ),
            ),
        )


SLOW_SECONDS = 4.0

#: misbehaving models: entry-point name -> class name in this module
MODELS = {
    "misbehave-raise": "RaisingModel",
    "misbehave-hang": "HangingModel",
    "misbehave-exit": "ExitingModel",
    "misbehave-sigkill": "SelfKillingModel",
}


def install(folder: Path) -> Path:
    """Write ``folder/ainode_misbehaving-0.1.dist-info`` declaring the models above."""
    dist = folder / "ainode_misbehaving-0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ainode-misbehaving\nVersion: 0.1\n", encoding="utf-8"
    )
    every = {**MODELS, "slow-body": "SlowModel"}
    lines = [f"{name} = {__name__}:{cls}" for name, cls in every.items()]
    (dist / "entry_points.txt").write_text(
        "[ainode.models]\n" + "\n".join(lines) + "\n", encoding="utf-8"
    )
    return dist
