"""Recipe configs as dataclasses, loadable from YAML and overridable from the command line.

    python recipes/train_gdso.py --config recipes/configs/gdso_agiqa.yaml --steps 40 --lambda_pw 0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

from zrcore._renamed import module_getattr, warn_renamed
from zrcore.diffusion.reward import AGGREGATIONS
from zrcore.diffusion.tiny import GENERATOR_ARCHS
from zrcore.losses import ADVANTAGE_SCALES, LOSS_TYPES


def arg(default=dataclasses.MISSING, help: str = "", *, factory=None):  # noqa: A002
    """A config field with its help text (shown by ``--help``): ``arg(0.1, "what it is")``; ``factory`` for lists."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _require_positive(cfg, *names: str) -> None:
    """Each named integer field must be >= 1; the error names the field."""
    for name in names:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")


def _require_choice(cfg, name: str, choices) -> None:
    if getattr(cfg, name) not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {getattr(cfg, name)!r}")


ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
REPORT_TO = ("none", "tensorboard", "wandb")


@dataclass
class SamplingConfig:
    """How reasoning traces are sampled: ``--sampling.FIELD`` on the command line, ``sampling: {FIELD: ...}`` in
    YAML."""

    num_samples: int = arg(4, "samples per image: G of GDSO and OPD, the teacher's traces per image in RISD")
    max_reasoning_tokens: int = arg(0, "cap on a trace's tokens; 0: the longest description of zrcore.data.captions "
                                       "plus its end-of-turn")
    temperature: float = arg(1.0, "sampling temperature (> 0)")
    rollout_batch_size: int = arg(64, "at most this many sequences per sampling (generate) call")
    unshard_once: bool = arg(True, "under fsdp, gather the policy's weights once per rollout (not once per decoded "
                                   "token); no effect under ddp or on one process")
    decode: str = arg("dynamic", "decode path: dynamic (HF dynamic KV cache) | static_compiled (HF static cache "
                                 "and torch.compile)")

    def __post_init__(self):
        try:
            _require_positive(self, "num_samples", "rollout_batch_size")
        except ValueError as err:
            raise ValueError(f"sampling.{err}") from None
        if self.max_reasoning_tokens < 0:
            raise ValueError(f"sampling.max_reasoning_tokens must be >= 1, or 0 for the longest description, got "
                             f"{self.max_reasoning_tokens}")
        if not self.temperature > 0:
            raise ValueError(f"sampling.temperature must be > 0, got {self.temperature}")
        if self.decode not in ("dynamic", "static_compiled"):
            raise ValueError(f"sampling.decode must be 'dynamic' or 'static_compiled', got {self.decode!r}")


@dataclass
class RunConfig:
    """What every training run shares: bookkeeping, optimisation, device, precision and processes."""

    # old name -> new name: old flags and YAML keys keep working for one release, with a warning
    RENAMED: ClassVar[dict[str, str]] = {}

    output_dir: str = arg("runs/default", "folder of the run: metrics, plots, checkpoints, the exported model")
    seed: int = arg(0, "the run's seed (training data order, sampling, initialisation)")
    steps: int = arg(60, "optimisation steps")
    lr: float = arg(3e-4, "AdamW learning rate")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    warmup_steps: int = arg(5, "linear learning-rate warm-up steps")
    lr_schedule: str = arg("cosine", "after the warm-up: cosine | constant")
    max_grad_norm: float = arg(1.0, "gradient clipping norm")
    eval_every: int = arg(0, "evaluate every N steps (0: only at the start and the end)")
    save_every: int = arg(10, "atomic checkpoint every N steps (and at the end)")
    log_every: int = arg(1, "write a metrics row every N steps")
    progress: bool = arg(True, "show a progress bar")
    report_to: str = arg("none", "also log the metrics to: none | tensorboard | wandb (offline)")
    device: str = arg("auto", "auto (cuda:LOCAL_RANK when CUDA is available, else cpu) | cpu | cuda | cuda:N")
    dtype: str = arg("fp32", "fp32 | bf16 | fp16: FSDP2 mixed precision (fp32 reduction), else autocast")
    distributed: str = arg("none", "none | ddp | fsdp (FSDP2 fully_shard); ddp and fsdp need torchrun")
    fsdp_cpu_offload: bool = arg(False, "fsdp: parameters, gradients and optimizer state kept on the CPU")
    gradient_checkpointing: bool = arg(False, "the model's own activation checkpointing")
    attn_implementation: str = arg("auto", "auto (flash_attention_2 on CUDA when flash-attn is installed, else "
                                           "sdpa) | sdpa | eager | flash_attention_2")

    def __post_init__(self):
        from zrcore.training.distributed import check_fields, resolve_device

        check_fields(self.distributed, self.dtype)
        resolve_device(self.device)
        _require_choice(self, "lr_schedule", ("cosine", "constant"))
        _require_choice(self, "attn_implementation", ATTN_IMPLEMENTATIONS)
        _require_choice(self, "report_to", REPORT_TO)
        self.require_positive("steps", "save_every", "log_every")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0: only at the start and the end), got {self.eval_every}")

    def require_positive(self, *names: str) -> None:
        """Each named integer field must be >= 1; the error names the field."""
        _require_positive(self, *names)


@dataclass
class TrainConfig(RunConfig):
    """What every reward-model recipe shares."""

    RENAMED: ClassVar[dict[str, str]] = {"prompts_per_step": "batch_size",
                                         "rollout_batch_size": "sampling.rollout_batch_size"}

    # model
    arch: str = arg("qwen2_vl", "tiny model architecture: qwen2_vl | qwen2_5_vl | qwen3_vl | qwen3_5")
    preset: str = arg("student", "tiny model size: student | teacher")
    init_from: str = arg("pretrained", "start from: a checkpoint folder (RewardModel.save_pretrained); "
                                       "'pretrained': the tiny arch / preset after recipes/pretrain_tiny.py, built "
                                       "on first use and cached by its config; '': tiny random init")
    pretrain_cache: str = arg("runs/pretrained", "where init_from='pretrained' keeps its folders")
    # data
    data: str = arg("synthetic", "synthetic | agiqa | a JSONL file of records")
    data_root: str = arg("", "the AGIQA-3K folder ('': the default search)")
    dimensions: list[str] = arg(help="rubric dimensions to train and evaluate, comma-separated",
                                factory=lambda: ["alignment", "realism", "aesthetics", "plausibility"])
    train_prompts: int = arg(48, "synthetic: prompts in the training set")
    eval_prompts: int = arg(48, "synthetic: held-out prompts")
    eval_seed: int = arg(1000, "synthetic: the seed of the held-out set and its evaluation sampling; fixed, so "
                               "that runs of several seeds are scored on the same images")
    candidates: int = arg(4, "images per prompt (synthetic) / candidates per group (M)")
    image_size: int = arg(112, "images are resized to this many pixels a side")
    eval_limit: int = arg(0, "at most this many evaluation records per dimension (0: all)")
    eval_batch_size: int = arg(16, "records per evaluation call")
    # optimisation
    batch_size: int = arg(4, "prompts per step (each with its candidates): the global batch, split over processes "
                             "(uneven shards allowed)")
    sampling: SamplingConfig = arg(help="reasoning sampling (see SamplingConfig)", factory=SamplingConfig)
    eval_start: bool = arg(True, "evaluate the start too (a sweep of runs from one start needs it once)")

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig(**self.sampling)
        self.require_positive("batch_size", "eval_batch_size", "candidates", "image_size", "train_prompts")
        if self.data not in ("synthetic", "agiqa") and not Path(self.data).is_file():
            raise ValueError(f"data must be 'synthetic', 'agiqa' or a JSONL file, got {self.data!r} (no such file)")
        if not self.dimensions:
            raise ValueError("dimensions must name at least one rubric dimension")


@dataclass
class PretrainConfig(RunConfig):
    """Generic visual competence before any rubric: the tiny VLM learns to describe rendered synthetic scenes
    (objects, background, position, visible defects) in words, with no score and no rubric in sight."""

    output_dir: str = arg("runs/pretrain", "folder of the run")
    arch: str = arg("qwen2_vl", "tiny model architecture: qwen2_vl | qwen2_5_vl | qwen3_vl | qwen3_5")
    preset: str = arg("teacher", "tiny model size: student | teacher")
    image_size: int = arg(112, "rendered image size in pixels")
    scenes: int = arg(500, "training scenes (x candidates images), from zrcore.data.captions.PRETRAIN_OFFSET on")
    candidates: int = arg(4, "images per scene")
    eval_scenes: int = arg(16, "held-out scenes after the training ones (a caption-loss check)")
    questions: bool = arg(False, "also one short question per part of each image (captions.questions)")
    match_questions: bool = arg(True, "also 'Does the image show <its prompt>?' per image (captions.match_question)")
    contexts: bool = arg(True, "each description asked in a random surrounding text (captions.context)")
    vision_warmup_steps: int = arg(400, "first the vision tower alone classifies the attributes (0: no warm-up; "
                                        "zrcore.training.vision_warmup)")
    vision_warmup_lr: float = arg(3e-3, "learning rate of the vision warm-up")
    batch_size: int = arg(32, "descriptions per step (the global batch, split over processes)")
    steps: int = arg(500, "optimisation steps")
    lr: float = arg(1e-3, "AdamW learning rate")
    warmup_steps: int = arg(20, "linear learning-rate warm-up steps")
    save_every: int = arg(100, "atomic checkpoint every N steps (and at the end)")

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("scenes", "candidates", "eval_scenes", "batch_size")
        if self.vision_warmup_steps < 0:
            raise ValueError(f"vision_warmup_steps must be >= 0, got {self.vision_warmup_steps}")


@dataclass
class SFTConfig(TrainConfig):
    """No-reasoning baseline: cross-entropy of the student's q on the annotated bin, the one-hot target of GDSO's
    CE term (eq. 8), so that the two compare on one target form."""

    soft_targets: bool = arg(False, "a soft target over the bins from the raters' mean and std instead")


@dataclass
class GDSOTeacherConfig(TrainConfig):
    """Reasoning teacher (Algorithm 1). GRPO baseline: lambda_pw = alpha_pt = alpha_pw = 0."""

    RENAMED: ClassVar[dict[str, str]] = TrainConfig.RENAMED | {
        "num_samples": "sampling.num_samples", "max_reasoning_tokens": "sampling.max_reasoning_tokens",
        "temperature": "sampling.temperature"}

    output_dir: str = arg("runs/gdso", "folder of the run")
    preset: str = arg("teacher", "tiny model size: student | teacher")
    updates_per_rollout: int = arg(2, "K_gdso: optimisation steps per rollout batch")
    ref_reset_every: int = arg(10, "N_ref: the reference policy is reset to the current one every N steps")
    beta: float = arg(1.0, "the k3 KL to the reference policy (eq. 4); 0 builds no reference. 1.0 keeps the tiny "
                           "teacher's descriptions readable; at 0.04 and 0.2 they garble (docs/RESULTS.md)")
    eps_low: float = arg(0.2, "lower clip of the policy ratio")
    eps_high: float = arg(0.2, "upper clip of the policy ratio")
    loss_type: str = arg("grpo", "policy-loss normalisation: grpo | bnpo | dr_grpo | dapo")
    lambda_pt: float = arg(1.0, "weight of the pointwise reward (eq. 13)")
    lambda_pw: float = arg(1.0, "weight of the pairwise reward (eq. 13)")
    alpha_pt: float = arg(1.0, "weight of the pointwise CE term (eq. 14)")
    alpha_pw: float = arg(1.0, "weight of the pairwise term (eq. 14)")
    adv_scale: str = arg("group", "advantage scale (eq. 3): group | batch | none")
    include_ties: bool = arg(False, "tied candidates count as pairs of the pairwise term")
    reward_from: str = arg("distribution", "distribution | text (the score token sampled from q and parsed)")
    eval_samples: int = arg(2, "reasoning samples per image at evaluation (q averaged over them)")
    grad_balance_every: int = arg(10, "log ||grad|| of the policy, CE and pairwise terms every N steps (0: never; "
                                      "one process only)")

    def __post_init__(self):
        super().__post_init__()
        _require_choice(self, "reward_from", ("distribution", "text"))
        _require_choice(self, "loss_type", LOSS_TYPES)
        _require_choice(self, "adv_scale", ADVANTAGE_SCALES)
        self.require_positive("updates_per_rollout", "ref_reset_every", "eval_samples")


@dataclass
class RISDConfig(TrainConfig):
    """Student distilled from a teacher checkpoint: KL(q_T || q_S), q_T averaged over sampling.num_samples of the
    teacher's reasonings."""

    RENAMED: ClassVar[dict[str, str]] = TrainConfig.RENAMED | {
        "teacher_samples": "sampling.num_samples", "max_reasoning_tokens": "sampling.max_reasoning_tokens",
        "temperature": "sampling.temperature"}

    output_dir: str = arg("runs/risd", "folder of the run")
    teacher: str = arg("", "teacher checkpoint folder (output_dir/model of train_gdso.py; required)")
    sampling: SamplingConfig = arg(help="the teacher's reasoning sampling (see SamplingConfig)",
                                   factory=lambda: SamplingConfig(num_samples=2))


@dataclass
class OPDConfig(TrainConfig):
    """On-policy distillation baseline: the student samples reasoning + score; A_t = log pi_T - log pi_S_old."""

    RENAMED: ClassVar[dict[str, str]] = GDSOTeacherConfig.RENAMED

    output_dir: str = arg("runs/opd", "folder of the run")
    teacher: str = arg("", "teacher checkpoint folder (required)")
    normalize: str = arg("trajectory", "eq. 19: trajectory ((1/T) per trajectory, then the mean) | token (the "
                                       "batch's token mean)")
    sampling: SamplingConfig = arg(help="the student's reasoning sampling (see SamplingConfig)",
                                   factory=lambda: SamplingConfig(num_samples=2))

    def __post_init__(self):
        super().__post_init__()
        _require_choice(self, "normalize", ("trajectory", "token"))


@dataclass
class GeneratorConfig(RunConfig):
    """A text-to-image generator optimised through a frozen student reward (paper section 5)."""

    RENAMED: ClassVar[dict[str, str]] = {"val_every": "eval_every", "batch": "batch_size"}

    output_dir: str = arg("runs/generator", "folder of the run")
    arch: str = arg("zimage", "tiny random-init generator: zimage | sd3 | flux")
    lora_rank: int = arg(0, "0: full fine-tuning; > 0: a LoRA adapter of this rank (peft), base weights frozen")
    lora_alpha: float | None = arg(None, "LoRA alpha (default: the rank)")
    lora_targets: list[str] = arg(help="LoRA target modules, comma-separated",
                                  factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    reward_model: str = arg("tiny", "tiny[:ARCH] (random-init student) or a student checkpoint folder "
                                    "(train_risd.py)")
    held_out_reward_model: str = arg("", "another student (e.g. another seed) that only scores the validation "
                                         "images")
    dimensions: list[str] = arg(help="rubric dimensions of the reward, comma-separated",
                                factory=lambda: ["realism", "aesthetics", "plausibility", "alignment"])
    aggregation: str = arg("mean", "how dimensions combine: mean | weighted | min | pessimistic (mean - kappa std)")
    kappa: float = arg(0.0, "pessimistic aggregation: mean - kappa * std (needs aggregation=pessimistic)")
    steps: int = arg(60, "optimisation steps")
    batch_size: int = arg(4, "images per step (the global batch, split over processes)")
    lr: float = arg(2e-3, "AdamW learning rate")
    warmup_steps: int = arg(0, "linear learning-rate warm-up steps")
    lr_schedule: str = arg("constant", "after the warm-up: cosine | constant")
    num_steps: int = arg(4, "denoising steps")
    backprop: str = arg("last_k", "which denoising steps carry gradients (zrcore.diffusion.sampler)")
    k: int = arg(1, "backprop=last_k: the number of steps with gradients")
    checkpoint: str = arg("step", "activation checkpointing of the denoising steps (zrcore.diffusion.sampler)")
    guidance_scale: float = arg(0.0, "classifier-free guidance scale (0: none)")
    latent_size: int = arg(28, "latents [16, s, s] -> images [3, 2s, 2s]")
    train_prompts: int = arg(32, "synthetic training prompts")
    val_prompts: int = arg(4, "validation prompts, sampled from fixed noise")
    eval_every: int = arg(5, "validate every N steps (0: only at the start and the end)")

    def __post_init__(self):
        super().__post_init__()
        _require_choice(self, "arch", GENERATOR_ARCHS)
        _require_choice(self, "aggregation", AGGREGATIONS)
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be 0 (full fine-tuning) or positive, got {self.lora_rank}")
        if self.kappa < 0:
            raise ValueError(f"kappa must be >= 0, got {self.kappa}")
        if self.kappa > 0 and self.aggregation != "pessimistic":
            raise ValueError(f"kappa={self.kappa} applies to aggregation='pessimistic' only; got aggregation="
                             f"{self.aggregation!r}: ask for it by name")
        self.require_positive("batch_size", "num_steps", "val_prompts", "train_prompts", "latent_size")
        self.sampler_config().validate()

    def sampler_config(self):
        """The sampler settings of this config (``zrcore.diffusion.SamplerConfig``)."""
        from zrcore.diffusion.sampler import SamplerConfig

        return SamplerConfig(num_steps=self.num_steps, guidance_scale=self.guidance_scale, backprop=self.backprop,
                             k=self.k, checkpoint=self.checkpoint)


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
    if origin in (typing.Union, types.UnionType):  # "X | None": "none" is None, else an X
        if text.lower() == "none":
            return None
        return _coerce(next(a for a in typing.get_args(tp) if a is not type(None)), text)
    return tp(text)


def flat_fields(cls) -> dict[str, tuple[type, dataclasses.Field]]:
    """Every settable field of a config class by its command-line name: "lr", and "sampling.temperature" for the
    fields of a nested config group."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out |= {f"{f.name}.{name}": entry for name, entry in flat_fields(tp).items()}
        else:
            out[f.name] = (tp, f)
    return out


def _default(cls, name: str):
    obj = cls.__new__(cls)  # the defaults without running the checks
    for part in name.split("."):
        f = {x.name: x for x in dataclasses.fields(obj)}[part]
        obj = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return obj


def _renamed(cls, name: str, where: str) -> str:
    new = cls.RENAMED[name]
    warn_renamed(f"{where}{name}", f"{where}{new}", stacklevel=4)
    return new


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _nest(cls, values: dict) -> dict:
    """{"a": 1, "sampling.x": 2} -> {"a": 1, "sampling": SamplingConfig-compatible {"x": 2, other defaults}}."""
    out: dict = {}
    for key, value in values.items():
        group, _, name = key.partition(".")
        if name:
            out.setdefault(group, dataclasses.asdict(_default(cls, group)))[name] = value
        else:
            out[key] = value
    return out


def parse_config(cls, argv: list[str] | None = None, description: str = ""):
    """``cls`` defaults, then ``--config FILE.yaml``, then ``--field value`` overrides; unknown keys are errors.
    Nested groups: ``--sampling.temperature 0.7`` or ``sampling: {temperature: 0.7}`` in YAML. Old names
    (``cls.RENAMED``) still work, with a FutureWarning naming the new one."""
    fields = flat_fields(cls)
    parser = argparse.ArgumentParser(description=description or cls.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with field: value entries (nested groups as mappings)")
    for name, (tp, f) in fields.items():
        default = _default(cls, name)
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        parser.add_argument(f"--{name}", dest=name, default=None, metavar=getattr(tp, "__name__", str(tp)).upper(),
                            help=f"{f.metadata.get('help', '')} (default: {shown})")
    for old, new in cls.RENAMED.items():
        parser.add_argument(f"--{old}", dest=f"renamed:{old}", default=None, help=f"renamed --{new}")
    args = vars(parser.parse_args(argv))
    values = {}
    if args["config"]:
        path = Path(args["config"])
        if not path.is_file():
            raise ValueError(f"config: no such file {str(path)!r}")
        try:
            data = _flatten(yaml.safe_load(path.read_text()) or {})
        except yaml.YAMLError as err:
            raise ValueError(f"config: {path} is not valid YAML ({str(err).splitlines()[0]})") from None
        for key in list(data):
            if key in cls.RENAMED:
                data[_renamed(cls, key, "")] = data.pop(key)
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"config: {path} has unknown keys {unknown}")
        values.update(data)
    raw = {name: args[name] for name in fields if args[name] is not None}
    for old in cls.RENAMED:
        if args[f"renamed:{old}"] is not None:
            raw[_renamed(cls, old, "--")] = args[f"renamed:{old}"]
    for name, text in raw.items():
        try:
            values[name] = _coerce(fields[name][0], text)
        except ValueError as err:
            parser.error(f"--{name}: {err}")
    return cls(**_nest(cls, values))


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


__getattr__ = module_getattr(__name__, {"GDSOConfig": "GDSOTeacherConfig"}, globals())  # renamed apart from TRL's
