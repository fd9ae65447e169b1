"""The one optimisation loop every demo trainer uses, and the evidence-map localisation loss."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["evidence_maps", "fit", "localisation_loss"]

#: ``objective(net, step)`` draws the batch of ``step`` and returns the loss to minimise.
Objective = Callable[[torch.nn.Module, int], torch.Tensor]


def fit(
    net: torch.nn.Module,
    objective: Objective,
    *,
    steps: int,
    lr: float,
    tag: str,
    pct_start: float = 0.1,
    log_every: int = 100,
) -> torch.nn.Module:
    """Train ``net`` with Adam and a one-cycle learning rate; returns it in eval mode.

    Parameters
    ----------
    net
        The network (trained in place).
    objective
        Draws the batch of a step and returns its loss.
    steps
        Optimisation steps.
    lr
        Peak learning rate of the one-cycle schedule.
    tag
        Prefix of the progress lines printed every ``log_every`` steps.
    pct_start
        Share of the steps spent warming up.
    log_every
        Progress line interval.

    Returns
    -------
    torch.nn.Module
        ``net``, in eval mode.
    """
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=steps, pct_start=pct_start
    )
    t0 = time.perf_counter()
    net.train()
    for step in range(steps):
        opt.zero_grad()
        loss = objective(net, step)
        loss.backward()  # type: ignore[no-untyped-call]  # torch stub gap
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            print(
                f"{tag} step {step} loss {loss.item():.4f} t={time.perf_counter() - t0:.0f}s",
                flush=True,
            )
    net.eval()
    return net


def evidence_maps(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-location class evidence ``(N, 2, h, w)`` of an evidence-map classifier and its logits.

    The classifiers (``cxr_classify.CxrNet``, ``lung_nodule_classify.PatchCNN``) compute
    ``classmap(features(x))`` and take the global maximum per class, centred over the classes.
    """
    maps: torch.Tensor = net.classmap(net.features(x))  # type: ignore[operator]
    peak = maps.amax(dim=(2, 3))
    return maps, peak - peak.mean(dim=1, keepdim=True)


def localisation_loss(
    maps: torch.Tensor, labels: torch.Tensor, lesion: torch.Tensor, has_lesion: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the spatial softmax of the true class's evidence against the lesion.

    The evidence of the true class over the other (what Grad-CAM on ``classmap`` shows, see
    ``_common.minmax_normalise``) is turned into a distribution over locations; the loss is
    ``-log`` of its mass inside the lesion.  It depends only on where the evidence lies, not on
    its level, so it does not fight the classification loss.

    Parameters
    ----------
    maps
        Evidence maps ``(N, 2, h, w)``.
    labels
        True class per sample ``(N,)``.
    lesion
        Lesion masks ``(N, H, W)`` on the input grid (``H``, ``W`` multiples of ``h``, ``w``).
    has_lesion
        Which samples have a lesion ``(N,)`` (others do not contribute).

    Returns
    -------
    torch.Tensor
        Scalar loss (0 when no sample has a lesion).
    """
    if not bool(has_lesion.any()):
        return maps.sum() * 0.0
    n, _, h, w = maps.shape
    idx = torch.arange(n)
    evidence = maps[idx, labels] - maps[idx, 1 - labels]
    cell = F.adaptive_max_pool2d(lesion.float().unsqueeze(1), (h, w)).reshape(n, -1)
    logp = torch.log_softmax(evidence.reshape(n, -1), dim=1)
    inside = torch.logsumexp(logp.masked_fill(cell < 0.5, -1e4), dim=1)
    return -(inside[has_lesion]).mean()
