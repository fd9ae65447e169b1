"""Hot reload of the rule file: validate a new version, swap atomically, keep the old on error.

``RuleHolder.rules`` is always a valid ``RuleSet``.  A watcher thread polls the file (sha256 of
its content: rule files are small, and mtime can miss two writes within one tick).  An invalid
new version leaves the active rules in place and is reported through ``errors``
(``FILE:LINE:COL: message`` lines) and the log.  ``replace(text)`` (``PUT /api/rules``)
validates text, writes it atomically to the rule file and swaps.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dicom_rules
from dicom_rules import RuleError, RuleSet

__all__ = ["RuleHolder", "RuleStatus"]

log = logging.getLogger(__name__)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class RuleStatus:
    """What ``GET /api/rules`` shows: the active version and the last rejected one."""

    path: str
    active_sha256: str
    active_rules: int
    rejected_sha256: str | None
    errors: tuple[str, ...]


class RuleHolder:
    """The node's current rules, reloaded when the file changes.

    Parameters
    ----------
    path:
        The rule file.
    models, destinations:
        Names known to the node; rule files naming others are rejected.
    sources:
        The config's pull source names; a rule's ``priors.from`` must name one.
    poll_seconds:
        How often the watcher thread looks at the file.
    on_change:
        Called with the new ``RuleSet`` after each successful swap.

    Raises
    ------
    RuleError
        The file is missing or invalid at start (the node must not start without rules).
    """

    def __init__(
        self,
        path: Path,
        *,
        models: set[str] | None = None,
        destinations: set[str] | None = None,
        sources: set[str] | None = None,
        poll_seconds: float = 1.0,
        on_change: Callable[[RuleSet], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.models = models
        self.destinations = destinations
        self.sources = sources
        self.poll_seconds = poll_seconds
        self.on_change = on_change
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: tuple[str, ...] = ()
        self._rejected_sha: str | None = None
        text = self._read()
        self._active_text = text
        self._rules = self._parse(text)
        self._sha = _sha(text)
        log.info("rules.loaded", extra={"sha256": self._sha[:12], "rules": len(self._rules.rules)})

    # ---------------------------------------------------------------- state
    @property
    def rules(self) -> RuleSet:
        """The active rule set (always valid)."""
        return self._rules

    @property
    def errors(self) -> tuple[str, ...]:
        """Problems of the last rejected version (empty when the file on disk is active)."""
        return self._errors

    @property
    def sha256(self) -> str:
        """sha256 of the active rule text."""
        return self._sha

    def status(self) -> RuleStatus:
        """Active and rejected versions, for the API/dashboard."""
        with self._lock:
            return RuleStatus(
                path=str(self.path),
                active_sha256=self._sha,
                active_rules=len(self._rules.rules),
                rejected_sha256=self._rejected_sha,
                errors=self._errors,
            )

    def text(self) -> str:
        """The active rule text (what ``GET /api/rules`` returns)."""
        return self._active_text

    # ---------------------------------------------------------------- loading

    def _read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleError(
                [dicom_rules.Problem(str(self.path), 1, 1, f"cannot read rule file: {exc}")]
            ) from None

    def _parse(self, text: str) -> RuleSet:
        return dicom_rules.parse(
            text,
            source=str(self.path),
            models=self.models,
            destinations=self.destinations,
            sources=self.sources,
        )

    def _swap(self, text: str, rules: RuleSet) -> None:
        with self._lock:
            self._rules = rules
            self._sha = _sha(text)
            self._active_text = text
            self._errors = ()
            self._rejected_sha = None
        log.info("rules.reloaded", extra={"sha256": self._sha[:12], "rules": len(rules.rules)})
        if self.on_change is not None:
            self.on_change(rules)

    def check_now(self) -> bool:
        """Look at the file once; reload if its content changed.

        Returns
        -------
        bool
            True when new rules became active.  An invalid version returns False and sets
            ``errors``; a missing file keeps the active rules and sets ``errors`` too.
        """
        try:
            text = self._read()
        except RuleError as exc:
            self._reject(None, exc)
            return False
        sha = _sha(text)
        if sha == self._sha:
            if self._errors:
                with self._lock:
                    self._errors, self._rejected_sha = (), None
            return False
        if sha == self._rejected_sha:
            return False
        try:
            rules = dicom_rules.parse(
                text, source=str(self.path), models=self.models, destinations=self.destinations
            )
        except RuleError as exc:
            self._reject(sha, exc)
            return False
        self._swap(text, rules)
        return True

    def _reject(self, sha: str | None, exc: RuleError) -> None:
        with self._lock:
            self._errors = tuple(exc.lines)
            self._rejected_sha = sha
        log.warning(
            "rules.rejected",
            extra={
                "sha256": sha[:12] if sha else None,
                "problems": len(exc.problems),
                "active_sha256": self._sha[:12],
            },
        )

    def replace(self, text: str) -> RuleSet:
        """Validate ``text``, write it atomically to the rule file, and make it active.

        Raises
        ------
        RuleError
            ``text`` is invalid; nothing is written and the active rules stay.
        """
        rules = dicom_rules.parse(
            text,
            source=str(self.path),
            models=self.models,
            destinations=self.destinations,
            sources=self.sources,
        )
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=".rules-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._swap(text, rules)
        return rules

    # ---------------------------------------------------------------- watcher
    def start(self) -> None:
        """Start the polling thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rules-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the polling thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check_now()
            except Exception:  # the watcher must survive anything; logged, never silent
                log.exception("rules.watch_failed")

    def __enter__(self) -> RuleHolder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
