"""pynetdicom's process-wide ``_config`` is never changed by importing ainode (issue 17 §6).

The node sets what it needs when a listener, a sender or the log is made, so a program that
imports ainode's modules (a test, a script using the CLI's functions) keeps pynetdicom's defaults.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.config import DimseDestination
from node.delivery.base import SenderContext
from node.delivery.dimse import DimseSender
from node.ingest.scp import DicomListener, ListenerSettings
from node.ingest.spool import Spool
from node.log import configure
from node.store.index import Index

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("UNRESTRICTED_STORAGE_SERVICE", "LOG_HANDLER_LEVEL", "STORE_SEND_CHUNKED_DATASET")

PROBE = f"""
import json, importlib, pkgutil
from pynetdicom import _config
names = {NAMES!r}
before = {{n: getattr(_config, n) for n in names}}
import node
for mod in pkgutil.walk_packages(node.__path__, "node."):
    if not mod.name.endswith("__main__"):  # runs the CLI
        importlib.import_module(mod.name)
after = {{n: getattr(_config, n) for n in names}}
print(json.dumps([before, after]))
"""


def test_importing_every_node_module_leaves_pynetdicom_settings_alone() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = json.loads(proc.stdout.splitlines()[-1])
    assert before == after
    assert before["UNRESTRICTED_STORAGE_SERVICE"] is False  # the defaults, to see a change


def test_listener_sender_and_log_set_what_they_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pynetdicom import _config

    for name in NAMES:  # restored after the test: this process runs other tests
        monkeypatch.setattr(_config, name, getattr(_config, name))
    monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", False)
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "standard")
    index = Index(tmp_path / "index.sqlite")
    try:
        DicomListener(ListenerSettings(ae_title="AINODE"), Spool(tmp_path, index))
    finally:
        index.close()
    assert _config.UNRESTRICTED_STORAGE_SERVICE is True
    DimseSender(
        DimseDestination(type="dimse", host="127.0.0.1", port=104, ae_title="PACS"),
        SenderContext("pacs", "AINODE", 5.0, lambda a, b: None, frozenset),
    )
    assert _config.STORE_SEND_CHUNKED_DATASET is True
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure(json_lines=True)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert _config.LOG_HANDLER_LEVEL == "none"
