"""The HTTP face of the node: ``create_app(node)`` builds the FastAPI application.

One router per resource (``health``, ``studies``, ``stow``); one exception handler
(``problems``) turns every error into RFC 9457 problem JSON.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from node import __version__
from node.api import health, stow, studies
from node.api.auth import configured_token, require_token
from node.api.deps import NodeView
from node.api.problems import install_problem_handler

__all__ = ["create_app"]


def create_app(node: NodeView) -> FastAPI:
    """Build the API application serving ``node``.

    Parameters
    ----------
    node:
        The running node (``node.app.Node``): its ``config``, ``index``, ``spool`` and
        ``tracker`` are used by the routers.

    Returns
    -------
    FastAPI
        Serve it with uvicorn on ``config.node.host:config.node.http_port``.

    Raises
    ------
    ConfigError
        ``auth.token_file`` is set but cannot be read.
    """
    app = FastAPI(
        title="ainode",
        version=__version__,
        summary="AI node for radiology: DICOM in, AI results out",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.node = node
    app.state.api_token = configured_token(node.config.auth)
    install_problem_handler(app)
    protected = [Depends(require_token)]
    app.include_router(health.router)
    app.include_router(studies.router, dependencies=protected)
    app.include_router(stow.router, dependencies=protected)
    return app
