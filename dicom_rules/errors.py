"""The one error type of ``dicom_rules``: a rule file with problems.

A ``RuleError`` carries *all* problems found in one load, each with its file, 1-based line and
column, so that ``ainode rules check`` can print editor-friendly ``FILE:LINE:COL: message`` lines.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Problem", "RuleError"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in a rule file: where it is and what to do about it."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class RuleError(Exception):
    """A rule file (or rule text) is invalid; ``problems`` lists every problem found.

    Parameters
    ----------
    problems:
        The problems, in file order.  At least one.
    """

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        if not problems:
            raise ValueError("RuleError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(
            sorted(problems, key=lambda p: (p.path, p.line, p.column))
        )
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def path(self) -> str:
        """File of the first problem."""
        return self.problems[0].path

    @property
    def line(self) -> int:
        """Line of the first problem (1-based)."""
        return self.problems[0].line

    @property
    def lines(self) -> list[str]:
        """Every problem as a ``FILE:LINE:COL: message`` line."""
        return [str(p) for p in self.problems]
