"""The paper's table in miniature on AGIQA-3K (split by prompt): every method at the teacher size and the student
size with the same tiny architecture, over several seeds, then mean and std of the metrics per method.

    python recipes/paper_table.py --output_dir runs/paper_table --seeds 0 1 2

Runs already finished (their results.json exists) are not repeated, so the command can be restarted.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
KEYS = ("plcc", "srcc", "hpa", "hpa_margin", "nll", "w1", "tokens")

GRPO = ["--lambda_pw", "0", "--alpha_pt", "0", "--alpha_pw", "0"]


def methods(size: str, out: Path, seed: int) -> list[tuple[str, str, list[str]]]:
    """(name, script, args) for one size and seed; RISD and OPD distil the GDSO teacher of the same seed."""
    teacher_model = str(out / f"teacher-GDSO-s{seed}" / "model")
    rows = [("SFT", "train_sft.py", []), ("GRPO", "train_gdso.py", GRPO), ("GDSO", "train_gdso.py", [])]
    if size == "teacher":
        rows.append(("GDSO reward-from-text", "train_gdso.py", ["--reward_from", "text"]))
    else:
        rows += [("RISD", "train_risd.py", ["--teacher", teacher_model]),
                 ("OPD", "train_opd.py", ["--teacher", teacher_model])]
    return rows


def run(script: str, args: list[str], out_dir: Path) -> dict:
    if not (out_dir / "results.json").exists():
        cmd = [sys.executable, str(ROOT / script), *args, "--output_dir", str(out_dir), "--progress", "false"]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return json.loads((out_dir / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/paper_table")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="options passed to every recipe")
    args = parser.parse_args()
    out = Path(args.output_dir)
    common = ["--data", "agiqa", "--dimensions", "realism,alignment", "--steps", str(args.steps), *args.extra]
    table: dict = {}
    for seed in args.seeds:
        for size in ("teacher", "student"):
            for name, script, extra in methods(size, out, seed):
                res = run(script, [*common, "--seed", str(seed), "--preset", size, *extra],
                          out / f"{size}-{name.replace(' ', '_')}-s{seed}")
                table.setdefault((size, name), []).append(res["final"]["all"])
                if name == "GDSO":
                    table.setdefault((size, "zero-shot"), []).append(res["start"]["all"])
                write_table(table, out)
    print((out / "table.md").read_text())


def write_table(table: dict, out: Path) -> None:
    lines = ["| size | method | seeds | " + " | ".join(KEYS) + " |", "|---|---|---:|" + "---:|" * len(KEYS)]
    order = ["zero-shot", "SFT", "GRPO", "GDSO", "GDSO reward-from-text", "RISD", "OPD"]
    for size in ("teacher", "student"):
        for name in order:
            rows = table.get((size, name))
            if not rows:
                continue
            cells = []
            for k in KEYS:
                vals = [r[k] for r in rows]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{statistics.mean(vals):.3f} ± {sd:.3f}")
            lines.append(f"| {size} | {name} | {len(rows)} | " + " | ".join(cells) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
