"""The paper's comparisons in miniature (Tables 2 and 3): every method from the same pretrained start, over several
seeds, then mean and std of the metrics per method, on the synthetic rubric set or on AGIQA-3K.

    python recipes/paper_table.py --data synthetic --output_dir runs/paper_synthetic --seeds 0 1 2
    python recipes/paper_table.py --data agiqa --output_dir runs/paper_agiqa --seeds 0 1 2 --extra --eval_limit 150

Teacher size (the tiny ``teacher`` preset): zero-shot (the GDSO run's start), SFT, GRPO, GDSO, GDSO with the
parsed-text reward, GDSO without the pairwise terms (lambda_pw = alpha_pw = 0). Student size (``student``
preset): SFT, RISD and OPD, both distilled from the GDSO teacher of the same seed. Runs already finished (their
results.json exists) are not repeated, so the command can be restarted.
"""

import argparse
import json
from pathlib import Path

from zrcore.training.sweep import mean_std, run_once

ROOT = Path(__file__).resolve().parent
KEYS = ("plcc", "srcc", "hpa", "hpa_margin", "nll", "w1", "tokens")
GRPO = ["--lambda_pw", "0", "--alpha_pt", "0", "--alpha_pw", "0"]
ORDER = [("teacher", "zero-shot"), ("teacher", "SFT"), ("teacher", "GRPO"), ("teacher", "GDSO"),
         ("teacher", "GDSO reward-from-text"), ("teacher", "GDSO without pairwise"), ("student", "SFT"),
         ("student", "RISD"), ("student", "OPD")]


def methods(out: Path, seed: int) -> list[tuple[str, str, str, list[str]]]:
    """(size, name, script, args) of one seed, in run order: the GDSO teacher before the students it teaches."""
    teacher_model = str(out / f"teacher-GDSO-s{seed}" / "model")
    return [("teacher", "GDSO", "train_gdso.py", []),
            ("teacher", "SFT", "train_sft.py", []),
            ("teacher", "GRPO", "train_gdso.py", GRPO),
            ("teacher", "GDSO reward-from-text", "train_gdso.py", ["--reward_from", "text"]),
            ("teacher", "GDSO without pairwise", "train_gdso.py", ["--lambda_pw", "0", "--alpha_pw", "0"]),
            ("student", "SFT", "train_sft.py", []),
            ("student", "RISD", "train_risd.py", ["--teacher", teacher_model]),
            ("student", "OPD", "train_opd.py", ["--teacher", teacher_model])]


def run(script: str, args: list[str], out_dir: Path) -> dict:
    return run_once(ROOT / script, args, out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="synthetic", choices=["synthetic", "agiqa"])
    parser.add_argument("--output_dir", default="")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="options passed to every recipe")
    args = parser.parse_args()
    out = Path(args.output_dir or f"runs/paper_{args.data}")
    common = ["--data", args.data, "--steps", str(args.steps)]
    if args.data == "agiqa":  # AGIQA-3K has two human scores: quality (realism) and alignment
        common += ["--dimensions", "realism,alignment"]
    common += args.extra
    table: dict = {}
    for seed in args.seeds:
        for size, name, script, extra in methods(out, seed):
            res = run(script, [*common, "--seed", str(seed), "--preset", size, *extra],
                      out / f"{size}-{name.replace(' ', '_')}-s{seed}")
            table.setdefault((size, name), []).append(res["final"]["all"])
            if name == "GDSO":
                table.setdefault((size, "zero-shot"), []).append(res["start"]["all"])
            write_table(table, out)
    print((out / "table.md").read_text())


def write_table(table: dict, out: Path) -> None:
    """Mean ± std over the seeds of each (size, method) row, as markdown (table.md) and JSON (table.json)."""
    lines = ["| size | method | seeds | " + " | ".join(KEYS) + " |", "|---|---|---:|" + "---:|" * len(KEYS)]
    summary = {}
    for size, name in ORDER:
        rows = table.get((size, name))
        if not rows:
            continue
        cells, stats = [], {}
        for k in KEYS:
            vals = [r[k] for r in rows]
            mean, sd = mean_std(vals)
            stats[k] = {"mean": mean, "std": sd, "values": vals}
            cells.append(f"{mean:.3f} ± {sd:.3f}")
        summary[f"{size}/{name}"] = stats
        lines.append(f"| {size} | {name} | {len(rows)} | " + " | ".join(cells) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "table.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
