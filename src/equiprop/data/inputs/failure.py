"""The one shape of a refused input, written by every command that reads structures a user gives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from equiprop.data.errors import DataError


@dataclass
class InputFailure:
    """An input item that gave no usable structure: unreadable, unknown type, a sub-folder, a broken frame, or a
    structure a predictor's checks refused. ``reason`` is the short kind the summaries count by; ``error`` names the
    file or entry and the problem."""

    id: str
    file: str
    reason: str
    error: str
    formula: str = ""

    @classmethod
    def of(cls, err: DataError, file: str, id: str | None = None, record=None) -> "InputFailure":
        """The failure of ``err`` for ``file`` (or for ``record``, read from it, whose id and formula it keeps)."""
        if record is not None:
            return cls(record.id, file, err.kind, str(err), record.formula)
        return cls(id or Path(file).stem, file, err.kind, str(err))

    def row(self) -> dict:
        """The row of a prediction table (``predict``, ``suggest``): property cells absent, status 'failed'."""
        return {"id": self.id, "file": self.file, "formula": self.formula, "status": "failed", "reason": self.reason,
                "error": self.error}
