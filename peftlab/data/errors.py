"""The one exception the data package raises for bad input, with the file, the line and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset on disk.

    Attributes:
        where: File (optionally ``file:line``) or folder the problem is in.
        message: What is wrong.
        fix: What the user should do about it.
    """

    where: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}\n    fix: {self.fix}"


class DataError(ValueError):
    """Raised for any dataset that cannot be used as is (missing, malformed, corrupt, inconsistent).

    Attributes:
        problems: Every problem found, in the order found.
    """

    MAX_LISTED = 20

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, str):  # rebuilt from its message (unpickling, DataLoader workers re-raising)
            self.problems = []
            super().__init__(problems)
            return
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__(self._format())

    def _format(self) -> str:
        listed = [str(p) for p in self.problems[: self.MAX_LISTED]]
        hidden = len(self.problems) - len(listed)
        if hidden > 0:
            listed.append(f"... and {hidden} more problem(s); run `python -m peftlab.data.check` for the full list")
        header = "dataset problem" if len(self.problems) == 1 else f"{len(self.problems)} dataset problems"
        return f"{header}:\n" + "\n".join(listed)


def where(path: Path | str, line: int | None = None) -> str:
    """Formats a location as ``path`` or ``path:line`` (1-based line)."""
    return f"{path}:{line}" if line is not None else str(path)
