"""Bounded regular expressions for ``matches``.

Patterns are compiled with RE2 (``google-re2``), whose matching time is linear in the input: no
pattern can make routing hang (no catastrophic backtracking).  RE2 rejects back-references and
look-around at load time.  Patterns are limited to ``MAX_PATTERN_LENGTH`` characters and values
to ``MAX_VALUE_LENGTH`` characters (longer values are cut before matching; DICOM LO is 64).
Matching is a full match of the trimmed value.
"""

from __future__ import annotations

from typing import Any

import re2

__all__ = ["MAX_PATTERN_LENGTH", "MAX_VALUE_LENGTH", "Pattern", "RegexError", "compile_pattern"]

MAX_PATTERN_LENGTH = 512
MAX_VALUE_LENGTH = 4096
_CACHE_LIMIT = 4096


class RegexError(ValueError):
    """A pattern is too long or not valid RE2 syntax."""


class Pattern:
    """A compiled, linear-time pattern with a small memo of recent answers."""

    __slots__ = ("_memo", "_regex", "case_sensitive", "text")

    def __init__(self, text: str, *, case_sensitive: bool) -> None:
        self.text = text
        self.case_sensitive = case_sensitive
        opts = re2.Options()
        opts.case_sensitive = case_sensitive
        opts.log_errors = False
        opts.max_mem = 8 << 20
        try:
            self._regex: Any = re2.compile(text, opts)
        except re2.error as exc:
            raise RegexError(_describe(exc)) from None
        self._memo: dict[str, bool] = {}

    def fullmatch(self, value: str) -> bool:
        """True when the whole (trimmed) value matches."""
        memo = self._memo
        hit = memo.get(value)
        if hit is None:
            hit = self._regex.fullmatch(value[:MAX_VALUE_LENGTH].strip()) is not None
            if len(memo) >= _CACHE_LIMIT:
                memo.clear()
            memo[value] = hit
        return hit


def _describe(exc: Exception) -> str:
    msg = exc.args[0] if exc.args else str(exc)
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    msg = str(msg)
    if "invalid escape" in msg or "invalid perl operator" in msg:
        msg += " (back-references and look-around are not supported: patterns run in linear time)"
    return msg


def compile_pattern(text: str, *, case_sensitive: bool = False) -> Pattern:
    """Compile ``text`` for ``matches``.

    Raises
    ------
    RegexError
        The pattern is longer than ``MAX_PATTERN_LENGTH`` or not valid RE2 syntax.
    """
    if len(text) > MAX_PATTERN_LENGTH:
        raise RegexError(
            f"pattern is {len(text)} characters long; the limit is {MAX_PATTERN_LENGTH}"
        )
    return Pattern(text, case_sensitive=case_sensitive)
