"""Rows as they are measured: every table row a benchmark prints is also appended (and flushed) to the results file
named by ``ZRCORE_RESULTS``, so a run cut at its time cap keeps every row it finished.

    table = Table("op", "path", "time (ms)")   # the header is written before the first row
    table.row("pairwise_gap", "zrcore", "0.514")
"""

from __future__ import annotations

import os

ENV = "ZRCORE_RESULTS"
_last_table: list = [None]  # the table that wrote the last row: another table's row in between repeats the header


def emit(line: str) -> None:
    """Print ``line`` and append it to the results file (when ``ZRCORE_RESULTS`` names one)."""
    print(line, flush=True)
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()


def note(text: str) -> None:
    """A line of prose between tables (the next table row repeats its header)."""
    _last_table[0] = None
    emit(text)


class Table:
    """A markdown table written row by row. ``columns``: header cells; a cell ending in ":" is right-aligned (the
    colon is dropped from the header)."""

    def __init__(self, *columns: str):
        self.header = [c.rstrip(":") for c in columns]
        self.align = ["---:" if c.endswith(":") else "---" for c in columns]

    def row(self, *cells) -> None:
        if len(cells) != len(self.header):
            raise ValueError(f"a row of {len(cells)} cells for a table of {len(self.header)} columns")
        if _last_table[0] is not self:
            emit("")
            emit("| " + " | ".join(self.header) + " |")
            emit("|" + "|".join(self.align) + "|")
            _last_table[0] = self
        emit("| " + " | ".join(str(c) for c in cells) + " |")
