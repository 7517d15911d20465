"""Every bad input tried against the entry points, and what each gets: run by tests/test_bad_inputs_table.py, which
writes the table docs/BAD_INPUTS.md from the outcomes (and fails when the committed table is out of date)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from zrcore.bins import ScoreBins


@dataclass
class Case:
    entry: str  # the entry point fed
    given: str  # the bad input, in words
    run: Callable[[Path], object]  # feeds it; returns what was accepted, or raises


CASES: list[Case] = []


def case(entry: str, given: str):
    def register(fn):
        CASES.append(Case(entry, given, fn))
        return fn
    return register


def png(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (10, 200, 10)).save(path, format="PNG")
    return path


def jsonl(tmp: Path, *rows) -> Path:
    png(tmp / "a.png")
    path = tmp / "data.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def good(**kw) -> dict:
    return {"prompt": "p", "image": "a.png", "dimension": "realism", "score": 3.0} | kw


def agiqa(tmp: Path, column: str = "", value: str = "", drop: str = "") -> Path:
    root = tmp / "agiqa"
    cols = [c for c in ["name", "prompt", "mos_quality", "std_quality", "mos_align", "std_align"] if c != drop]
    rows = [{"name": f"i{i}.png", "prompt": f"p{i // 2}", "mos_quality": "2", "std_quality": "0.5", "mos_align": "3",
             "std_align": "0.5"} for i in range(3)]
    if column:
        rows[1][column] = value
    (root / "images").mkdir(parents=True)
    for r in rows:
        png(root / "images" / r["name"])
    (root / "data.csv").write_text(",".join(cols) + "\n" + "".join(",".join(r[c] for c in cols) + "\n" for r in rows))
    return root


def load(path):
    from zrcore.data import load_jsonl

    return [r.score for r in load_jsonl(path)]


def exit_line(main, argv: list[str]) -> str:
    """``main(argv)`` run as a program: "exit CODE: the lines it printed to stderr"."""
    err = io.StringIO()
    logger = logging.getLogger("zrcore")
    kept = list(logger.handlers)  # as a fresh program: main sets up its own logging (whatever ran before here)
    for handler in kept:
        logger.removeHandler(handler)
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_info:
            code = exit_info.code
        finally:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in kept:
                logger.addHandler(handler)
    code = 0 if code is None else code
    lines = [x for x in err.getvalue().strip().splitlines() if x.startswith(("zr-score", "error"))]
    return f"exit {code}: " + " / ".join(lines)


def recipe(argv: list[str], trainer=None) -> str:
    """A recipe's main on ``argv`` (SFT's config); the trainer is not built unless given."""
    from zrcore.training.config import SFTConfig, run_recipe

    built = trainer or (lambda cfg: type("T", (), {"fit": lambda self: print("error: accepted", summary(cfg),
                                                                              file=__import__("sys").stderr)})())
    return exit_line(lambda a: run_recipe(SFTConfig, built, argv=a), argv)


def summary(cfg) -> str:
    return f"lr={cfg.lr!r}, batch_size={cfg.batch_size!r}, dimensions={cfg.dimensions}"


# ---- JSONL ---------------------------------------------------------------------------------------------------------

@case("load_jsonl", '`"score": NaN`')
def _(tmp):
    return load(jsonl(tmp, good(), '{"prompt": "p", "image": "a.png", "dimension": "realism", "score": NaN}'))


@case("load_jsonl", '`"score": "high"`')
def _(tmp):
    return load(jsonl(tmp, good(), good(score="high")))


@case("load_jsonl", '`"score": 9` on the 1..5 rubric')
def _(tmp):
    return load(jsonl(tmp, good(score=9)))


@case("load_jsonl", '`"std": -0.5`')
def _(tmp):
    return load(jsonl(tmp, good(std=-0.5)))


@case("load_jsonl", '`"dimension": "beauty"` (not in the rubric)')
def _(tmp):
    return load(jsonl(tmp, good(dimension="beauty")))


@case("load_jsonl", "an image file that does not exist")
def _(tmp):
    return load(jsonl(tmp, good(image="nowhere.png")))


@case("load_jsonl", '`"split": "holdout"`')
def _(tmp):
    return load(jsonl(tmp, good(split="holdout")))


@case("load_jsonl", '`"prompt": 42`')
def _(tmp):
    return load(jsonl(tmp, good(prompt=42)))


@case("recipe `--data FILE.jsonl`", 'no row has `"split": "test"`')
def _(tmp):
    from zrcore.training.datasets import jsonl_splits

    return jsonl_splits(str(jsonl(tmp, good(), good())), ("realism",))


@case("recipe `--data FILE.jsonl`", "one prompt in both the training and the test rows")
def _(tmp):
    from zrcore.training.datasets import jsonl_splits

    return jsonl_splits(str(jsonl(tmp, good(), good(split="test"))), ("realism",))


# ---- AGIQA-3K ------------------------------------------------------------------------------------------------------

def agiqa_scores(root) -> list[float]:
    from zrcore.data import load_agiqa3k

    return [r.score for r in load_agiqa3k(root, dimensions=("realism",))]


for _value in ("nan", "7.5", "-2"):
    case("load_agiqa3k", f"a MOS of `{_value}`")(lambda tmp, v=_value: agiqa_scores(agiqa(tmp, "mos_quality", v)))


@case("load_agiqa3k", "data.csv without the `mos_align` column")
def _(tmp):
    from zrcore.data import load_agiqa3k

    return load_agiqa3k(agiqa(tmp, drop="mos_align"))


@case("load_agiqa3k / `--data agiqa`", "no data.csv in the folder")
def _(tmp):
    return agiqa_scores(tmp)


# ---- configs -------------------------------------------------------------------------------------------------------

def yaml_recipe(tmp, text: str):
    path = tmp / "c.yaml"
    path.write_text(text)
    return recipe(["--config", str(path)])


@case("recipe `--config`", "`lr: 1e-3` (a string to PyYAML)")
def _(tmp):
    return yaml_recipe(tmp, "lr: 1e-3\n")


@case("recipe `--config`", "`batch_size: 2.5`")
def _(tmp):
    return yaml_recipe(tmp, "seed: 1\nbatch_size: 2.5\n")


@case("recipe `--config`", "`dimensions: realism`")
def _(tmp):
    return yaml_recipe(tmp, "dimensions: realism\n")


@case("recipe", "`--max_grad_norm -1`")
def _(tmp):
    return recipe(["--max_grad_norm", "-1"])


@case("recipe", "`--eval_limit -1`")
def _(tmp):
    return recipe(["--eval_limit", "-1"])


@case("recipe", "`--lr nan`")
def _(tmp):
    return recipe(["--lr", "nan"])


@case("recipe", "`--stepz 3` (a misspelt flag)")
def _(tmp):
    return recipe(["--stepz", "3"])


@case("recipe / evaluate.py", "`--data agiqa` without `--dimensions`")
def _(tmp):
    return recipe(["--data", "agiqa"])


@case("recipe", "a rerun in the same `output_dir` with `--steps 5 --lr 0.5` after `--steps 3`")
def _(tmp):
    from zrcore.training.config import SFTConfig
    from zrcore.training.run_dir import prepare_run_dir

    prepare_run_dir(SFTConfig(output_dir=str(tmp), steps=3))
    (tmp / "checkpoint").mkdir()
    (tmp / "checkpoint" / "trainer_state.json").write_text("{}")
    return recipe(["--output_dir", str(tmp), "--steps", "5", "--lr", "0.5"],
                  trainer=lambda cfg: prepare_run_dir(cfg) and type("T", (), {"fit": lambda self: "resumed"})())


# ---- rewards -------------------------------------------------------------------------------------------------------

@case("diffusion `reward_fn`", "float images in [-1, 1] (a VAE's output)")
def _(tmp):
    from zrcore.integrations.diffusion import images_to_tensor

    return images_to_tensor(torch.linspace(-1, 1, 12).view(1, 3, 2, 2)).shape


@case("diffusion `reward_fn`", "float images in [0, 255]")
def _(tmp):
    from zrcore.integrations.diffusion import images_to_tensor

    return images_to_tensor(torch.linspace(0, 255, 12).view(1, 3, 2, 2)).shape


@case("diffusion `reward_fn`", '`aggregation="pessimistic"` without `kappa`')
def _(tmp):
    from zrcore.integrations.diffusion import reward_fn

    stub = type("RM", (), {"dimensions": ("realism",)})()
    return f"kappa={reward_fn(stub, ('realism',), aggregation='pessimistic').kappa}"


@case("TRL `GDSOTrainer`", "a `score` of NaN or 9.0 in the dataset")
def _(tmp):
    from zrcore.data.records import check_scores

    return check_scores([3.0, float("nan"), 9.0], ScoreBins.half_points(), "train_dataset score")


# ---- zr-score and checkpoints --------------------------------------------------------------------------------------

def zr_score(argv: list[str]) -> str:
    from zrcore.cli.score import main

    return exit_line(main, [*argv, "--no-progress"])


@case("zr-score", "no `--model` (it used to default to a random-init model)")
def _(tmp):
    return zr_score([str(tmp)])


@case("zr-score", "a JSONL row whose prompt is a number")
def _(tmp):
    png(tmp / "a.png")
    (tmp / "in.jsonl").write_text(json.dumps({"prompt": 7, "image": "a.png"}) + "\n"
                                  + json.dumps({"prompt": "ok", "image": "a.png"}) + "\n")
    return zr_score([str(tmp / "in.jsonl"), "--model", "tiny:qwen2_vl", "--dimension", "realism", "-o",
                     str(tmp / "out.jsonl")])


@case("zr-score / `RewardModel.from_pretrained`", "a checkpoint with one decoder layer deleted from its safetensors")
def _(tmp):
    from safetensors.torch import load_file, save_file

    from zrcore.models import build_tiny_reward_model

    build_tiny_reward_model("qwen2_vl").save_pretrained(tmp / "ckpt")
    weights = load_file(tmp / "ckpt" / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "layers.1." not in k}, tmp / "ckpt" / "model.safetensors",
              metadata={"format": "pt"})
    return zr_score([str(tmp), "--prompt", "x", "--model", str(tmp / "ckpt")])


@case("`RewardModel.from_pretrained`", "a folder of another model type (GPT-2)")
def _(tmp):
    from transformers import GPT2Config

    from zrcore.models import RewardModel

    GPT2Config(n_layer=1, n_head=1, n_embd=8).save_pretrained(tmp / "gpt2")
    return RewardModel.from_pretrained(tmp / "gpt2")


@case("`RewardModel.from_pretrained`", "`runs/x` instead of `runs/x/model`")
def _(tmp):
    from zrcore.models import RewardModel

    (tmp / "x" / "model").mkdir(parents=True)
    (tmp / "x" / "model" / "config.json").write_text("{}")
    return RewardModel.from_pretrained(tmp / "x")


@case("zr-score / `RewardModel.from_pretrained`", "a checkpoint whose config.json says another width than its weights")
def _(tmp):
    from zrcore.models import build_tiny_reward_model

    build_tiny_reward_model("qwen2_vl").save_pretrained(tmp / "ckpt")
    cfg = json.loads((tmp / "ckpt" / "config.json").read_text())
    cfg.get("text_config", cfg)["intermediate_size"] = 96
    (tmp / "ckpt" / "config.json").write_text(json.dumps(cfg))
    return zr_score([str(tmp), "--prompt", "x", "--model", str(tmp / "ckpt")])
