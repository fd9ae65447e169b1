"""``chest-ct-register``: learned affine registration of a prior chest CT onto the current one.

A keypoint network (``KeypointAffine``, after KeyMorph) reads the prior ("moving") and the
current ("fixed") CT, each resampled onto a 48 x 48 x 48 grid of 5 mm slices and 7.5 mm pixels
(240 x 360 x 360 mm) centred on its own volume, and returns the affine between the two grids.
``register`` can run a cascade of passes (``stages``: each pass resamples the prior through the
estimate so far and composes the network's residual onto it); the default is two coarse
passes: on validation pairs the finer passes (3 x 4 x 4 mm grids) made the estimate worse with
the committed weights, a second coarse pass better (docs/followup.md).  The result is a 4 x 4
matrix mapping prior patient coordinates (mm) onto current patient coordinates: what a DICOM Spatial
Registration's Frame of Reference Transformation Matrix holds (PS3.3 C.20.2.1.1).

Trained in the repository on synthetic follow-up pairs with known transforms
(``python -m training chest-ct-register``); not for clinical use.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from monai.networks.nets.unet import UNet

from node.errors import ModelError
from node.models.base import Model, ModelInfo, OutputKind, Task
from node.models.builtin._common import ASSETS, LazyNet, heldout_metrics, load_card
from node.models.builtin.ct_refine import LEVELS, Level, refine_affine
from node.types import Prediction, PriorInput, RegisteredSeries, Registration, Volume

__all__ = [
    "GRID_SHAPE",
    "COARSE_SPACING",
    "FINE_SPACING",
    "NAME",
    "STAGES",
    "VERSION",
    "ChestCtRegistration",
    "KeypointAffine",
    "N_KEYPOINTS",
    "build_network",
    "grid_to_patient",
    "matrix_type",
    "network_input",
    "predict_theta",
    "sample_on_grid",
    "weights_path",
]

NAME = "chest-ct-register"
VERSION = "1.0.0"
#: Network grid (slice, row, column).
GRID_SHAPE = (48, 48, 48)
#: Grid spacing (slice, row, column) in mm of the coarse and the fine passes.
COARSE_SPACING = (5.0, 7.5, 7.5)
FINE_SPACING = (3.0, 4.0, 4.0)
#: Grid spacing of each cascaded pass at inference.
STAGES = (COARSE_SPACING, COARSE_SPACING)
#: Keypoints per image.
N_KEYPOINTS = 24

FloatMatrix = npt.NDArray[np.float64]


class KeypointAffine(torch.nn.Module):
    """Affine between two grids from learned keypoints (KeyMorph-style; Evan Yu et al. 2022).

    A MONAI UNet, shared by both images, gives ``n_keypoints`` heat-maps per image; the spatial
    softmax of each is a keypoint (expected grid index, sub-voxel).  The affine that maps the
    fixed keypoints onto the moving ones is solved in closed form (least squares, ridge towards
    the identity so collapsed keypoints give a translation), which is differentiable: training
    supervises the displacement field of the solved affine.
    """

    coords: torch.Tensor
    centre: torch.Tensor

    def __init__(
        self, n_keypoints: int = N_KEYPOINTS, ridge: float = 10.0, sharpness: float = 10.0
    ) -> None:
        super().__init__()
        self.sharpness = sharpness  # logits scale: heat-maps can peak from the first steps
        self.unet = UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=n_keypoints,
            channels=(8, 16, 32, 32),
            strides=(2, 2, 2),
            num_res_units=0,
        )
        self.ridge = ridge
        centre = (torch.tensor(GRID_SHAPE, dtype=torch.float32) - 1) / 2.0
        axes = [torch.arange(n, dtype=torch.float32) for n in GRID_SHAPE]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(3, -1)
        self.register_buffer("coords", coords - centre[:, None], persistent=False)
        self.register_buffer("centre", centre, persistent=False)

    def keypoints(self, image: torch.Tensor) -> torch.Tensor:
        """(N, K, 3) keypoints, grid indices relative to the grid centre."""
        heat = self.unet(image).flatten(2) * self.sharpness
        weights = torch.softmax(heat, dim=-1)
        out: torch.Tensor = weights @ self.coords.T
        return out

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """(N, 4, 4) affine from fixed-grid indices to moving-grid indices."""
        kf = self.keypoints(fixed)
        km = self.keypoints(moving)
        xf = torch.cat([kf, torch.ones_like(kf[..., :1])], dim=-1)  # (N, K, 4)
        gram = xf.transpose(1, 2) @ xf + self.ridge * torch.eye(4, dtype=xf.dtype)
        delta = torch.linalg.solve(gram, xf.transpose(1, 2) @ (km - kf))  # (N, 4, 3)
        n = moving.shape[0]
        centred = torch.eye(4, dtype=xf.dtype).repeat(n, 1, 1)
        centred[:, :3, :3] += delta[:, :3, :].transpose(1, 2)
        centred[:, :3, 3] = delta[:, 3, :]
        shift = torch.eye(4, dtype=xf.dtype)
        shift[:3, 3] = self.centre
        unshift = torch.eye(4, dtype=xf.dtype)
        unshift[:3, 3] = -self.centre
        out: torch.Tensor = shift @ centred @ unshift
        return out


def build_network() -> torch.nn.Module:
    """The keypoint affine network (MONAI UNet backbone, 24 keypoints)."""
    return KeypointAffine()


def _volume_index_to_patient(volume: Volume) -> FloatMatrix:
    """4 x 4 map of (slice, row, column, 1) indices to patient (x, y, z, 1) mm."""
    d = np.asarray(volume.direction, dtype=np.float64)
    sz, sy, sx = volume.spacing
    out = np.eye(4)
    # columns: slice index -> normal * sz, row index -> column cosine * sy, column -> row cosine
    out[:3, 0] = d[2] * sz
    out[:3, 1] = d[1] * sy
    out[:3, 2] = d[0] * sx
    out[:3, 3] = volume.origin
    return out


def grid_to_patient(volume: Volume, spacing: tuple[float, float, float]) -> FloatMatrix:
    """4 x 4 map of network-grid (slice, row, column) indices to the patient mm of ``volume``.

    The grid is axis-aligned with the volume, spaced ``spacing`` mm and centred on it.
    """
    vol = _volume_index_to_patient(volume)
    shape = np.asarray(volume.voxels.shape, dtype=np.float64)
    centre = vol @ np.append((shape - 1) / 2.0, 1.0)
    out = np.eye(4)
    for k in range(3):
        axis = vol[:3, k] / np.linalg.norm(vol[:3, k])
        out[:3, k] = axis * spacing[k]
    grid_centre = (np.asarray(GRID_SHAPE, dtype=np.float64) - 1) / 2.0
    out[:3, 3] = centre[:3] - out[:3, :3] @ grid_centre
    return out


def sample_on_grid(volume: Volume, grid: FloatMatrix) -> torch.Tensor:
    """HU of ``volume`` at the points of the network grid ``grid`` (grid index -> patient mm).

    The volume is first block-averaged to about the grid spacing (anti-aliasing), then sampled
    trilinearly; points outside are air (-1000 HU).  Returns a (1, 1, *GRID_SHAPE) tensor.
    """
    vox = torch.as_tensor(np.ascontiguousarray(volume.voxels), dtype=torch.float32)
    grid_spacing = np.linalg.norm(grid[:3, :3], axis=0)
    factors = tuple(max(1, int(g // s)) for g, s in zip(grid_spacing, volume.spacing, strict=True))
    index_to_patient = _volume_index_to_patient(volume)
    if factors != (1, 1, 1):
        vox = F.avg_pool3d(vox[None, None], kernel_size=factors, stride=factors, ceil_mode=True)[
            0, 0
        ]
        pooled = np.eye(4)
        pooled[:3, :3] = index_to_patient[:3, :3] @ np.diag(factors)
        pooled[:3, 3] = index_to_patient[:3, 3] + index_to_patient[:3, :3] @ (
            (np.asarray(factors) - 1) / 2.0
        )
        index_to_patient = pooled
    to_index = np.linalg.inv(index_to_patient) @ grid  # grid index -> volume index
    n = np.asarray(vox.shape, dtype=np.float64)
    # grid_sample wants normalised (x=column, y=row, z=slice) in [-1, 1] (align_corners=True)
    norm = np.diag(np.append(2.0 / np.maximum(n - 1, 1), 1.0))
    norm[:3, 3] = -1.0
    m = torch.as_tensor((norm @ to_index)[[2, 1, 0], :], dtype=torch.float32)  # -> (x, y, z)
    axes = (torch.arange(s, dtype=torch.float32) for s in GRID_SHAPE)
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    pts = torch.stack([zz, yy, xx, torch.ones_like(xx)], dim=-1)  # (D, H, W, 4)
    coords = pts @ m.T
    out = F.grid_sample(
        (vox + 1000.0)[None, None], coords[None], mode="bilinear", padding_mode="zeros",
        align_corners=True,
    )  # fmt: skip
    return out - 1000.0


def network_input(hu: torch.Tensor) -> torch.Tensor:
    """Network input of a HU grid: clipped to [-1000, 500] and scaled to [0, 1]."""
    return (hu.clamp(-1000.0, 500.0) + 1000.0) / 1500.0


def predict_theta(
    net: torch.nn.Module, moving: torch.Tensor, fixed: torch.Tensor
) -> list[FloatMatrix]:
    """The network's affine (fixed-grid index -> moving-grid index) per batch item, 4 x 4."""
    theta = net(network_input(moving), network_input(fixed))
    return [np.asarray(m, dtype=np.float64) for m in theta.detach().double().numpy()]


def matrix_type(matrix: FloatMatrix, *, tolerance: float = 1e-4) -> str:
    """Frame of Reference Transformation Matrix Type of an affine (PS3.3 C.20.2.1.2).

    ``RIGID`` when the 3 x 3 part is orthonormal with determinant +1, ``RIGID_SCALE`` when it is
    a rotation times a uniform scale, ``AFFINE`` otherwise.
    """
    lin = np.asarray(matrix, dtype=np.float64)[:3, :3]
    gram = lin.T @ lin
    scale2 = float(np.trace(gram)) / 3.0
    if np.linalg.det(lin) > 0 and np.allclose(gram, np.eye(3) * scale2, atol=tolerance * scale2):
        return "RIGID" if abs(scale2 - 1.0) <= tolerance else "RIGID_SCALE"
    return "AFFINE"


def weights_path() -> Path:
    """Where the committed weights live."""
    return ASSETS / NAME / "weights.pt"


class ChestCtRegistration(Model):
    """The demo registration model: ``register(moving, fixed) -> Registration``.

    As a node model it reads priors (``uses_prior``): a job of a rule with ``priors`` runs
    ``predict_with_prior`` on the current series and the newest fetched prior series, and its
    ``Prediction.registration`` becomes a Spatial Registration.  Without a prior it produces
    nothing (the job records why).
    """

    name = NAME
    version = VERSION
    is_demo = True
    uses_prior = True

    def __init__(self) -> None:
        self.info = ModelInfo(
            name=NAME,
            version=VERSION,
            task=Task.REGISTRATION,
            outputs=(OutputKind.REGISTRATION,),
            modalities=("CT",),
            body_parts=("CHEST",),
            dims=(3,),
            is_demo=True,
            description=(
                "Prior -> current chest CT affine registration: keypoint network + intensity "
                "refinement (demo, synthetic data); needs a rule with priors"
            ),
            card=load_card(NAME),
            metrics=heldout_metrics(NAME),
            min_slices=4,
        )
        self._net = LazyNet(NAME, build_network)

    def _prediction(self, registration: Registration | None) -> Prediction:
        return Prediction(
            model_name=NAME,
            model_version=VERSION,
            task=Task.REGISTRATION.value,
            is_demo=True,
            registration=registration,
            timings_seconds=dict(registration.timings_seconds) if registration else {},
        )

    def predict(self, volume: Volume) -> Prediction:
        """One series alone: nothing to register (a job without a prior produces no object)."""
        return self._prediction(None)

    def predict_with_prior(
        self, volume: Volume, prior: PriorInput | None, prior_reason: str | None
    ) -> Prediction:
        """Register the prior series onto ``volume``; no registration when ``prior`` is None.

        Raises
        ------
        ModelError
            A volume is not 3D CT.
        """
        if prior is None:
            return self._prediction(None)
        registration = self.register(prior.volume, volume)
        return self._prediction(replace(registration, moving=RegisteredSeries.of(prior.volume)))

    @property
    def card(self) -> str:
        """The model card text."""
        return load_card(NAME)

    def register(
        self,
        moving: Volume,
        fixed: Volume,
        *,
        stages: tuple[tuple[float, float, float], ...] = STAGES,
        refine: tuple[Level, ...] = LEVELS,
    ) -> Registration:
        """Register ``moving`` (prior) onto ``fixed`` (current).

        Parameters
        ----------
        moving, fixed
            3D CT volumes (HU) with their geometry; any spacing and orientation.
        stages
            Grid spacing of each cascaded network pass.
        refine
            Levels of the intensity-based refinement that starts from the network's estimate
            (``node.models.builtin.ct_refine``); ``()``: the network alone.

        Returns
        -------
        Registration
            The moving -> fixed affine in patient mm.

        Raises
        ------
        ModelError
            A volume is not 3D CT, or the weights are missing.
        """
        for role, vol in (("moving", moving), ("fixed", fixed)):
            if not vol.is_3d or vol.voxels.ndim != 3 or min(vol.voxels.shape) < 4:
                raise ModelError(
                    f"{NAME}: the {role} series is not a 3D volume of at least 4 slices "
                    f"(shape {tuple(vol.voxels.shape)}); register CT series only"
                )
            if vol.modality not in (None, "CT"):
                raise ModelError(f"{NAME}: the {role} series is {vol.modality}, not CT")
        t0 = time.perf_counter()
        net = self._net.get()
        # fixed -> moving patient map; starts by aligning the two volume centres
        estimate = grid_to_patient(moving, COARSE_SPACING) @ np.linalg.inv(
            grid_to_patient(fixed, COARSE_SPACING)
        )
        t1 = time.perf_counter()
        with torch.no_grad():
            for spacing in stages:
                g_fixed = grid_to_patient(fixed, spacing)
                fixed_grid = sample_on_grid(fixed, g_fixed)
                moving_grid = sample_on_grid(moving, estimate @ g_fixed)
                theta = predict_theta(net, moving_grid, fixed_grid)[0]
                estimate = estimate @ g_fixed @ theta @ np.linalg.inv(g_fixed)
        t2 = time.perf_counter()
        estimate = refine_affine(moving, fixed, estimate, levels=refine)
        t3 = time.perf_counter()
        moving_to_fixed = np.asarray(np.linalg.inv(estimate), dtype=np.float64)
        return Registration(
            moving_to_fixed=moving_to_fixed,
            matrix_type=matrix_type(moving_to_fixed),
            model_name=NAME,
            model_version=VERSION,
            is_demo=True,
            timings_seconds={
                "model.input": t1 - t0,
                "model.network": t2 - t1,
                "model.refine": t3 - t2,
            },
        )
