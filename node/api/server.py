"""The HTTP face's server: uvicorn in a thread of the node's process, with HTTPS when configured.

The node (``node/app.py``) only asks for a server on its host and port; what uvicorn needs, and
what a bad certificate means, is decided here.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from typing import Any

from node.config import HttpTlsConfig
from node.errors import ConfigError
from node.ingest.scp import tls_server_context

__all__ = ["HttpServer", "https_options", "start_http_server"]

_START_SECONDS = 10.0


@dataclass
class HttpServer:
    """A running uvicorn server, its thread and the port it is bound to."""

    server: Any  # uvicorn.Server; imported late (the CLI's other commands do not need it)
    thread: threading.Thread
    port: int | None

    def stop_accepting(self) -> None:
        """Close the listener; requests in flight finish (uvicorn's graceful exit)."""
        self.server.should_exit = True

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_accepting()
        self.thread.join(timeout=timeout)


def https_options(tls: HttpTlsConfig) -> dict[str, Any]:
    """uvicorn's TLS options from ``node.http_tls`` (empty: plain HTTP).

    The files are loaded here, so a bad certificate is a ConfigError at start, not a silently
    dead HTTP thread.
    """
    if tls.cert is None:
        if tls.key is not None or tls.ca is not None or tls.require_client_cert:
            raise ConfigError(["node.http_tls: cert is missing (HTTPS is on when cert is set)"])
        return {}
    if tls.require_client_cert and tls.ca is None:
        raise ConfigError(["node.http_tls: require_client_cert needs ca to verify clients"])
    key = tls.key or tls.cert  # the key may sit in the certificate's PEM file
    try:
        tls_server_context(
            cert=tls.cert, key=key, ca=tls.ca, require_client_cert=tls.require_client_cert
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError([f"node.http_tls: cannot load the certificate: {exc}"]) from exc
    options: dict[str, Any] = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(key)}
    if tls.ca is not None:
        options["ssl_ca_certs"] = str(tls.ca)
        options["ssl_cert_reqs"] = (
            ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
        )
    return options


def start_http_server(app: Any, *, host: str, port: int, tls: HttpTlsConfig) -> HttpServer:
    """Serve ``app`` on ``host:port`` (0: any free port) in a daemon thread; return once bound.

    Raises
    ------
    ConfigError
        The TLS files cannot be loaded, or nothing could be bound on the port.
    """
    import uvicorn

    cfg = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        **https_options(tls),
    )
    server = uvicorn.Server(cfg)
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    thread.start()
    waiting = threading.Event()
    for _ in range(int(_START_SECONDS / 0.01)):
        if server.started or not thread.is_alive():
            break
        waiting.wait(0.01)
    if not server.started:
        server.should_exit = True
        raise ConfigError([f"node.http_port: cannot serve HTTP on {port}"])
    sockets = [s for srv in server.servers for s in srv.sockets]
    bound = int(sockets[0].getsockname()[1]) if sockets else None
    return HttpServer(server, thread, bound)
