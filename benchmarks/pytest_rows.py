"""A pytest plugin for the GPU suite (``-p benchmarks.pytest_rows``): each test module's counts as a results row
when the run moves past it, and every failure as its own row the moment it happens (benchmarks/results.py)."""

from __future__ import annotations

from collections import Counter

from benchmarks.results import Table

_TABLE = Table("tests", "passed:", "failed:", "skipped:", "seconds:")
_FAILURES = Table("failed test", "phase", "error")
_state: dict = {"module": None, "counts": Counter(), "seconds": 0.0}


def _flush() -> None:
    if _state["module"] is not None:
        c = _state["counts"]
        _TABLE.row(_state["module"], c["passed"], c["failed"], c["skipped"], f"{_state['seconds']:.1f}")
    _state.update(module=None, counts=Counter(), seconds=0.0)


def pytest_runtest_logreport(report) -> None:
    module = report.nodeid.split("::")[0]
    if module != _state["module"]:
        _flush()
        _state["module"] = module
    _state["seconds"] += report.duration
    if report.failed:
        _state["counts"]["failed"] += 1
        error = str(report.longreprtext).strip().splitlines()[-1:] or [""]
        _FAILURES.row(report.nodeid, report.when, error[0].replace("|", "/")[:200])
    elif report.skipped:
        _state["counts"]["skipped"] += 1
    elif report.when == "call":
        _state["counts"]["passed"] += 1


def pytest_sessionfinish(session, exitstatus) -> None:
    _flush()
