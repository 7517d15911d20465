"""The library speaks through the ``zrcore`` logger, never ``print``: an application sets its verbosity. Only the
command-line entry points write their own lines (the one-line error, zr-score's row reports)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import zrcore

ROOT = Path(zrcore.__file__).parent
CLI_OUTPUT = {"cli/score.py", "training/entry.py"}  # the entry points' own stderr lines


def test_no_print_in_the_library():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel in CLI_OUTPUT:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                found.append(f"{rel}:{node.lineno}")
    assert found == []


def test_the_logger_sets_the_verbosity(tmp_path, capsys):
    from tests.training.test_loop import ToyLoop
    from zrcore._log import cli_logging
    from zrcore.training.config import RunConfig

    logger = logging.getLogger("zrcore")
    kept = list(logger.handlers)  # an earlier in-process CLI (zr-score logs to stderr) may have set one up
    for handler in kept:
        logger.removeHandler(handler)
    cli_logging()
    cfg = RunConfig(output_dir=str(tmp_path), steps=2, progress=False)
    ToyLoop(cfg).fit()
    try:
        capsys.readouterr()
        ToyLoop(RunConfig(output_dir=str(tmp_path), steps=2, progress=False)).fit()
        assert "resumed from" in capsys.readouterr().out
        logger.setLevel(logging.WARNING)
        ToyLoop(RunConfig(output_dir=str(tmp_path), steps=2, progress=False)).fit()
        assert "resumed from" not in capsys.readouterr().out
    finally:
        logger.setLevel(logging.INFO)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in kept:
            logger.addHandler(handler)
