"""The generator run over several seeds and kappas (the paper's figure 5 in miniature): validation reward over the
iterations, mean ± std over seeds per kappa, and the rise of each run against the seed-to-seed spread.

    python recipes/generator_seeds.py --reward_model runs/paper_synthetic/student-RISD-s0/model \\
        --output_dir runs/generator_seeds --seeds 0 1 2 --kappas 0 1 --extra --latent_size 56

Each run is ``recipes/train_generator.py`` with ``--seed S --kappa K``; a finished run is reused when it was made
with the same settings and code, else the script refuses naming the folder (``--rerun_changed``: run it again). Every
run is validated on the same prompts from the same noise (``--val_seed``, not the run's seed), so that the spread
over seeds is the generators', not the prompt sets'. The script writes ``table.md`` (reward at the start and the
end, the rise: mean ± std over the seeds, its 95% interval and whether the reward rises, falls or is inconclusive:
the interval covers 0) and ``val_reward.png`` (the change from the start, one band per kappa). With
``--held_out_reward_model`` (a student trained independently, e.g. on another seed) the table also gives the rise
of the same validation images under that model, which the generator never trained on: a rise under the trained-on
reward alone is reward hacking.

The interval is a bootstrap over the validation prompts and the seeds (``zrcore.bootstrap.mean_bootstrap`` of each
run's per-prompt rise, from its ``eval_start.json`` and ``eval_final.json``; the prompts are the same in every run,
so they are paired). Runs without those files (made before they were written) give an interval over the seeds only:
with 3 seeds or fewer that is the range of the seeds' rises (S draws that all pick the same seed have probability
S^-S >= 1/27 > 2.5%), so "rises" then means that every seed rose.
"""

import argparse
import json
from pathlib import Path

from zrcore import bootstrap
from zrcore.training.sweep import mean_std, run_once

ROOT = Path(__file__).resolve().parent


def curve(out_dir: Path, key: str = "val/reward") -> tuple[list[int], list[float]]:
    """(steps, validation rewards) logged by one generator run (``key``: "val/held_out/reward" for the held-out
    reward model's)."""
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if key in r]
    return [r["step"] for r in rows], [r[key] for r in rows]


def main(argv: list[str] | None = None) -> None:
    """Runs (or reuses) every (kappa, seed) run and writes table.md and val_reward.png."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward_model", required=True, help="a student checkpoint folder (train_risd.py)")
    parser.add_argument("--output_dir", default="runs/generator_seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kappas", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--held_out_reward_model", default="", help="an independent student that only scores")
    parser.add_argument("--rerun_changed", action="store_true",
                        help="run again afresh a finished run made with other settings or code (default: refuse)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="options passed to every run")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    held = ["--held_out_reward_model", args.held_out_reward_model] if args.held_out_reward_model else []
    curves: dict[tuple[str, float], list] = {}
    prompt_rises: dict[tuple[str, float], list] = {}
    for kappa in args.kappas:
        for seed in args.seeds:
            run_dir = out / f"kappa{kappa:g}-s{seed}"
            run_args = ["--reward_model", args.reward_model, "--seed", str(seed), "--aggregation", "pessimistic",
                        "--kappa", str(kappa), *held, *args.extra]
            run_once(ROOT / "train_generator.py", run_args, run_dir, rerun_changed=args.rerun_changed)
            curves.setdefault(("trained-on", kappa), []).append(curve(run_dir))
            prompt_rises.setdefault(("trained-on", kappa), []).append(per_prompt_rise(run_dir, "reward"))
            if held:
                curves.setdefault(("held-out", kappa), []).append(curve(run_dir, "val/held_out/reward"))
                prompt_rises.setdefault(("held-out", kappa), []).append(per_prompt_rise(run_dir, "held_out"))
    lines = ["| reward model | kappa | seeds | val reward start | val reward end | rise | rise 95% interval (bootstrap "
             "over validation prompts and seeds; * seeds only) | verdict |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for (which, kappa), runs in sorted(curves.items(), key=lambda kv: (kv[0][1], kv[0][0] != "trained-on")):
        start = mean_std([r[1][0] for r in runs])
        end = mean_std([r[1][-1] for r in runs])
        rises = [r[1][-1] - r[1][0] for r in runs]
        rise = mean_std(rises)
        per_prompt = prompt_rises[(which, kappa)]
        interval, verdict = rise_interval(per_prompt if all(p is not None for p in per_prompt) else rises)
        lines.append(f"| {which} | {kappa:g} | {len(runs)} | {start[0]:.4f} ± {start[1]:.4f} | {end[0]:.4f} ± "
                     f"{end[1]:.4f} | {rise[0]:+.4f} ± {rise[1]:.4f} | {interval} | {verdict} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot(curves, out / "val_reward.png")
    print((out / "table.md").read_text())


def per_prompt_rise(run_dir: Path, key: str) -> list[float] | None:
    """The run's rise per validation prompt (its eval_final.json minus its eval_start.json, ``key``: "reward" or
    "held_out"), None when the run did not write them."""
    files = [run_dir / f"eval_{name}.json" for name in ("start", "final")]
    if not all(f.exists() for f in files):
        return None
    start, final = (json.loads(f.read_text())[key] for f in files)
    if start is None or final is None or len(start) != len(final):
        return None
    return [b - a for a, b in zip(start, final)]


def rise_interval(rises: list) -> tuple[str, str]:
    """The 95% interval of the mean rise (B = 2000, seed 0) and its verdict: "rises" (above 0), "falls" (below 0)
    or "inconclusive" (it covers 0, or a single seed). ``rises``: per seed, a list of per-prompt rises (the
    bootstrap resamples the prompts and the seeds) or one number (the seeds only: the interval is marked *)."""
    if len(rises) < 2:
        return "-", "inconclusive (one seed)"
    iv = bootstrap.mean_bootstrap(rises, n_boot=2000, seed=0)
    verdict = "rises" if iv.low > 0 else "falls" if iv.high < 0 else "inconclusive"
    mark = "" if isinstance(rises[0], list) else "*"
    return f"[{iv.low:+.4f}, {iv.high:+.4f}]{mark}", verdict


def plot(curves: dict, path: Path) -> None:
    """Validation reward over the iterations, as the change from each run's start (the kappas differ by a constant
    of about kappa x the predicted std): the mean over seeds per (reward model, kappa), a band of ± one std; the
    held-out reward model's curves dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (which, kappa), runs in curves.items():
        steps = runs[0][0]
        per_step = [[r[1][i] - r[1][0] for r in runs] for i in range(len(steps))]
        mean, std = zip(*(mean_std(v) for v in per_step))
        ax.plot(steps, mean, ls="-" if which == "trained-on" else "--",
                label=f"{which}, kappa = {kappa:g} ({len(runs)} seeds)")
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.25)
    ax.set_xlabel("generator step")
    ax.axhline(0.0, color="gray", lw=0.5)
    ax.set_ylabel("validation reward - its value at step 0")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    from zrcore._log import cli_logging
    from zrcore.training.entry import run_main

    cli_logging()
    run_main(main, prog="generator_seeds.py")
