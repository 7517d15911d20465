"""The package's logger, ``logging.getLogger("zrcore")``: set its level to change how much the library says.

Library code logs and never prints; the recipes and ``zr-score`` call ``cli_logging`` once, which sends the
logger's records to the standard output (the one current at each record, so that captured output works) unless
the application has configured a handler itself.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("zrcore")


class _CurrentStream(logging.StreamHandler):
    """A StreamHandler that writes to whatever ``sys.stdout`` (or ``sys.stderr``) is when a record is emitted."""

    def __init__(self, name: str = "stdout"):
        super().__init__()
        self._name = name

    @property
    def stream(self):
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, value):  # set by StreamHandler.__init__; the current stream is used instead
        pass


def cli_logging(level: int = logging.INFO, stream: str = "stdout") -> logging.Logger:
    """The ``zrcore`` logger at ``level``, with one plain-message handler on ``stream`` ("stdout" or "stderr")
    unless it has a handler already; returns the logger."""
    if not logger.handlers:
        handler = _CurrentStream(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger
