"""The paper's comparisons in miniature (Tables 2 and 3): every method from the same pretrained start, over several
seeds, then the mean of the metrics per method with intervals, on the synthetic rubric set or on AGIQA-3K.

    python recipes/paper_table.py --data synthetic --output_dir runs/paper_synthetic --seeds 0 1 2
    python recipes/paper_table.py --data agiqa --output_dir runs/paper_agiqa --seeds 0 1 2 --extra --eval_limit 150

Teacher size (the tiny ``teacher`` preset): zero-shot (the GDSO run's start), SFT, GRPO with the parsed-text
reward, GDSO with the parsed-text reward, GDSO without the pairwise terms (lambda_pw = alpha_pw = 0), GDSO. Student
size (``student`` preset), all at ``--student_steps``: SFT, RISD and OPD, both distilled from the GDSO teacher of
the same seed. Every row trains on the same data and steps with the same one-hot target; the held-out set is fixed
(``eval_seed``), so the seeds vary training only. ``--steps`` 0 (the default) runs every recipe at its own default
steps (the main job's); ``--methods`` runs a subset of the rows. A finished run is reused when it was made with the
same settings and code (``zrcore.training.sweep.run_once``), so the command can be restarted.

Writes ``table.md``: per row the mean over the seeds of HPA and PLCC (the average over the dimensions) with a 95%
interval, the other metrics as mean ± std over the seeds, HPA per dimension with its interval, the ceiling of a
model that knows the true scores, and the paper's orderings: the difference of the two rows' means with the 95%
interval of a paired bootstrap over the held-out prompts and the seeds (``zrcore.bootstrap``; the rows' runs must
score the same held-out records) and whether it holds, is reversed or is not resolved; RISD's closeness to its GDSO
teacher as the interval of teacher - student against 0.03 HPA (holds when its upper end is at most 0.03, fails
when its lower end is above, else not shown). The statistics come from each run's per-record
predictions (``eval_final.json``; the zero-shot row from the GDSO run's ``eval_start.json``). ``table.json`` keeps
every seed's numbers per row and dimension and the intervals.
"""

import argparse
import json
from pathlib import Path

from zrcore import bootstrap
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
    parser.add_argument("--steps", type=int, default=0,
                        help="training steps of every teacher-size row (0: the recipes' default, the main job's)")
    parser.add_argument("--student_steps", type=int, default=0, help="of every student row (default: --steps)")
    parser.add_argument("--methods", nargs="+", default=[],
                        help="only these rows, as size/name (e.g. teacher/GDSO student/RISD; default: all); "
                             "student/RISD and student/OPD need teacher/GDSO")
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
    known = {f"{size}/{name}" for size, name in ORDER if name != "zero-shot"}
    unknown = sorted(set(args.methods) - known)
    if unknown:
        parser.error(f"--methods: unknown rows {unknown}; choose from {sorted(known)}")
    if {"student/RISD", "student/OPD"} & set(args.methods) and "teacher/GDSO" not in args.methods:
        parser.error("--methods: student/RISD and student/OPD are distilled from teacher/GDSO: name it too")
    table: dict = {}
    ceiling = None
    for seed in args.seeds:
        for size, name, script, extra in methods(out, seed):
            if args.methods and f"{size}/{name}" not in args.methods:
                continue
            run_dir = out / folder(size, name, seed)
            n_steps = ["--steps", str(steps[size])] if steps[size] else []
            res = run_once(ROOT / script, [*common, *n_steps, "--seed", str(seed), "--preset", size, *extra],
                           run_dir)
            table.setdefault((size, name), {})[seed] = run_dir / "eval_final.json"
            if name == "GDSO":
                table.setdefault((size, "zero-shot"), {})[seed] = run_dir / "eval_start.json"
                ceiling = res.get("ceiling", ceiling)
            write_table(table, ceiling, out, args)
    print((out / "table.md").read_text())


BOOT = {"n_boot": 2000, "seed": 0}  # the bootstrap's replicates and generator seed: the intervals are deterministic


def load_row(evals: dict[int, Path]) -> dict:
    """One row from its runs' evaluation files (seed -> eval_<name>.json): each seed's metrics as the run computed
    them and its per-(dimension, prompt) statistics for the bootstrap."""
    row = {"seeds": sorted(evals), "metrics": [], "stats": []}
    for seed in row["seeds"]:
        path = Path(evals[seed])
        if not path.exists():
            raise SystemExit(f"{path} is missing: the paper table needs every run's per-record predictions "
                             f"(runs made before they were written must be rerun)")
        data = json.loads(path.read_text())
        row["metrics"].append(data["metrics"])
        row["stats"].append(bootstrap.prompt_stats(data["predictions"], name=str(path)))
    return row


def summarise(row: dict) -> dict:
    """dimension -> metric -> {mean, std, values} over the seeds, and for HPA and PLCC the 95% interval of the mean
    over the seeds (bootstrap over the held-out prompts and the seeds)."""
    results = row["metrics"]
    out = {dim: {k: dict(zip(("mean", "std"), mean_std([r[dim][k] for r in results])),
                         values=[r[dim][k] for r in results]) for k in KEYS}
           for dim in results[0] if isinstance(results[0][dim], dict)}
    for metric, per_dim in bootstrap.paired_bootstrap(row["stats"], **BOOT).items():
        for dim, iv in per_dim.items():
            out[dim][metric]["interval"] = [iv.low, iv.high]
    return out


def _cell(stats: dict) -> str:
    low, high = stats["interval"]
    return f"{stats['mean']:.3f} [{low:.3f}, {high:.3f}]"


def _paired(a: dict, b: dict) -> tuple[list, list, list[int]]:
    """The two rows' statistics on the seeds both have, in the same order (runs of one seed are paired)."""
    seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
    return ([a["stats"][a["seeds"].index(s)] for s in seeds], [b["stats"][b["seeds"].index(s)] for s in seeds],
            seeds)


def orderings(rows: dict) -> tuple[list[str], list[dict]]:
    """Each of the paper's orderings on HPA and PLCC (averaged over the dimensions): the difference of the rows'
    means over their common seeds, its 95% paired-bootstrap interval and verdict; RISD's closeness to its GDSO
    teacher on HPA. Returns the table's lines and their numbers."""
    lines, found = [], []
    for better, worse, claim in ORDERINGS:
        a, b = rows.get("/".join(better)), rows.get("/".join(worse))
        if a is None or b is None:
            continue
        runs_a, runs_b, seeds = _paired(a, b)
        if not seeds:
            continue
        res = bootstrap.paired_bootstrap(runs_a, runs_b, **BOOT)
        for key in ("hpa", "plcc"):
            iv = res[key]["all"]
            lines.append(f"- {claim} on {key.upper()}: {iv.estimate:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}] "
                         f"({len(seeds)} seeds): {iv.verdict}")
            found.append({"claim": claim, "metric": key, "seeds": seeds, **iv.to_dict(), "verdict": iv.verdict})
    risd, gdso = rows.get("student/RISD"), rows.get("teacher/GDSO")
    if risd and gdso:
        runs_t, runs_s, seeds = _paired(gdso, risd)
        if seeds:
            close = bootstrap.closeness(runs_t, runs_s, bound=0.03, metric="hpa", **BOOT)
            iv = close.interval
            tokens = [mean_std([m["all"]["tokens"] for m in row["metrics"]])[0] for row in (risd, gdso)]
            verdict, meaning = (
                ("holds", "the student trails its teacher by at most 0.03 HPA at 97.5% one-sided confidence")
                if close.holds else
                ("fails", "the student trails its teacher by more than 0.03 HPA at 97.5% one-sided confidence")
                if iv.low > 0.03 else ("not shown", "a gap above 0.03 HPA is not ruled out (nor shown)"))
            lines.append(f"- RISD within 0.03 HPA of its GDSO teacher: teacher - student {iv.estimate:+.3f} "
                         f"[{iv.low:+.3f}, {iv.high:+.3f}] ({len(seeds)} seeds): {verdict}: {meaning} (tokens "
                         f"{tokens[0]:.1f} vs {tokens[1]:.1f})")
            found.append({"claim": "RISD within 0.03 HPA of its GDSO teacher", "metric": "hpa", "seeds": seeds,
                          **close.to_dict(), "verdict": verdict})
    return lines, found


def write_table(table: dict, ceiling: dict | None, out: Path, args) -> None:
    """table.md and table.json (see the module docstring) from ``table``: (size, name) -> {seed: the run's
    eval_<name>.json}."""
    loaded = {f"{size}/{name}": load_row(table[(size, name)]) for size, name in ORDER if table.get((size, name))}
    summary = {key: summarise(row) for key, row in loaded.items()}
    others = [k for k in KEYS if k not in ("hpa", "plcc")]
    lines = ["| size | method | seeds | HPA [95% CI] | PLCC [95% CI] | " + " | ".join(others) + " |",
             "|---|---|---:|---:|---:|" + "---:|" * len(others)]
    for key, stats in summary.items():
        size, name = key.split("/", 1)
        cells = [_cell(stats["all"]["hpa"]), _cell(stats["all"]["plcc"])]
        cells += [f"{stats['all'][k]['mean']:.3f} ± {stats['all'][k]['std']:.3f}" for k in others]
        lines.append(f"| {size} | {name} | {len(loaded[key]['seeds'])} | " + " | ".join(cells) + " |")
    if ceiling:
        lines.append("| - | ceiling (true score) | - | " + " | ".join(
            f"{ceiling['all'][k]:.3f}" if k in ceiling["all"] else "-" for k in ("hpa", "plcc", *others)) + " |")
    prompts = {len(row["stats"][0].prompt_ids) for row in loaded.values()}
    lines += ["", f"HPA and PLCC (the average over the dimensions): the mean over the seeds and its 95% interval, from "
              f"{BOOT['n_boot']} bootstrap replicates that resample the held-out prompts "
              f"({', '.join(map(str, sorted(prompts)))}) and the seeds with replacement (``zrcore.bootstrap``); with "
              f"one seed the interval reflects the held-out prompts only. The other columns: mean ± std over the "
              f"seeds."]
    dims = [d for d in next(iter(summary.values())) if d != "all"] if summary else []
    lines += ["", "HPA per dimension (mean over the seeds [95% interval]):", "",
              "| size | method | " + " | ".join(dims) + " |", "|---|---|" + "---:|" * len(dims)]
    for key, stats in summary.items():
        size, name = key.split("/", 1)
        lines.append(f"| {size} | {name} | " + " | ".join(_cell(stats[d]["hpa"]) for d in dims) + " |")
    if ceiling:
        lines.append("| - | ceiling (true score) | " + " | ".join(f"{ceiling[d]['hpa']:.3f}" for d in dims) + " |")
    order_lines, order_numbers = orderings(loaded)
    lines += ["", "The paper's orderings: the difference of the two rows' means over their common seeds [its 95% "
              "interval, paired bootstrap: the same prompt and seed draws for both rows]; holds when the interval "
              "is above 0, reversed when below, else not resolved:", "", *order_lines]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    payload = json.dumps({"rows": summary, "seeds_per_row": {k: row["seeds"] for k, row in loaded.items()},
                          "orderings": order_numbers, "bootstrap": BOOT | {"level": 0.95}, "ceiling": ceiling,
                          "seeds": args.seeds, "steps": args.steps, "student_steps": args.student_steps or args.steps,
                          "data": args.data, "eval_prompts": args.eval_prompts, "extra": args.extra}, indent=1)
    (out / "table.json").write_text(payload)
    if args.json:
        Path(args.json).write_text(payload)


if __name__ == "__main__":
    from zrcore._log import cli_logging

    cli_logging()
    main()
