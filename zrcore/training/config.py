"""Recipe configs as dataclasses, loadable from YAML and overridable from the command line.

    python recipes/train_gdso.py --config recipes/configs/gdso_agiqa.yaml --steps 40 --lambda_pw 0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class TrainConfig:
    """What every recipe shares."""

    output_dir: str = "runs/default"
    seed: int = 0
    # model
    arch: str = "qwen2_vl"
    preset: str = "student"
    init_from: str = ""  # a checkpoint folder (RewardModel.save_pretrained) to start from; "" = tiny random init
    # data
    data: str = "synthetic"  # "synthetic" | "agiqa" | a JSONL file
    data_root: str = ""  # AGIQA-3K folder ("" = default search)
    dimensions: list[str] = field(default_factory=lambda: ["alignment", "realism", "aesthetics", "plausibility"])
    train_prompts: int = 48  # synthetic: prompts in the training set
    eval_prompts: int = 16  # synthetic: held-out prompts
    candidates: int = 4  # images per prompt (synthetic) / candidates per GDSO group (M)
    image_size: int = 112
    eval_limit: int = 0  # at most this many eval records per dimension (0 = all)
    # optimisation
    steps: int = 60
    prompts_per_step: int = 4
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 5
    max_grad_norm: float = 1.0
    # bookkeeping
    save_every: int = 10
    log_every: int = 1
    eval_every: int = 0  # 0 = only at the start and the end
    progress: bool = True
    distributed: str = "auto"  # "auto" | "none" | "ddp": gradients all-reduced across torchrun processes


@dataclass
class SFTConfig(TrainConfig):
    """No-reasoning baseline: cross-entropy of the student's q on the annotated bin (soft target from std)."""

    soft_targets: bool = True


@dataclass
class GDSOConfig(TrainConfig):
    """Reasoning teacher (Algorithm 1). GRPO baseline: lambda_pw = alpha_pt = alpha_pw = 0."""

    output_dir: str = "runs/gdso"
    preset: str = "teacher"
    num_samples: int = 4  # G
    max_reasoning_tokens: int = 8
    temperature: float = 1.0
    updates_per_rollout: int = 2  # K_gdso
    ref_reset_every: int = 10  # N_ref
    beta: float = 0.0
    eps_low: float = 0.2
    eps_high: float = 0.2
    loss_type: str = "grpo"
    lambda_pt: float = 1.0
    lambda_pw: float = 1.0
    alpha_pt: float = 1.0
    alpha_pw: float = 1.0
    adv_scale: str = "group"
    include_ties: bool = False
    reward_from: str = "distribution"  # "distribution" | "text" (the score token sampled and parsed)
    eval_samples: int = 2  # reasoning samples per image at evaluation (q averaged over them)


@dataclass
class RISDConfig(TrainConfig):
    """Student distilled from a teacher checkpoint: KL(q_T || q_S), q_T averaged over teacher_samples reasonings."""

    output_dir: str = "runs/risd"
    teacher: str = ""  # teacher checkpoint folder (required)
    teacher_samples: int = 2
    max_reasoning_tokens: int = 8
    temperature: float = 1.0


@dataclass
class OPDConfig(TrainConfig):
    """On-policy distillation baseline: the student samples reasoning + score; A_t = log pi_T - log pi_S_old."""

    output_dir: str = "runs/opd"
    teacher: str = ""
    num_samples: int = 2
    max_reasoning_tokens: int = 8
    temperature: float = 1.0


def _coerce(tp, text: str):
    origin = typing.get_origin(tp)
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        return [_coerce(inner, t) for t in text.split(",") if t]
    return tp(text)


def parse_config(cls, argv: list[str] | None = None, description: str = ""):
    """``cls`` defaults, then ``--config FILE.yaml``, then ``--field value`` overrides; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(description=description or cls.__doc__)
    parser.add_argument("--config", help="YAML file with field: value entries")
    for f in dataclasses.fields(cls):
        parser.add_argument(f"--{f.name}", dest=f.name, default=None, metavar=str(hints[f.name]).replace("typing.", ""),
                            help=f"default: {f.default if f.default is not dataclasses.MISSING else f.default_factory()}")
    args = parser.parse_args(argv)
    values = {}
    if args.config:
        data = yaml.safe_load(Path(args.config).read_text()) or {}
        unknown = sorted(set(data) - set(hints))
        if unknown:
            parser.error(f"{args.config}: unknown config keys {unknown}")
        values.update(data)
    for f in dataclasses.fields(cls):
        raw = getattr(args, f.name)
        if raw is not None:
            try:
                values[f.name] = _coerce(hints[f.name], raw)
            except ValueError as err:
                parser.error(f"--{f.name}: {err}")
    return cls(**values)


def save_config(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
