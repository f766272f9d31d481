"""How a run reports inputs that failed: one log line per failure and a table of every input at the end
(``PredictionWriter`` and ``BatchInference`` both end this way)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def failure_outcome(path: str | Path, error: str) -> tuple[str, str]:
    """``(log message, table cell)`` of an input that failed: the message names the path once, the cell (beside the
    path's own column) not at all."""
    message = error if str(path) in error else f"{path}: {error}"
    return message, f"FAILED: {error.replace(str(path) + ': ', '')}"


def failure_table(failed: int, total: int, outcomes: Sequence[tuple[str, str]]) -> str:
    """The last lines of a run with failures: how many, and a table of every input and what became of it."""
    rows = "\n".join(f"| {path} | {outcome} |" for path, outcome in outcomes)
    written = " (the others were written)" if failed < total else ""
    return f"{failed} of {total} inputs failed{written}:\n| input | result |\n|---|---|\n{rows}"


__all__ = ["failure_outcome", "failure_table"]
