"""Runs every case of tests/bad_inputs.py and writes what each gets into docs/BAD_INPUTS.md; fails when the
committed table differs (the run rewrites it: commit the new one) or when a case is neither refused in one line
nor accepted."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

from tests.bad_inputs import CASES

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "BAD_INPUTS.md"
HEADER = """# Bad inputs and what they get

Every input below was fed to the library by `tests/test_bad_inputs_table.py`, which writes this table from what
happened (cases in `tests/bad_inputs.py`). "refused" is an exception or an exit code with its one line; the
recipes and `zr-score` print that line alone and exit with code 2 (`--debug` or `ZRCORE_DEBUG=1` shows the
traceback). "accepted" is what the library made of an input that can be read correctly; "reported, skipped" a bad
row of `zr-score` (reported with its line, the others scored; `--on-error fail` refuses instead).

| entry point | input | outcome |
|---|---|---|
"""


def outcome(case, tmp: Path) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = str(case.run(tmp))
    except Exception as err:  # noqa: BLE001 - the outcome is the table's content
        text = " ".join(str(err).split())
        return f"refused: `{type(err).__name__}: {text}`"
    if result.startswith("exit 0: error: accepted"):  # a recipe that went on to build its trainer
        return f"accepted: `{result.removeprefix('exit 0: error: accepted').strip()}`"
    if result.startswith("exit 0"):  # zr-score: bad rows reported and skipped, the others scored
        return f"reported, skipped: `{result}`"
    if result.startswith("exit"):
        return f"refused: `{result}`"
    return f"accepted: `{result}`"


def clean(text: str, tmp: Path) -> str:
    text = text.replace(str(tmp), "TMP").replace("|", "\\|")
    return re.sub(r"0x[0-9a-f]+", "0x...", text)


def test_bad_inputs_table(tmp_path, capsys):
    logging.getLogger("zrcore").setLevel(logging.ERROR)
    rows = []
    for i, case in enumerate(CASES):
        tmp = tmp_path / f"case{i}"
        tmp.mkdir()
        got = clean(outcome(case, tmp), tmp)
        capsys.readouterr()
        rows.append(f"| {case.entry} | {case.given} | {got} |")
        assert got.startswith(("refused: `", "accepted: `", "reported, skipped: `")), (case.given, got)
        assert "Traceback" not in got and "\n" not in got
    text = HEADER + "\n".join(rows) + "\n"
    old = TABLE.read_text() if TABLE.exists() else ""
    if old != text:
        TABLE.write_text(text)
    assert old == text, "docs/BAD_INPUTS.md was out of date and has been rewritten: review and commit it"
