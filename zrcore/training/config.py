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
class RunConfig:
    """What every training run shares: bookkeeping, optimisation, device, precision and processes."""

    output_dir: str = "runs/default"
    seed: int = 0
    steps: int = 60
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 5
    lr_schedule: str = "cosine"  # "cosine" (after the linear warm-up) | "constant"
    max_grad_norm: float = 1.0
    save_every: int = 10
    log_every: int = 1
    progress: bool = True
    # device, precision, processes
    device: str = "auto"  # "auto" = cuda:LOCAL_RANK when CUDA is available, else cpu; or "cpu", "cuda", "cuda:N"
    dtype: str = "fp32"  # "fp32" | "bf16" | "fp16": fsdp mixed precision (bf16; fp32 reduction), else autocast
    distributed: str = "none"  # "none" | "ddp" | "fsdp" (FSDP2 fully_shard); ddp and fsdp need torchrun
    fsdp_cpu_offload: bool = False  # fsdp: parameters, gradients and optimizer state kept on the CPU
    gradient_checkpointing: bool = False  # the model's own activation checkpointing
    attn_implementation: str = "auto"  # "auto" (flash_attention_2 on CUDA when flash-attn is installed, else sdpa)

    def __post_init__(self):
        from zrcore.training.distributed import check_fields, resolve_device

        check_fields(self.distributed, self.dtype)
        resolve_device(self.device)
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {list(ATTN_IMPLEMENTATIONS)}, "
                             f"got {self.attn_implementation!r}")
        self.require_positive("steps", "save_every", "log_every")

    def require_positive(self, *names: str) -> None:
        """Each named integer field must be >= 1; the error names the field."""
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")


@dataclass
class TrainConfig(RunConfig):
    """What every reward-model recipe shares."""

    # model
    arch: str = "qwen2_vl"
    preset: str = "student"
    # a checkpoint folder (RewardModel.save_pretrained) to start from; "pretrained": the tiny arch / preset after
    # recipes/pretrain_tiny.py, pretrained on first use and cached by its config; "": tiny random init
    init_from: str = "pretrained"
    pretrain_cache: str = "runs/pretrained"  # where init_from="pretrained" keeps its folders
    # data
    data: str = "synthetic"  # "synthetic" | "agiqa" | a JSONL file
    data_root: str = ""  # AGIQA-3K folder ("" = default search)
    dimensions: list[str] = field(default_factory=lambda: ["alignment", "realism", "aesthetics", "plausibility"])
    train_prompts: int = 48  # synthetic: prompts in the training set
    eval_prompts: int = 48  # synthetic: held-out prompts
    # synthetic: the generator seed of the held-out set and of its evaluation sampling; fixed, so that the run's
    # seed varies training only and runs of several seeds are scored on the same images
    eval_seed: int = 1000
    candidates: int = 4  # images per prompt (synthetic) / candidates per GDSO group (M)
    image_size: int = 112
    eval_limit: int = 0  # at most this many eval records per dimension (0 = all)
    eval_batch_size: int = 16
    # optimisation
    prompts_per_step: int = 4  # the global batch, split over processes (uneven shards allowed)
    rollout_batch_size: int = 64  # at most this many sequences per sampling (generate) call
    eval_every: int = 0  # 0 = only at the start and the end
    eval_start: bool = True  # evaluate the start too (a sweep of runs from one start needs it once)

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("rollout_batch_size", "prompts_per_step", "eval_batch_size", "candidates")
        if getattr(self, "max_reasoning_tokens", 0) < 0:
            raise ValueError(f"max_reasoning_tokens must be >= 1, or 0 for the longest description, got "
                             f"{self.max_reasoning_tokens}")


@dataclass
class PretrainConfig(RunConfig):
    """Generic visual competence before any rubric: the tiny VLM learns to describe rendered synthetic scenes
    (objects, background, position, visible defects) in words, with no score and no rubric in sight."""

    output_dir: str = "runs/pretrain"
    arch: str = "qwen2_vl"
    preset: str = "teacher"
    image_size: int = 112
    scenes: int = 500  # training scenes (x candidates images), indices from zrcore.data.captions.PRETRAIN_OFFSET
    candidates: int = 4
    eval_scenes: int = 16  # held-out scenes after the training ones (a caption-loss check)
    questions: bool = False  # also one short question per part of each image (zrcore.data.captions.questions)
    match_questions: bool = True  # also "Does the image show <its prompt>?" per image (captions.match_question)
    contexts: bool = True  # each description asked in a random surrounding text (zrcore.data.captions.context)
    vision_warmup_steps: int = 400  # first the vision tower alone classifies the attributes (0 = no warm-up;
    vision_warmup_lr: float = 3e-3  # zrcore.training.vision_warmup)
    batch_size: int = 32
    steps: int = 500
    lr: float = 1e-3
    warmup_steps: int = 20
    save_every: int = 100
    eval_every: int = 0  # 0 = only at the start and the end

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("scenes", "candidates", "eval_scenes", "batch_size")
        if self.vision_warmup_steps < 0:
            raise ValueError(f"vision_warmup_steps must be >= 0, got {self.vision_warmup_steps}")


@dataclass
class SFTConfig(TrainConfig):
    """No-reasoning baseline: cross-entropy of the student's q on the annotated bin, the one-hot target of GDSO's
    CE term (eq. 8), so that the two compare on one target form."""

    soft_targets: bool = False  # True: a soft target over the bins from the raters' mean and std instead


@dataclass
class GDSOConfig(TrainConfig):
    """Reasoning teacher (Algorithm 1). GRPO baseline: lambda_pw = alpha_pt = alpha_pw = 0."""

    output_dir: str = "runs/gdso"
    preset: str = "teacher"
    num_samples: int = 4  # G
    max_reasoning_tokens: int = 0  # 0: the longest description of zrcore.data.captions plus its end-of-turn
    temperature: float = 1.0
    updates_per_rollout: int = 2  # K_gdso
    ref_reset_every: int = 10  # N_ref
    # the k3 KL to the reference policy (eq. 4; Algorithm 1); 0 builds no reference. 1.0 keeps the tiny teacher's
    # descriptions readable through training; at 0.04 and 0.2 they garble (docs/RESULTS.md)
    beta: float = 1.0
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
    grad_balance_every: int = 10  # log ||grad|| of the policy, CE and pairwise terms every N steps (0 = never;
    # one process only)


@dataclass
class RISDConfig(TrainConfig):
    """Student distilled from a teacher checkpoint: KL(q_T || q_S), q_T averaged over teacher_samples reasonings."""

    output_dir: str = "runs/risd"
    teacher: str = ""  # teacher checkpoint folder (required)
    teacher_samples: int = 2
    max_reasoning_tokens: int = 0  # 0: the longest description of zrcore.data.captions plus its end-of-turn
    temperature: float = 1.0


@dataclass
class OPDConfig(TrainConfig):
    """On-policy distillation baseline: the student samples reasoning + score; A_t = log pi_T - log pi_S_old."""

    output_dir: str = "runs/opd"
    teacher: str = ""
    normalize: str = "trajectory"  # eq. 19: (1/T) per trajectory, then the mean; "token": the batch's token mean
    num_samples: int = 2
    max_reasoning_tokens: int = 0  # 0: the longest description of zrcore.data.captions plus its end-of-turn
    temperature: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.normalize not in ("trajectory", "token"):
            raise ValueError(f"normalize must be 'trajectory' or 'token', got {self.normalize!r}")


@dataclass
class GeneratorConfig(RunConfig):
    """A text-to-image generator optimised through a frozen student reward (paper section 5)."""

    output_dir: str = "runs/generator"
    arch: str = "zimage"  # tiny random-init generator: zimage | sd3 | flux
    lora_rank: int = 0  # 0: full fine-tuning; > 0: a LoRA adapter of this rank (peft), base weights frozen
    lora_alpha: float | None = None  # default: the rank
    lora_targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    reward_model: str = "tiny"  # "tiny" (random-init student) or a student checkpoint folder (train_risd.py)
    held_out_reward_model: str = ""  # another student (e.g. another seed) that only scores the validation images
    dimensions: list[str] = field(default_factory=lambda: ["realism", "aesthetics", "plausibility", "alignment"])
    aggregation: str = "mean"  # mean | weighted | min | pessimistic
    kappa: float = 0.0  # > 0: pessimistic aggregation mean - kappa * std
    steps: int = 60
    batch: int = 4  # images per step (the global batch, split over processes)
    lr: float = 2e-3
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    num_steps: int = 4  # denoising steps
    backprop: str = "last_k"
    k: int = 1
    checkpoint: str = "step"
    guidance_scale: float = 0.0
    latent_size: int = 28  # latents [16, s, s] -> images [3, 2s, 2s]
    train_prompts: int = 32
    val_prompts: int = 4
    val_every: int = 5

    def __post_init__(self):
        super().__post_init__()
        if self.arch not in ("zimage", "sd3", "flux"):
            raise ValueError(f"arch must be one of ['zimage', 'sd3', 'flux'], got {self.arch!r}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be 0 (full fine-tuning) or positive, got {self.lora_rank}")
        self.require_positive("batch")


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


def run_recipe(config_cls, trainer_cls, description: str = "", argv: list[str] | None = None):
    """A recipe's main: parse the config, build the trainer and fit. A bad configuration (a ValueError while
    parsing or building) ends the program with a one-line error naming the field, not a traceback."""
    import sys

    try:
        trainer = trainer_cls(parse_config(config_cls, argv, description=description))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return trainer.fit()
