"""The paper's comparisons in miniature (Tables 2 and 3): every method from the same pretrained start, over several
seeds, then mean and std of the metrics per method, on the synthetic rubric set or on AGIQA-3K.

    python recipes/paper_table.py --data synthetic --output_dir runs/paper_synthetic --seeds 0 1 2
    python recipes/paper_table.py --data agiqa --output_dir runs/paper_agiqa --seeds 0 1 2 --extra --eval_limit 150

Teacher size (the tiny ``teacher`` preset): zero-shot (the GDSO run's start), SFT, GRPO with the parsed-text
reward, GDSO with the parsed-text reward, GDSO without the pairwise terms (lambda_pw = alpha_pw = 0), GDSO. Student
size (``student`` preset), all at ``--student_steps``: SFT, RISD and OPD, both distilled from the GDSO teacher of
the same seed. Every row trains on the same data and steps with the same one-hot target; the held-out set is fixed
(``eval_seed``), so the seeds vary training only. Runs already finished (their results.json exists) are not
repeated, so the command can be restarted.

Writes ``table.md`` (mean ± std per row over the seeds, the ceiling of a model that knows the true scores, HPA
per dimension, and the paper's orderings: which hold by more than twice the larger seed std) and ``table.json``
(every seed's numbers per row and dimension).
"""

import argparse
import json
from pathlib import Path

from zrcore.training.sweep import mean_std, run_once

ROOT = Path(__file__).resolve().parent
KEYS = ("plcc", "srcc", "hpa", "hpa_margin", "nll", "w1", "tokens")
GRPO = ["--lambda_pw", "0", "--alpha_pt", "0", "--alpha_pw", "0"]
TEXT = ["--reward_from", "text"]
ORDER = [("teacher", "zero-shot"), ("teacher", "SFT"), ("teacher", "GRPO (parsed text)"),
         ("teacher", "GDSO (parsed text)"), ("teacher", "GDSO without pairwise"), ("teacher", "GDSO"),
         ("student", "SFT"), ("student", "RISD"), ("student", "OPD")]
# the paper's orderings: (better row, worse row, what the paper claims); RISD's is a closeness claim
ORDERINGS = [(("teacher", "GDSO"), ("teacher", "GRPO (parsed text)"), "GDSO > GRPO"),
             (("teacher", "GDSO"), ("teacher", "SFT"), "GDSO > SFT"),
             (("teacher", "GDSO"), ("teacher", "GDSO (parsed text)"), "distribution > parsed text"),
             (("teacher", "GDSO"), ("teacher", "GDSO without pairwise"), "pairwise helps"),
             (("student", "RISD"), ("student", "OPD"), "RISD > OPD")]


def methods(out: Path, seed: int) -> list[tuple[str, str, str, list[str]]]:
    """(size, name, script, args) of one seed, in run order: the GDSO teacher before the students it teaches."""
    teacher_model = str(out / f"teacher-GDSO-s{seed}" / "model")
    later = ["--eval_start", "false"]  # the zero-shot row is the GDSO run's start: evaluated once
    return [("teacher", "GDSO", "train_gdso.py", []),
            ("teacher", "SFT", "train_sft.py", later),
            ("teacher", "GRPO (parsed text)", "train_gdso.py", GRPO + TEXT + later),
            ("teacher", "GDSO (parsed text)", "train_gdso.py", TEXT + later),
            ("teacher", "GDSO without pairwise", "train_gdso.py", ["--lambda_pw", "0", "--alpha_pw", "0", *later]),
            ("student", "SFT", "train_sft.py", later),
            ("student", "RISD", "train_risd.py", ["--teacher", teacher_model, *later]),
            ("student", "OPD", "train_opd.py", ["--teacher", teacher_model, *later])]


def folder(size: str, name: str, seed: int) -> str:
    return f"{size}-{name.replace(' ', '_').replace('(', '').replace(')', '')}-s{seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="synthetic", choices=["synthetic", "agiqa"])
    parser.add_argument("--output_dir", default="")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60, help="training steps of every teacher-size row")
    parser.add_argument("--student_steps", type=int, default=0, help="of every student row (default: --steps)")
    parser.add_argument("--eval_prompts", type=int, default=48, help="synthetic held-out prompts")
    parser.add_argument("--json", default="", help="also write table.json here (e.g. docs/paper_synthetic.json)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="options passed to every recipe")
    args = parser.parse_args()
    out = Path(args.output_dir or f"runs/paper_{args.data}")
    common = ["--data", args.data, "--eval_prompts", str(args.eval_prompts)]
    if args.data == "agiqa":  # AGIQA-3K has two human scores: quality (realism) and alignment
        common += ["--dimensions", "realism,alignment"]
    common += args.extra
    steps = {"teacher": args.steps, "student": args.student_steps or args.steps}
    table: dict = {}
    ceiling = None
    for seed in args.seeds:
        for size, name, script, extra in methods(out, seed):
            res = run_once(ROOT / script, [*common, "--steps", str(steps[size]), "--seed", str(seed),
                                            "--preset", size, *extra], out / folder(size, name, seed))
            table.setdefault((size, name), []).append(res["final"])
            if name == "GDSO":
                table.setdefault((size, "zero-shot"), []).append(res["start"])
                ceiling = res.get("ceiling", ceiling)
            write_table(table, ceiling, out, args)
    print((out / "table.md").read_text())


def summarise(rows: list[dict]) -> dict:
    """dimension -> metric -> {mean, std, values} over the seeds' results."""
    return {dim: {k: dict(zip(("mean", "std"), mean_std([r[dim][k] for r in rows])), values=[r[dim][k] for r in rows])
                  for k in KEYS}
            for dim in rows[0] if isinstance(rows[0][dim], dict)}


def orderings(summary: dict) -> list[str]:
    """Each of the paper's orderings on HPA and PLCC (averaged over the dimensions): the difference of the means
    and whether it exceeds twice the larger seed std; RISD's closeness to its GDSO teacher on HPA."""
    lines = []
    for better, worse, claim in ORDERINGS:
        a, b = summary.get("/".join(better)), summary.get("/".join(worse))
        if a is None or b is None:
            continue
        seeds = min(len(a["all"]["hpa"]["values"]), len(b["all"]["hpa"]["values"]))
        for key in ("hpa", "plcc"):
            diff = a["all"][key]["mean"] - b["all"][key]["mean"]
            bar = 2 * max(a["all"][key]["std"], b["all"][key]["std"])
            verdict = ("one seed: no spread to judge by" if seeds < 2 else "holds" if diff > bar
                       else "reversed" if -diff > bar else "not resolved")
            lines.append(f"- {claim} on {key.upper()}: {diff:+.3f} (2 std = {bar:.3f}): {verdict}")
    risd, gdso = summary.get("student/RISD"), summary.get("teacher/GDSO")
    if risd and gdso:
        gap = gdso["all"]["hpa"]["mean"] - risd["all"]["hpa"]["mean"]
        lines.append(f"- RISD within 0.03 HPA of its GDSO teacher: gap {gap:+.3f}: "
                     f"{'holds' if gap <= 0.03 else 'does not hold'} (tokens {risd['all']['tokens']['mean']:.1f} "
                     f"vs {gdso['all']['tokens']['mean']:.1f})")
    return lines


def write_table(table: dict, ceiling: dict | None, out: Path, args) -> None:
    """table.md and table.json (see the module docstring)."""
    summary = {f"{size}/{name}": summarise(table[(size, name)]) for size, name in ORDER if table.get((size, name))}
    lines = ["| size | method | seeds | " + " | ".join(KEYS) + " |", "|---|---|---:|" + "---:|" * len(KEYS)]
    for key, stats in summary.items():
        size, name = key.split("/", 1)
        cells = [f"{stats['all'][k]['mean']:.3f} ± {stats['all'][k]['std']:.3f}" for k in KEYS]
        lines.append(f"| {size} | {name} | {len(stats['all']['hpa']['values'])} | " + " | ".join(cells) + " |")
    if ceiling:
        lines.append("| - | ceiling (true score) | - | " + " | ".join(
            f"{ceiling['all'][k]:.3f}" if k in ceiling["all"] else "-" for k in KEYS) + " |")
    dims = [d for d in next(iter(summary.values())) if d != "all"] if summary else []
    lines += ["", "HPA per dimension (mean ± std over the seeds):", "",
              "| size | method | " + " | ".join(dims) + " |", "|---|---|" + "---:|" * len(dims)]
    for key, stats in summary.items():
        size, name = key.split("/", 1)
        lines.append(f"| {size} | {name} | " + " | ".join(
            f"{stats[d]['hpa']['mean']:.3f} ± {stats[d]['hpa']['std']:.3f}" for d in dims) + " |")
    if ceiling:
        lines.append("| - | ceiling (true score) | " + " | ".join(f"{ceiling[d]['hpa']:.3f}" for d in dims) + " |")
    lines += ["", "The paper's orderings (mean difference against twice the larger seed std):", "",
              *orderings(summary)]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    payload = json.dumps({"rows": summary, "ceiling": ceiling, "seeds": args.seeds, "steps": args.steps,
                          "student_steps": args.student_steps or args.steps, "data": args.data,
                          "eval_prompts": args.eval_prompts, "extra": args.extra}, indent=1)
    (out / "table.json").write_text(payload)
    if args.json:
        Path(args.json).write_text(payload)


if __name__ == "__main__":
    from zrcore._log import cli_logging

    cli_logging()
    main()
