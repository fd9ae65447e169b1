"""The prior study of a job, as a model that reads priors gets it (``Model.uses_prior``).

A rule with ``priors`` fetches the patient's prior study before its jobs run
(``node/ingest/priors.py``); each job then carries the outcome (``Job.prior``: the fetched prior
series, newest first, or why there is none).  ``load_prior`` turns that outcome into what
``Model.predict_with_prior`` takes: the newest prior series read as a ``Volume`` the way the
job's own series is read, with ainode's own result objects of the prior study that the node
still holds, or the reason there is no prior.  A prior that cannot be read does not fail the
job: the model runs without it, and the reason says what went wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import AinodeError
from node.jobs.store import JobStore
from node.store.index import Index
from node.types import Job, JobState, PriorInput, PriorState, Volume

__all__ = ["NO_PRIOR_REQUESTED", "LoadedPrior", "load_prior", "prior_result_files"]

log = logging.getLogger(__name__)

#: Reason given to a model that reads priors when its job's rule asks for none.
NO_PRIOR_REQUESTED = "no prior requested: the rule has no 'priors' key"

#: Reads a series' files: (volume, source headers), as the job's own series is read.
SeriesReader = Callable[[Sequence[Path]], tuple[Volume, Any]]


@dataclass(frozen=True, slots=True, eq=False)
class LoadedPrior:
    """The prior a job's model gets: ``prior`` (None: none) and ``reason`` (None: one came).

    ``sources`` are the prior instances' headers (``node.results.SourceSet``), for the result
    gate to resolve references into the prior series.
    """

    prior: PriorInput | None
    reason: str | None
    sources: Any = None

    def to_json(self) -> dict[str, Any]:
        """What the job's outputs record about the prior."""
        if self.prior is None:
            return {"used": False, "reason": self.reason}
        return {
            "used": True,
            "study_uid": self.prior.series.study_uid,
            "series_uid": self.prior.series.series_uid,
            "result_files": len(self.prior.result_files),
        }


def prior_result_files(store: JobStore, study_uid: str, data_dir: Path) -> tuple[Path, ...]:
    """ainode's own result objects of ``study_uid`` that the node still holds on disk.

    The objects listed by the study's succeeded jobs (``outputs.objects``; a job whose results
    were combined lists none, its combine job does), oldest job first, files that retention
    or an operator removed left out.
    """
    out: list[Path] = []
    records = store.list_jobs(study_uid=study_uid, states=[JobState.SUCCEEDED], limit=1000)
    for record in reversed(records):
        if record.superseded_by is not None:
            continue
        for obj in record.outputs.get("objects", []) or []:
            path = Path(str(obj.get("path", "")))
            path = path if path.is_absolute() else data_dir / path
            if path.is_file() and path not in out:
                out.append(path)
    return tuple(out)


def load_prior(job: Job, *, data_dir: Path, read: SeriesReader) -> LoadedPrior:
    """The prior of ``job`` for ``Model.predict_with_prior``.

    Parameters
    ----------
    job
        The job; ``job.prior`` is its rule's prior outcome (None: the rule asks for none).
    data_dir
        The node's data folder (index, stored instances, results).
    read
        Reads a series' files into a ``Volume`` and its source headers.

    Returns
    -------
    LoadedPrior
        The newest fetched prior series (``job.prior.series[0]``) and the prior study's stored
        result objects, or no prior and the reason.
    """
    outcome = job.prior
    if outcome is None:
        return LoadedPrior(None, NO_PRIOR_REQUESTED)
    if outcome.state is not PriorState.FETCHED or not outcome.series:
        return LoadedPrior(None, outcome.reason or "no prior available")
    series = outcome.series[0]
    index = Index(data_dir / "index.sqlite")
    try:
        instances = index.series_instances(series.series_uid)
    finally:
        index.close()
    if not instances:
        return LoadedPrior(
            None,
            f"prior could not be read: series {series.series_uid} has no stored instances "
            "(removed by retention?)",
        )
    paths = [i.path if i.path.is_absolute() else data_dir / i.path for i in instances]
    try:
        volume, sources = read(paths)
    except AinodeError as exc:
        log.info(
            "job.prior_unreadable", extra={"job_id": job.job_id, "series_uid": series.series_uid}
        )
        return LoadedPrior(None, f"prior could not be read: {exc}")
    results = prior_result_files(JobStore(data_dir / "index.sqlite"), series.study_uid, data_dir)
    prior = PriorInput(series=series, volume=volume, result_files=results)
    return LoadedPrior(prior, None, sources)
