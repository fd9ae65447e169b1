"""``ainode serve --config FILE``: run the node in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import warnings
from pathlib import Path
from typing import Annotated

import typer

from node.cli import app
from node.config import Config, load_config

__all__ = ["config_from", "serve"]

DEFAULT_CONFIG = Path("ainode.yaml")


def config_from(path: Path | None) -> Config:
    """The config at ``path``; without ``--config``, ./ainode.yaml if present, else defaults."""
    if path is None:
        return load_config(DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    return load_config(path)


@app.command()
def serve(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config file (default ./ainode.yaml)"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Run the node: DICOM listener (C-ECHO, C-STORE), HTTP API and study assembly."""
    import pydicom.config

    from node.app import Node
    from node.log import configure

    cfg = config_from(config)
    configure(json_lines=True, level=log_level.upper())
    # pydicom reports odd values of received files with the value itself: never log those (PHI)
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    # ingest stores bytes as received and never judges values: skip pydicom's per-value regexes
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    node = Node(cfg)
    node.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        # graceful drain: refuse new work, let open associations and running jobs finish
        node.stop(grace_seconds=cfg.node.shutdown_grace_seconds if stop.is_set() else 0.0)
