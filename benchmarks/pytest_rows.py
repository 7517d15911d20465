"""A pytest plugin for the GPU suite (``-p benchmarks.pytest_rows``): every failure as a results row the moment it
happens, a running total every 20 s, and each test module's counts at the end (benchmarks/results.py), so a run cut
at its cap keeps its failures and its last total. Under pytest-xdist only the controller writes."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from benchmarks.results import Table

EVERY_S = 20.0
_MODULES = Table("tests", "passed:", "failed:", "skipped:", "seconds:")
_TOTALS = Table("running total after (s)", "passed:", "failed:", "skipped:")
_FAILURES = Table("failed test", "phase", "error")
_counts: dict = defaultdict(Counter)
_seconds: Counter = Counter()
_clock = {"start": time.monotonic(), "last": time.monotonic(), "worker": False}


def pytest_configure(config) -> None:
    _clock["worker"] = hasattr(config, "workerinput")  # an xdist worker: its reports reach the controller


def _outcome(report) -> str | None:
    if report.failed:
        return "failed"
    if report.skipped:
        return "skipped"
    return "passed" if report.when == "call" else None


def pytest_runtest_logreport(report) -> None:
    if _clock["worker"]:
        return
    module = report.nodeid.split("::")[0]
    _seconds[module] += report.duration
    outcome = _outcome(report)
    if outcome is None:
        return
    _counts[module][outcome] += 1
    if outcome == "failed":
        error = str(report.longreprtext).strip().splitlines()[-1:] or [""]
        _FAILURES.row(report.nodeid, report.when, error[0].replace("|", "/")[:200])
    now = time.monotonic()
    if now - _clock["last"] >= EVERY_S:
        _clock["last"] = now
        total = sum(_counts.values(), Counter())
        _TOTALS.row(f"{now - _clock['start']:.0f}", total["passed"], total["failed"], total["skipped"])


def pytest_sessionfinish(session, exitstatus) -> None:
    if _clock["worker"]:
        return
    for module in sorted(_counts):
        c = _counts[module]
        _MODULES.row(module, c["passed"], c["failed"], c["skipped"], f"{_seconds[module]:.1f}")
