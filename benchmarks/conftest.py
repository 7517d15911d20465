"""Benchmark session: builds each op's cases once, records time and peak memory per (op, mode, path), and at the
end writes a markdown table with ratios against the naive path (ZRCORE_BENCH_OUT, default benchmarks/results)."""

import datetime
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks.cases import build
from benchmarks.harness import CPU_MEMORY_RESOLUTION, bench_device, env_info
from benchmarks.results import ENV, Table

_RESULTS: list[dict] = []
_CACHE: dict = {}


def pytest_addoption(parser):
    parser.addoption("--bench-scale", default=os.environ.get("ZRCORE_BENCH_SCALE", "issue"),
                     choices=["issue", "small"], help="issue: the acceptance shapes; small: a quick smoke run")


@pytest.fixture(scope="session")
def cases(request):
    scale = request.config.getoption("--bench-scale")

    def get(op):
        if op not in _CACHE:
            _CACHE.clear()  # keep one op's tensors alive at a time
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            _CACHE[op] = build(op, bench_device(), scale)
        return _CACHE[op]

    return get


_COLUMNS = ("op", "shape", "mode", "path", "time (ms):", "time ratio naive/path:", "peak growth (MiB):",
            "memory ratio naive/path:")
_TABLES: dict = {}  # the extra memory columns' names -> the table with them


@pytest.fixture
def record():
    """Keeps a row for the session's table and writes it at once (benchmarks/results.py): the ratios are against
    the naive row of the same op and mode, measured first."""
    def add(**row):
        _RESULTS.append(row)
        extra = row.get("extra_mib", {})
        names = tuple(extra)
        if names not in _TABLES:
            _TABLES[names] = Table(*_COLUMNS, *(f"{name} (MiB):" for name in names))
        _TABLES[names].row(*_cells(row, _RESULTS), *(f"{extra[name] / 2**20:.1f}" for name in names))

    return add


def _commit() -> str:
    """ZRCORE_COMMIT when given (a copied working tree may carry stale git metadata), else git's HEAD."""
    if os.environ.get("ZRCORE_COMMIT"):
        return os.environ["ZRCORE_COMMIT"]
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:
        return "unknown"


def _cells(r: dict, rows: list[dict]) -> list[str]:
    """One row's cells: op, shape, mode, path, time, time ratio, peak growth, memory ratio (against the naive row of
    the same op and mode among ``rows``)."""
    b = next((x for x in rows if x["path"] == "naive" and (x["op"], x["mode"]) == (r["op"], r["mode"])), None)
    t_ratio = f"{b['time_s'] / r['time_s']:.2f}x" if b and r["time_s"] > 0 else "-"
    if b and r["peak_bytes"] > 0:
        m_ratio = f"{b['peak_bytes'] / r['peak_bytes']:.1f}x"
    elif b and not torch.cuda.is_available():  # below what the resident-set measurement resolves
        m_ratio = f">= {b['peak_bytes'] / CPU_MEMORY_RESOLUTION:.0f}x"
    else:
        m_ratio = "-"
    return [r["op"], r["shape"], r["mode"], r["path"], f"{r['time_s'] * 1e3:.3f}", t_ratio,
            f"{r['peak_bytes'] / 2**20:.1f}", m_ratio]


def format_table(rows: list[dict]) -> str:
    """Markdown table; rows may carry ``extra_mib`` ({column name: bytes}) for further memory columns."""
    extra = list(dict.fromkeys(name for r in rows for name in r.get("extra_mib", {})))
    lines = ["| op | shape | mode | path | time (ms) | time ratio naive/path | peak growth (MiB) | memory ratio naive/path |"
             + "".join(f" {name} (MiB) |" for name in extra),
             "|---|---|---|---|---:|---:|---:|---:|" + "---:|" * len(extra)]
    for r in rows:
        lines.append("| " + " | ".join(_cells(r, rows)) + " |"
                     + "".join(f" {r.get('extra_mib', {}).get(name, float('nan')) / 2**20:.1f} |" for name in extra))
    return "\n".join(lines)


def pytest_sessionfinish(session, exitstatus):
    if not _RESULTS:
        return
    if os.environ.get(ENV):
        return  # every row is in the results file already
    out = Path(os.environ.get("ZRCORE_BENCH_OUT", Path(__file__).parent / "results"))
    out.mkdir(parents=True, exist_ok=True)
    info = env_info()
    info.update(date=datetime.date.today().isoformat(), commit=_commit())
    tag = "cuda" if torch.cuda.is_available() else "cpu"
    header = ", ".join(f"{k}: {v}" for k, v in info.items())
    (out / f"ops-{tag}.md").write_text(f"{header}\n\n{format_table(_RESULTS)}\n")
    (out / f"ops-{tag}.json").write_text(json.dumps({"env": info, "rows": _RESULTS}, indent=1))
    print(f"\n{header}\n{format_table(_RESULTS)}")
