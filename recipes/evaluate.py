"""Evaluate checkpoints side by side: PLCC, SRCC, HPA, margin HPA, calibration (bin NLL, W1) and output tokens per
dimension; writes a markdown table, JSON (metrics and per-image predictions) and a bar plot.

    python recipes/evaluate.py runs/gdso/model:teacher runs/risd/model runs/sft/model --data synthetic
    python recipes/evaluate.py tiny:qwen2_vl --data agiqa --output_dir runs/eval

A checkpoint is a folder written by a recipe (output_dir/model) or tiny[:ARCH] (random init); the suffix
":teacher" evaluates with sampled reasoning (q averaged over --samples traces), otherwise in student mode. A teacher
samples as it was trained (its zrcore_sampling.yaml: reasoning cap, temperature, samples) unless --samples,
--max_reasoning_tokens or --temperature say otherwise; without that file the cap fits the longest description of
zrcore.data.captions. On the synthetic set the table ends with the ceiling: the held-out images scored by their true
score.
The data options are those of the training configs (--data, --seed, --eval_prompts, --dimensions, ...); with
--data agiqa and no --dimensions, AGIQA-3K's own two (alignment, realism). Every error ends in one line and exit
code 2 (--debug or ZRCORE_DEBUG=1 shows the traceback).
"""

import json
import logging
from pathlib import Path

from zrcore._log import cli_logging
from zrcore.models import load_reward_model
from zrcore.training.cli_args import add_config_arguments, config_from_args, make_parser
from zrcore.training.config import TrainConfig
from zrcore.training.datasets import build_data
from zrcore.training.distributed import resolve_device
from zrcore.training.entry import run_main
from zrcore.training.evaluate import METRIC_KEYS, ceiling_metrics, evaluate_model, format_table


def load(spec: str):
    mode = "teacher" if spec.endswith(":teacher") else "student"
    path = spec[: -len(":teacher")] if mode == "teacher" else spec
    return load_reward_model(path), mode


def sampling(rm, args) -> dict:
    """Teacher-mode sampling: each option given on the command line, else the checkpoint's own
    (``rm.sampling``), else the defaults (2 samples, the longest description, temperature 1)."""
    from zrcore.data.captions import description_token_limit

    own = rm.sampling
    pick = lambda given, key, default: given if given is not None else own.get(key, default)
    return {"samples": pick(args.samples, "samples", 2),
            "max_reasoning_tokens": pick(args.max_reasoning_tokens, "max_reasoning_tokens", None)
            or description_token_limit(rm.tokenizer),
            "temperature": pick(args.temperature, "temperature", 1.0)}


def plot(results: dict, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["plcc", "srcc", "hpa", "hpa_margin"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2))
    names = list(results)
    for ax, k in zip(axes, keys):
        ax.bar(range(len(names)), [results[n]["all"][k] for n in names], color="tab:blue")
        ax.set_xticks(range(len(names)), [n[-18:] for n in names], rotation=60, ha="right", fontsize=7)
        ax.set_title(k)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def build_parser():
    """The checkpoints and teacher sampling options, then every data / config option of ``TrainConfig``."""
    parser = make_parser(__doc__)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders or tiny[:ARCH], each optionally :teacher")
    parser.add_argument("--output_dir", default="runs/eval", help="where the table, JSON and plot go")
    parser.add_argument("--samples", type=int, default=None, help="default: the checkpoint's own, else 2")
    parser.add_argument("--max_reasoning_tokens", type=int, default=None,
                        help="default: the checkpoint's own, else the longest description")
    parser.add_argument("--temperature", type=float, default=None, help="default: the checkpoint's own, else 1")
    data = parser.add_argument_group("data and evaluation (the fields of the training configs)")
    add_config_arguments(data, TrainConfig, skip=frozenset({"output_dir"}))
    return parser


def run(argv=None) -> dict:
    args = vars(build_parser().parse_args(argv))
    cfg = config_from_args(TrainConfig, args | {"output_dir": None})
    _, records = build_data(cfg)
    models = [load(spec) for spec in args["checkpoints"]]  # every checkpoint loads before anything is written
    out = Path(args["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    opts = type("Options", (), {k: args[k] for k in ("samples", "max_reasoning_tokens", "temperature")})
    results, predictions = {}, {}
    for spec, (rm, mode) in zip(args["checkpoints"], models):
        rm.to(resolve_device(cfg.device)).eval()
        res = evaluate_model(rm, records, mode=mode, seed=cfg.eval_seed, **sampling(rm, opts))
        pred = res.pop("_pred")
        results[spec] = res
        predictions[spec] = [{"prompt": r.prompt, "prompt_id": r.prompt_id, "dimension": r.dimension, "score": r.score,
                              "probs": p, "tokens": t}
                             for r, p, t in zip(records, pred["probs"].tolist(), pred["tokens"].tolist())]
    ceiling = ceiling_metrics(records)
    table = format_table(results | {"ceiling (true score)": ceiling})
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps({"metrics": results, "ceiling": ceiling,
                                                  "predictions": predictions, "metric_keys": list(METRIC_KEYS)}))
    plot(results, out / "results.png")
    logging.getLogger("zrcore").info(table)
    return results


def main(argv=None) -> dict:
    cli_logging()
    return run_main(run, argv, prog="evaluate")


if __name__ == "__main__":
    main()
