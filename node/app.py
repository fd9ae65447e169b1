"""The node: wires ingest, assembly, routing, jobs, delivery and the HTTP API together.

This is the only module that joins the stages.  A completed study is routed with the active
rules (``node.routing``), its decisions become jobs (``node.routing.plan_study``) run by the
embedded engine's worker processes (``node.jobs.pipeline``), and each job's result objects are
queued in the outbox (``node.delivery``) before the job is marked succeeded.  The model jobs of a
rule with several models deliver nothing themselves: the rule's ``_combine`` job delivers their
one result set (``results.combine``, docs/results.md).  A study whose
completion was not yet routed when the node stopped is routed again at start (job ids are
deterministic, so nothing runs twice).

``Node(config).start()`` opens the index, starts the spool's committer, the study tracker, the
DICOM listener (plain port, plus a TLS port when ``node.tls.port`` is set) and the HTTP API
(``node.api.create_app(node)`` served by uvicorn in a thread; HTTPS when ``node.http_tls.cert`` is
set).  ``stop()`` undoes it in reverse.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_rules import RuleSet
from node.assembly.tracker import StudyTracker
from node.config import (
    WORKLIST_SOURCE_TYPES,
    Config,
    DicomwebSource,
    DimseSource,
    UpsDimseSource,
    UpsRsSource,
)
from node.delivery.outbox import Outbox
from node.delivery.queries import DELIVERY_ROWS
from node.delivery.rejections import Rejections
from node.edge import check_edge
from node.errors import ConfigError, ConflictError, NotFoundError, ResultError
from node.ingest.performer import Performer, ResultRef, StudyOutcome
from node.ingest.priors import PriorFetcher, PriorRequest, dicom_date
from node.ingest.pulls import PullRunner
from node.ingest.receivers import CommitServer, ReceiverPool, receiver_count
from node.ingest.scp import DicomListener, ListenerSettings, allowed, tls_server_context
from node.ingest.spool import Spool, StoreOutcome
from node.ingest.ups_dimse import UpsDimse
from node.jobs.distributed import CeleryEngine
from node.jobs.engine import EmbeddedEngine
from node.jobs.queries import JOB_ROWS, ai_status_sql, routed_sql
from node.jobs.store import RETIRED_PREFIX, JobStore
from node.models.admission import model_paths
from node.routing import DEFAULT_RULES
from node.routing.dispatch import prior_study_record
from node.routing.plan import no_longer_routed
from node.routing.qualify import Refusal
from node.routing.reload import RuleHolder
from node.routing.study_plan import (
    PriorQuery,
    SeriesLookup,
    plan_study,
    prior_query,
    qualify_decisions,
)
from node.routing.worklist import Worklist
from node.store.index import Index
from node.store.performed import PerformedStore
from node.store.retention import Removal, Retention
from node.store.ups import STATE_REPORT
from node.store.workitems import WorkitemStore
from node.types import (
    PRIOR_FAILED,
    DeliveryState,
    Job,
    JobState,
    PriorOutcome,
    PriorState,
    RejectionKind,
    ResultObject,
    Study,
)

if TYPE_CHECKING:
    from node.api.server import HttpServer

__all__ = ["Node"]


log = logging.getLogger(__name__)


class Node:
    """One running ainode.

    Parameters
    ----------
    config:
        The validated configuration; nothing else is read from the environment.
    serve_http:
        Serve the HTTP API (tests of the DICOM side alone may turn it off).
    """

    def __init__(self, config: Config, *, serve_http: bool = True) -> None:
        if config.queue != "embedded" and not config.queue.startswith(("redis://", "rediss://")):
            raise ConfigError(
                [f"queue: {config.queue!r} is neither 'embedded' nor a redis:// broker URL"]
            )
        self._config = config
        self._serve_http = serve_http
        data_dir = config.node.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self._index = Index(
            data_dir / "index.sqlite", ai_status_sql=ai_status_sql(), routed_sql=routed_sql()
        )
        self._spool = Spool(
            data_dir,
            self._index,
            quota_bytes=config.node.quota_bytes,
            min_free_bytes=config.node.min_free_bytes,
            sync=config.node.ingest_sync,
        )
        self._study_listeners: list[Callable[[Study], object]] = []
        self._association_listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._workitem_removal_listeners: list[Callable[[list[str]], None]] = []
        self._tracker = StudyTracker(
            self._index,
            stable_seconds=config.study.stable_seconds,
            on_complete=self._study_complete,
        )
        self._spool.add_listener(self._instance_stored)
        db_path = data_dir / "index.sqlite"
        self._jobs = JobStore(db_path)
        self._worklist = Worklist(
            WorkitemStore(db_path),
            worklist_label=config.node.ae_title,
            retrieve_ae_title=config.node.ae_title,
            public_url=config.node.public_url,
        )
        self._ups = self._make_ups_dimse()
        self._outbox = Outbox(
            db_path,
            config.destinations,
            policy=config.delivery,
            node_ae_title=config.node.ae_title,
        )
        self._rejections = Rejections(self._outbox, data_dir=data_dir)
        self._rules = RuleHolder(
            config.rules or DEFAULT_RULES,
            destinations=set(config.destinations),
            # a ups-rs / ups-dimse source is a worklist, not a place priors can be fetched from
            sources={n for n, s in config.sources.items() if s.type not in WORKLIST_SOURCE_TYPES},
        )
        #: results of a rule's models combined into one set (embedded engine only, see
        #: docs/results.md); False turns it off for every rule
        self._combine = config.queue == "embedded"
        if not self._combine and config.results.combine:
            log.warning(
                "results.combine_unavailable",
                extra={"reason": "combining needs the embedded queue; results are per model"},
            )
        self._engine = self._make_engine(data_dir)
        self._retention = Retention(
            data_dir,
            config.retention,
            quota_bytes=config.node.quota_bytes,
            on_removed=self._study_removed,
            study_rows=(JOB_ROWS, DELIVERY_ROWS),
            workitems=self._worklist.store,
            on_workitems_removed=self._workitems_removed,
        )
        self._pull_from_sources(db_path)
        self._routing_lock = threading.Lock()
        self._refusals: dict[str, Refusal] | None = None
        #: version of each model, as last described (recorded in its jobs: ``_model_version``)
        self._model_versions: dict[str, str] = {}
        self._refusals_lock = threading.Lock()
        self._describing = threading.Event()
        self.add_study_listener(self.route)
        n = config.node
        self._listener = DicomListener(
            ListenerSettings(
                ae_title=n.ae_title,
                host=n.host,
                port=n.dicom_port,
                allowed_calling_aets=allowed(n.allowed_calling_aets),
                max_associations=n.max_associations,
                max_pdu=n.max_pdu,
                network_timeout_seconds=n.network_timeout_seconds,
                max_instance_bytes=n.max_instance_bytes,
            ),
            self._spool,
            on_association=self._association,
            ups=self._ups.service if self._ups is not None else None,
            ups_events=(
                self._ups_event_report
                if any(p.event_aet is not None for p in self._performers)
                else None
            ),
        )
        self.dicom_port: int | None = None
        self.tls_port: int | None = None
        self.http_port: int | None = None
        #: What the console's dashboard shows about exposure (node.edge.check_edge)
        self.edge_warnings: list[str] = []
        self._http: HttpServer | None = None
        self._commit: CommitServer | None = None
        self._receivers: ReceiverPool | None = None

    def _make_ups_dimse(self) -> UpsDimse | None:
        """UPS over DIMSE on the DICOM listener (``node.ups_dimse.enabled``), else None."""
        n = self._config.node
        if not n.ups_dimse.enabled:
            return None
        ups = UpsDimse(
            self._worklist.store,
            config=n.ups_dimse,
            ae_title=n.ae_title,
            timeout_seconds=n.network_timeout_seconds,
        )
        # workitems that routing rules schedule are reported to DIMSE subscribers too
        self._worklist.add_listener(lambda item, _rule: ups.report(item, STATE_REPORT))
        return ups

    def _make_engine(self, data_dir: Path) -> EmbeddedEngine | CeleryEngine:
        """The job engine: Celery workers through a Redis broker, or the embedded one."""
        config = self._config
        inference = config.inference
        if config.queue.startswith(("redis://", "rediss://")):
            return CeleryEngine(
                self._jobs,
                broker_url=config.queue,
                data_dir=data_dir,
                series_instances=self._index.series_instances,
                job_timeout_seconds=inference.job_timeout_seconds,
                visibility_timeout_seconds=config.celery.visibility_timeout_seconds,
                unacked_restore_interval_seconds=config.celery.unacked_restore_interval_seconds,
                stat_priority=config.celery.stat_priority,
                publish_interval_seconds=config.celery.publish_interval_seconds,
                on_success=self._job_succeeded,
            )
        return EmbeddedEngine(
            self._jobs,
            runner="node.jobs.pipeline:run_job",
            prepare="node.jobs.pipeline:prepare",
            context={
                "data_dir": str(data_dir),
                "model_paths": [str(p) for p in model_paths(config.models, config.node.data_dir)],
                "device": inference.device,
                "torch_threads": inference.torch_threads,
            },
            workers=inference.workers,
            timeout_seconds=inference.job_timeout_seconds,
            on_success=self._job_succeeded,
        )

    def _pull_from_sources(self, db_path: Path) -> None:
        """What fetches from the configured sources: pulls, UPS performers and prior fetches."""
        config = self._config
        pull_sources = {
            name: src
            for name, src in config.sources.items()
            if isinstance(src, DimseSource | DicomwebSource)
        }
        self._pulls = PullRunner(
            pull_sources,
            sink=self._spool,
            node_ae_title=config.node.ae_title,
            on_study_pulled=self._study_pulled,
            timeout_seconds=config.node.network_timeout_seconds,
        )
        self._performed = PerformedStore(db_path)
        self._performers = [
            Performer(
                name,
                src,
                store=self._performed,
                sink=self._spool,
                sources=config.sources,
                node_ae_title=config.node.ae_title,
                on_study_pulled=self._study_pulled,
                study_outcome=self._study_outcome,
            )
            for name, src in config.sources.items()
            if isinstance(src, UpsRsSource | UpsDimseSource)
        ]
        self._priors = PriorFetcher(
            pull_sources,
            index=self._index,
            sink=self._spool,
            node_ae_title=config.node.ae_title,
            on_resolved=self._prior_resolved,
            on_failure=self._jobs.note_prior_failure,
            on_study_pulled=self._study_pulled,
            retry_seconds=config.priors.retry_seconds,
            timeout_seconds=config.node.network_timeout_seconds,
        )

    # ------------------------------------------------------------ what the API uses
    @property
    def config(self) -> Config:
        """The configuration this node runs with."""
        return self._config

    @property
    def index(self) -> Index:
        """The SQLite index."""
        return self._index

    @property
    def spool(self) -> Spool:
        """The durable store (STOW-RS stores through it too)."""
        return self._spool

    @property
    def tracker(self) -> StudyTracker:
        """Study assembly."""
        return self._tracker

    @property
    def jobs(self) -> JobStore:
        """The job queue."""
        return self._jobs

    @property
    def outbox(self) -> Outbox:
        """Deliveries of result objects and forwarded originals."""
        return self._outbox

    @property
    def rejections(self) -> Rejections:
        """Rejections of superseded and retracted results (IOCM notes through the outbox)."""
        return self._rejections

    @property
    def engine(self) -> EmbeddedEngine | CeleryEngine:
        """The job engine (embedded worker processes, or Celery for remote workers)."""
        return self._engine

    @property
    def rules(self) -> RuleHolder:
        """The active routing rules (hot-reloaded)."""
        return self._rules

    @property
    def retention(self) -> Retention:
        """The retention policy (its thread runs when a rule is configured)."""
        return self._retention

    @property
    def pulls(self) -> PullRunner:
        """Background pulls from the configured sources (``POST /api/pull``)."""
        return self._pulls

    @property
    def worklist(self) -> Worklist:
        """The workitems routing rules schedule (``then: {workitem: ...}``) and their table."""
        return self._worklist

    def _ups_event_report(
        self, calling_aet: str, event_type: int, uid: str, info: dict[str, Any]
    ) -> None:
        """Hand a UPS Event N-EVENT-REPORT to the ``ups-dimse`` performers of that manager."""
        for performer in self._performers:
            if performer.event_aet == calling_aet:
                performer.event_report(event_type, uid=uid, info=info)

    @property
    def ups_dimse(self) -> UpsDimse | None:
        """UPS over DIMSE (``node.ups_dimse.enabled``), else None."""
        return self._ups

    def add_study_listener(self, callback: Callable[[Study], object]) -> None:
        """Call ``callback(study)`` on every study completion (routing subscribes here)."""
        self._study_listeners.append(callback)

    def add_association_listener(self, callback: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``callback(outcome, facts)`` for every association request (``accepted`` or
        ``refused``; facts: calling/called AE title, peer address, port).  Audit subscribes."""
        self._association_listeners.append(callback)

    def add_workitem_removal_listener(self, callback: Callable[[list[str]], None]) -> None:
        """Call ``callback(uids)`` when retention deletes final workitems.  Audit subscribes."""
        self._workitem_removal_listeners.append(callback)

    # ------------------------------------------------------------ wiring
    def _workitems_removed(self, uids: list[str]) -> None:
        for callback in self._workitem_removal_listeners:
            try:
                callback(uids)
            except Exception:  # noqa: BLE001 - one consumer must not stop retention
                log.exception("workitem.removal_listener_failed")

    def _association(self, outcome: str, facts: dict[str, Any]) -> None:
        for callback in self._association_listeners:
            try:
                callback(outcome, facts)
            except Exception:  # noqa: BLE001 - one consumer must not stop the others
                log.exception("association.listener_failed")

    def _instance_stored(self, outcome: StoreOutcome) -> None:
        self._tracker.instance_stored(outcome.instance)
        if self._refusals is None and not self._describing.is_set():
            # the first instance starts describing the models (a child process), so that the
            # study's routing, a stable window later, finds them ready
            self._describing.set()
            threading.Thread(
                target=self._refusals_or_none, name="models-describe", daemon=True
            ).start()

    def _study_complete(self, study: Study) -> None:
        for callback in self._study_listeners:
            try:
                callback(study)
            except Exception:  # noqa: BLE001 - one consumer must not stop the others
                log.exception("study.listener_failed", extra={"study_uid": study.study_uid})

    def _record_prior_study(self, study: Study, prior_of: str) -> dict[str, Any]:
        """A study retrieved as another study's prior is stored, recorded as routed with no
        decision, and never routed as a new study."""
        self._jobs.record_routing(
            study.study_uid,
            study.generation,
            rules_sha256=self._rules.sha256,
            decisions=prior_study_record(prior_of),
        )
        log.info(
            "study.prior_not_routed", extra={"study_uid": study.study_uid, "prior_of": prior_of}
        )
        return {"jobs": [], "new_jobs": [], "rejection": None}

    def route(self, study: Study) -> dict[str, Any]:
        """Route a completed study: queue its jobs and forwards, reject the earlier results the
        new routing no longer produces, remember the decisions.

        Routing plans (``node.routing.plan_study``); this carries the plan out.  A study
        retrieved as another study's prior is stored but not routed.  The jobs of a rule with
        ``priors`` wait (``Job.prior``) while its prior is fetched (``PriorFetcher``).

        Returns what was done: ``jobs`` (ids of the routing), ``new_jobs`` (queued now: new
        or run again) and ``rejection`` (the note id of the stale results, or None).
        """
        prior_of = self._index.prior_of(study.study_uid)
        if prior_of is not None:
            return self._record_prior_study(study, prior_of)
        with self._routing_lock:
            rules = self._rules.rules
            planned = plan_study(
                rules,
                study,
                destinations=list(self._config.destinations),
                series=SeriesLookup(
                    self._index.series_instances, data_dir=self._config.node.data_dir
                ),
                refusals=self._refusals_or_none,
                model_versions=lambda: self._model_versions,
                can_combine=self._combine,
                combine=self._config.results.combine,
                prior_timeout_seconds=self._config.priors.timeout_seconds,
            )
            for destination, series_uid in planned.plan.forwards:
                self._outbox.enqueue_instances(
                    planned.series(series_uid), destinations=[destination]
                )
            if planned.plan.workitems:
                self._worklist.schedule(
                    study, planned.plan.workitems, series_instances=planned.series
                )
            new = self._jobs.submit(planned.jobs, max_attempts=self._config.inference.max_attempts)
            waiting = {j.rule for j in planned.jobs if j.job_id in set(new)}
            for wait in sorted(planned.waits, key=lambda w: w.rule):
                if wait.rule in waiting:
                    self._fetch_prior(
                        prior_query(
                            rules,
                            study,
                            wait.priors,
                            wait.series_uids,
                            rule=wait.rule,
                            deadline=wait.deadline,
                        )
                    )
            # before the routing is recorded: a crash in between routes (and rejects) again
            rejection = self._reject_stale(study.study_uid, planned.jobs)
            self._jobs.record_routing(
                study.study_uid,
                study.generation,
                rules_sha256=self._rules.sha256,
                decisions=planned.record,
            )
        log.info(
            "study.jobs_queued",
            extra={
                "study_uid": study.study_uid,
                "generation": study.generation,
                "jobs": len(planned.plan.jobs),
                "new_jobs": len(new),
                "forwards": len(planned.plan.forwards),
            },
        )
        if new:
            self._engine.wake()
        return {
            "jobs": [j.job_id for j in planned.jobs],
            "new_jobs": list(new),
            "rejection": rejection,
        }

    def reroute(self, study_uid: str) -> dict[str, Any]:
        """Route a complete study again, now: with the active rules and the models as they are
        now (described again, so a re-registered model's new version counts).  Jobs the new
        routing asks for run (new ones, and finished ones whose model version, combined set
        or rule parameters changed); earlier results it no longer produces are rejected at
        once, those it re-makes when their new job succeeds (docs/results.md, "Lifecycle").

        Raises
        ------
        NotFoundError
            The study is unknown.
        ConflictError
            The study is not complete yet (it is routed when it completes).
        """
        row = self._index.study_row(study_uid)
        if row is None:
            raise NotFoundError(f"study {study_uid} is not known to this node")
        study = self._index.get_study(study_uid)
        if row["state"] != "complete" or study is None:
            raise ConflictError(
                f"study {study_uid} is not complete yet; it is routed when it completes "
                "(or complete it now: 'ainode studies complete UID')"
            )
        with self._refusals_lock:
            self._refusals = None  # describe the models again (cached while their files stay)
        self._describing.set()
        out = self.route(study)
        log.info(
            "study.rerouted",
            extra={
                "study_uid": study_uid,
                "new_jobs": len(out["new_jobs"]),
                "rejection": out["rejection"],
            },
        )
        return {"study_uid": study_uid, **out}

    def _reject_stale(self, study_uid: str, planned: Sequence[Job]) -> str | None:
        """Reject what earlier routings of ``study_uid`` delivered and this one no longer
        produces (``node.routing.no_longer_routed``); retire jobs no longer routed."""
        stored = self._jobs.list_jobs(study_uid=study_uid, limit=100_000)
        stale = no_longer_routed(stored, planned)
        if not stale.reject:
            return None
        marker = f"{RETIRED_PREFIX}{self._rules.sha256[:12]}"
        self._jobs.retire(stale.retire, by=marker)
        try:
            done = self._rejections.reject(
                stale.reject,
                kind=RejectionKind.SUPERSEDED,
                reason="no longer produced by the routing rules (re-routed: a rule, model or "
                "combine setting changed)",
                actor="node",
                superseded_by=marker,
            )
        except ResultError:
            log.exception("results.rejection_failed", extra={"study_uid": study_uid})
            return None
        return done.note_id if done is not None else None

    def qualify(self, rules: RuleSet, study: Study, decisions: Sequence[Any]) -> dict[str, Any]:
        """What routing ``study`` with ``rules`` would record after the rules (volumes,
        not-applicable reasons), queueing nothing: the dry runs' half of ``route``."""
        return qualify_decisions(
            rules,
            study,
            decisions,
            series=SeriesLookup(self._index.series_instances, data_dir=self._config.node.data_dir),
            refusals=self._refusals_or_none,
        )

    @property
    def _model_refusals(self) -> dict[str, Refusal]:
        """Each discovered model's check of a volume (described once, by a child process, at
        the first routing that names a model)."""
        with self._refusals_lock:
            if self._refusals is None:
                # a child process imports torch, not the node (node/models/describe.py)
                from node.models.describe import describe_models

                infos = describe_models(
                    self._config.models,
                    device=self._config.inference.device,
                    cache=self._config.node.data_dir / "models-described.json",
                )
                self._refusals = {name: info.refusal for name, info in infos.items()}
                self._model_versions = {name: info.version for name, info in infos.items()}
            return self._refusals

    def _refusals_or_none(self) -> dict[str, Refusal]:
        """The models' checks; empty (jobs report what the router could not check) when the
        models cannot be discovered, so that routing never stops on it."""
        try:
            return self._model_refusals
        except Exception:  # noqa: BLE001 - discovery failing must not stop routing
            log.exception("models.discovery_failed")
            with self._refusals_lock:
                self._refusals = {}  # not retried at every routing; jobs report the models
            return {}

    def _job_succeeded(self, job: Job, outputs: Mapping[str, Any]) -> None:
        """Queue a finished job's objects for its destinations (before it is marked done), then
        reject what the jobs it superseded delivered (docs/results.md, "Lifecycle").

        A job superseded while it ran (a late instance arrived) delivers nothing: a newer job
        delivers for the same study, rule and model.  Objects of a job whose results were
        retracted stay withdrawn or delivered-and-rejected when it is retried (same UIDs, the
        outbox keeps one row per object and destination), so a retry makes no second copy.
        """
        objects: list[ResultObject] = list(outputs.get("objects", []))
        if job.parameters.get("_combined_by"):
            # its prediction is part of the rule's one result set (the combine job delivers)
            return
        newer = self._jobs.get(job.job_id).superseded_by
        if newer is not None:
            log.info("job.stale_not_delivered", extra={"job_id": job.job_id, "newer": newer})
            return
        if objects and job.destinations:
            self._outbox.enqueue_results(
                objects,
                destinations=list(job.destinations),
                job_id=job.job_id,
                root=self._config.node.data_dir,
            )
        self._reject_earlier_run(job, objects)
        older = self._jobs.predecessors(job)
        if older:
            try:
                self._rejections.reject(
                    older,
                    kind=RejectionKind.SUPERSEDED,
                    reason=f"superseded by job {job.job_id} (the study changed or was re-run)",
                    actor="node",
                    superseded_by=job.job_id,
                )
            except ResultError:
                # e.g. the old objects were removed by retention: nothing left to reject with
                log.exception("results.rejection_failed", extra={"job_id": job.job_id})

    def _reject_earlier_run(self, job: Job, objects: Sequence[ResultObject]) -> None:
        """A job run again (operator retry after a new model version...) whose result set has
        other SOP Instance UIDs than its earlier run: reject the earlier objects, so the
        destinations never hold two live result sets of one job.  Same UIDs (the usual retry)
        overwrite in place and reject nothing."""
        current = {o.sop_uid for o in objects}
        if not objects or "" in current:
            return  # nothing new, or objects not identified: never reject on a guess
        try:
            self._rejections.reject(
                [job.job_id],
                kind=RejectionKind.SUPERSEDED,
                reason=f"replaced by a new run of job {job.job_id} (new result objects)",
                actor="node",
                superseded_by=job.job_id,
                keep=current,
            )
        except ResultError:
            log.exception("results.rejection_failed", extra={"job_id": job.job_id})

    def _fetch_prior(self, query: PriorQuery) -> None:
        """Have the prior fetcher look for what routing asks for (``node.routing.prior_query``)."""
        fields = {f.name: getattr(query, f.name) for f in dataclasses.fields(query)}
        self._priors.submit(PriorRequest(**{**fields, "study_date": dicom_date(query.study_date)}))

    def _prior_resolved(self, study_uid: str, rule: str, outcome: PriorOutcome) -> None:
        if self._jobs.resolve_prior(study_uid, rule, outcome):
            self._engine.wake()

    def _resume_priors(self) -> None:
        """Fetch again the priors that jobs of a previous run still wait for."""
        rules = self._rules.rules
        for study_uid, rule_name, deadline, series_uids in self._jobs.waiting_priors():
            if deadline <= time.time():
                continue  # the jobs run without it at their next claim, saying so
            study = self._index.get_study(study_uid)
            try:
                priors = rules.rule(rule_name).priors
            except KeyError:
                priors = None
            if study is None or priors is None:
                self._prior_resolved(
                    study_uid,
                    rule_name,
                    PriorOutcome(
                        PriorState.FAILED,
                        reason=f"{PRIOR_FAILED}: the study or the rule's priors are gone",
                    ),
                )
                continue
            self._fetch_prior(
                prior_query(rules, study, priors, series_uids, rule=rule_name, deadline=deadline)
            )

    def _study_pulled(self, study_uid: str) -> bool:
        """A pull brought instances of ``study_uid``: complete (and so route) it now."""
        return self._tracker.complete(study_uid) is not None

    def _study_outcome(self, study_uid: str) -> StudyOutcome | None:
        """What the node did with a study a performer fetched: None while it is not routed,
        a job runs or a delivery is pending; else every delivered object and every failure."""
        row = self._index.study_row(study_uid)
        if row is None:
            raise NotFoundError(f"study {study_uid} is not known to this node")
        if row["state"] != "complete":
            return None
        if self._jobs.routed_generation(study_uid) < int(row["generation"]):
            return None
        jobs = self._jobs.list_jobs(study_uid=study_uid, limit=10000)
        if any(j.state in (JobState.QUEUED, JobState.RUNNING) for j in jobs):
            return None
        deliveries = self._outbox.list(study_uid=study_uid, limit=100000)
        if any(d.state is DeliveryState.PENDING for d in deliveries):
            return None
        if not jobs and not deliveries:
            return StudyOutcome(
                results=[],
                failures=["no rule of this node ran a model on it or sent it anywhere"],
            )
        failures = [
            f"job {j.job.model} {j.state.value}: {j.reason or 'no reason recorded'}"
            for j in jobs
            if j.state in (JobState.FAILED, JobState.DEAD) and j.superseded_by is None
        ]
        failures += [
            f"delivery to {d.destination} failed: {d.last_error or 'no reason recorded'}"
            for d in deliveries
            if d.state is DeliveryState.DEAD
        ]
        results = []
        for d in deliveries:
            if d.state is not DeliveryState.DELIVERED:
                continue
            dest = self._config.destinations.get(d.destination)
            url = aet = None
            if dest is not None and dest.type == "dicomweb":
                url = f"{dest.url.rstrip('/')}/studies/{d.study_uid}/series/{d.series_uid}"
            elif dest is not None and dest.type == "dimse":
                aet = dest.ae_title
            results.append(
                ResultRef(
                    study_uid=d.study_uid,
                    series_uid=d.series_uid,
                    sop_class_uid=d.sop_class_uid,
                    sop_uid=d.sent_sop_uid or d.sop_uid,
                    retrieve_url=url,
                    retrieve_ae_title=aet,
                )
            )
        return StudyOutcome(results=results, failures=failures)

    def _study_removed(self, removal: Removal) -> None:
        self._spool.refresh_usage()

    def _route_unrouted(self) -> None:
        """Route completions that a previous run stored but did not route (crash in between)."""
        for row in self._index.list_studies(limit=100000):
            if row["state"] != "complete":
                continue
            if self._jobs.routed_generation(row["study_uid"]) >= int(row["generation"]):
                continue
            study = self._index.get_study(row["study_uid"])
            if study is not None:
                self.route(study)

    # ------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Start every part; raise ConfigError when a port or TLS file cannot be used, or when
        the HTTP face would be open to the network without credentials (``node.edge``)."""
        try:
            self.edge_warnings = check_edge(self._config, serve_http=self._serve_http)
        except ConfigError:
            self.stop()
            raise
        self._spool.start()
        self._outbox.start()
        self._rejections.resume()
        self._engine.start()
        self._rules.start()
        self._route_unrouted()
        self._resume_priors()
        self._tracker.start()
        if self._ups is not None:
            self._ups.start()
        try:
            self.dicom_port = self._start_dicom()
        except OSError as exc:
            self.stop()
            raise ConfigError(
                [f"node.dicom_port: cannot listen on {self._config.node.dicom_port}: {exc}"]
            ) from exc
        tls = self._config.node.tls
        if tls.port:
            if tls.cert is None or tls.key is None:
                self.stop()
                raise ConfigError(["node.tls: port is set but cert or key is missing"])
            try:
                ctx = tls_server_context(
                    cert=tls.cert,
                    key=tls.key,
                    ca=tls.ca,
                    require_client_cert=tls.require_client_cert,
                )
                self.tls_port = self._listener.start(port=tls.port, ssl_context=ctx)
            except (OSError, ValueError) as exc:
                self.stop()
                raise ConfigError([f"node.tls: cannot start the TLS listener: {exc}"]) from exc
        if self._serve_http:
            self._start_http()
        # after the HTTP face: its audit listeners hear what the first pass removes
        self._retention.start()
        for performer in self._performers:
            performer.start()
        log.info(
            "node.started",
            extra={
                "dicom_port": self.dicom_port,
                "tls_port": self.tls_port,
                "http_port": self.http_port,
                "is_https": self._config.node.http_tls.cert is not None,
                "ae_title": self._config.node.ae_title,
            },
        )

    def _start_dicom(self) -> int:
        """The plain DICOM port: in this process, or ``node.receivers`` receiver processes."""
        n = self._config.node
        count = receiver_count(n.receivers)
        if count <= 1:
            return self._listener.start()
        self._commit = CommitServer(self._spool, on_association=self._association)
        self._commit.start()
        self._receivers = ReceiverPool(
            config_json=n.model_dump_json(),
            host=n.host,
            port=n.dicom_port,
            count=count,
            commit=self._commit,
            sync_mode=self._spool.sync_mode,
            tmp_dir=self._spool.tmp_dir,
        )
        self._receivers.start()
        log.info("dicom.receivers", extra={"receivers": count, "port": self._receivers.port})
        return self._receivers.port

    @property
    def receivers(self) -> ReceiverPool | None:
        """The receiver processes (``node.receivers`` > 1), else None."""
        return self._receivers

    def _drain(self, grace_seconds: float) -> None:
        deadline = time.monotonic() + grace_seconds

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        running_jobs = list(self._engine.running())
        # 1) refuse new work: no job claims, no new association, no new HTTP connection
        self._engine.drain(0.0)
        if self._receivers is not None:
            self._receivers.stop(grace_seconds)  # each drains its own associations
        self._listener.stop()
        associations = [a for a in self._listener.ae.active_associations if a.is_alive()]
        if self._http is not None:
            self._http.stop_accepting()
        log.info(
            "node.draining",
            extra={
                "grace_seconds": grace_seconds,
                "associations": len(associations),
                "running_jobs": len(running_jobs),
            },
        )
        # 2) let what is in flight finish, all within one deadline
        while any(a.is_alive() for a in associations) and left() > 0:
            time.sleep(0.05)
        cut = [a for a in associations if a.is_alive()]
        for assoc in cut:
            assoc.abort()
        if self._http is not None:
            self._http.thread.join(timeout=left())
        unfinished = self._engine.drain(left())
        log.info(
            "node.drained",
            extra={
                "associations_aborted": len(cut),
                "jobs_left_running": len(unfinished),
                "seconds": round(grace_seconds - left(), 3),
            },
        )

    def _start_http(self) -> None:
        from node.api import create_app
        from node.api.server import start_http_server

        node = self._config.node
        try:
            self._http = start_http_server(
                create_app(self), host=node.host, port=node.http_port, tls=node.http_tls
            )
        except Exception:
            self.stop()
            raise
        self.http_port = self._http.port

    def stop(self, *, grace_seconds: float = 0.0) -> None:
        """Stop accepting, finish what is being committed, close the index.

        With ``grace_seconds`` > 0 (``serve`` on SIGTERM: ``node.shutdown_grace_seconds``) the
        node drains first: it stops claiming jobs, closes its DICOM and HTTP listeners, and waits
        until open associations and HTTP requests have ended and running jobs have finished (and
        queued their deliveries), or the grace period is over.  Whatever is left — a job still
        running, queued jobs, pending deliveries, open studies — is durable and picked up by
        the next start.
        """
        if grace_seconds > 0:
            self._drain(grace_seconds)
        if self._http is not None:
            self._http.stop()
            self._http = None
        for performer in self._performers:
            performer.stop()
        self._pulls.stop()
        self._priors.stop()
        if self._receivers is not None:
            self._receivers.stop()
            self._receivers = None
        if self._commit is not None:
            self._commit.stop()
            self._commit = None
        self._listener.stop()
        if self._ups is not None:
            self._ups.stop()
        self._retention.stop()
        self._tracker.stop()
        self._rules.stop()
        self._engine.stop()
        self._outbox.stop()
        self._rejections.close()
        self._spool.stop()
        self._index.close()
        log.info("node.stopped")
