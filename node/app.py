"""The node: wires ingest, assembly and the HTTP API together (the only module that does).

``Node(config).start()`` opens the index, starts the spool's committer, the study tracker, the
DICOM listener (plain port, plus a TLS port when ``node.tls.port`` is set) and the HTTP API
(``node.api.create_app(node)`` served by uvicorn in a thread).  ``stop()`` undoes it in reverse.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from node.assembly.tracker import StudyTracker
from node.config import Config
from node.errors import ConfigError
from node.ingest.scp import DicomListener, ListenerSettings, allowed, tls_server_context
from node.ingest.spool import Spool, StoreOutcome
from node.store.index import Index
from node.types import Study

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
        self._config = config
        self._serve_http = serve_http
        data_dir = config.node.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self._index = Index(data_dir / "index.sqlite")
        self._spool = Spool(
            data_dir,
            self._index,
            quota_bytes=config.node.quota_bytes,
            min_free_bytes=config.node.min_free_bytes,
        )
        self._study_listeners: list[Callable[[Study], None]] = []
        self._tracker = StudyTracker(
            self._index,
            stable_seconds=config.study.stable_seconds,
            on_complete=self._study_complete,
        )
        self._spool.add_listener(self._instance_stored)
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
            ),
            self._spool,
        )
        self.dicom_port: int | None = None
        self.tls_port: int | None = None
        self.http_port: int | None = None
        self._http_server: Any = None
        self._http_thread: threading.Thread | None = None

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

    def add_study_listener(self, callback: Callable[[Study], None]) -> None:
        """Call ``callback(study)`` on every study completion (routing subscribes here)."""
        self._study_listeners.append(callback)

    # ------------------------------------------------------------ wiring
    def _instance_stored(self, outcome: StoreOutcome) -> None:
        self._tracker.instance_stored(outcome.instance)

    def _study_complete(self, study: Study) -> None:
        for callback in self._study_listeners:
            try:
                callback(study)
            except Exception:  # noqa: BLE001 - one consumer must not stop the others
                log.exception("study.listener_failed", extra={"study_uid": study.study_uid})

    # ------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Start every part; raise ConfigError when a port or TLS file cannot be used."""
        self._spool.start()
        self._tracker.start()
        try:
            self.dicom_port = self._listener.start()
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
        log.info(
            "node.started",
            extra={
                "dicom_port": self.dicom_port,
                "tls_port": self.tls_port,
                "http_port": self.http_port,
                "ae_title": self._config.node.ae_title,
            },
        )

    def _start_http(self) -> None:
        try:
            from node.api import create_app  # type: ignore[attr-defined,unused-ignore]
        except ImportError:
            log.warning("http.unavailable", extra={"reason": "node.api has no create_app"})
            return
        import uvicorn

        try:
            app = create_app(self)
        except Exception:
            self.stop()
            raise
        cfg = uvicorn.Config(
            app,
            host=self._config.node.host,
            port=self._config.node.http_port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        server = uvicorn.Server(cfg)
        thread = threading.Thread(target=server.run, name="http", daemon=True)
        thread.start()
        deadline = threading.Event()
        for _ in range(1000):
            if server.started or not thread.is_alive():
                break
            deadline.wait(0.01)
        if not server.started:
            server.should_exit = True
            self.stop()
            raise ConfigError(
                [f"node.http_port: cannot serve HTTP on {self._config.node.http_port}"]
            )
        self._http_server, self._http_thread = server, thread
        sockets = [s for srv in server.servers for s in srv.sockets]
        self.http_port = int(sockets[0].getsockname()[1]) if sockets else None

    def stop(self) -> None:
        """Stop accepting, finish what is being committed, close the index."""
        if self._http_server is not None:
            self._http_server.should_exit = True
            if self._http_thread is not None:
                self._http_thread.join(timeout=10)
            self._http_server = None
        self._listener.stop()
        self._tracker.stop()
        self._spool.stop()
        self._index.close()
        log.info("node.stopped")
