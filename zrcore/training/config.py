"""Recipe configs as dataclasses, loadable from YAML and overridable from the command line.

    python recipes/train_gdso.py --config recipes/configs/gdso_agiqa.yaml --steps 40 --lambda_pw 0.5

The parser (YAML and command line, typed alike) is ``zrcore.training.cli_args``, the recipes' main with its
one-line errors ``zrcore.training.entry``; their names are re-exported here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from zrcore._renamed import module_getattr
from zrcore.diffusion.reward import AGGREGATIONS
from zrcore.diffusion.tiny import GENERATOR_ARCHS
from zrcore.losses import ADVANTAGE_SCALES, LOSS_TYPES
from zrcore.training.cli_args import (  # noqa: F401  (the parser lives in cli_args; old imports keep working)
    ConfigError,
    _coerce,
    _default,
    _flatten,
    _nest,
    flat_fields,
    parse_config,
    save_config,
)
from zrcore.training.entry import run_recipe  # noqa: F401
from zrcore.training.optim import MASTER_DTYPES, OPTIMIZERS


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


@dataclass
class SamplingConfig:
    """How reasoning traces are sampled: ``--sampling.FIELD`` on the command line, ``sampling: {FIELD: ...}`` in
    YAML."""

    TEACHER_DEFAULTS: ClassVar[bool] = False  # temperature 0 allowed: "the teacher's own" (DistillSamplingConfig)

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
        if not (self.temperature > 0 or (self.TEACHER_DEFAULTS and self.temperature == 0)):
            unset = ", or 0 for the teacher's own" if self.TEACHER_DEFAULTS else ""
            raise ValueError(f"sampling.temperature must be > 0{unset}, got {self.temperature}")
        if self.decode not in ("dynamic", "static_compiled"):
            raise ValueError(f"sampling.decode must be 'dynamic' or 'static_compiled', got {self.decode!r}")


@dataclass
class DistillSamplingConfig(SamplingConfig):
    """Sampling in a recipe distilled from a teacher checkpoint (RISD: the teacher's traces; OPD: the student's):
    ``max_reasoning_tokens`` and ``temperature`` left at 0 take the teacher's own values, the ones it was trained
    with (its zrcore_sampling.yaml, written by train_gdso.py), else the longest description and 1; a value set
    here (command line or YAML) wins."""

    TEACHER_DEFAULTS: ClassVar[bool] = True

    num_samples: int = arg(2, "samples per image: the teacher's traces per image in RISD, the student's in OPD")
    max_reasoning_tokens: int = arg(0, "cap on a trace's tokens; 0: the teacher's own (its zrcore_sampling.yaml), "
                                       "else the longest description of zrcore.data.captions plus its end-of-turn")
    temperature: float = arg(0.0, "sampling temperature (> 0); 0: the teacher's own (its zrcore_sampling.yaml), "
                                  "else 1")


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
    max_grad_norm: float = arg(1.0, "gradient clipping norm (> 0)")
    eval_every: int = arg(0, "evaluate every N steps (0: only at the start and the end)")
    save_every: int = arg(10, "atomic checkpoint every N steps (and at the end)")
    log_every: int = arg(1, "write a metrics row every N steps")
    progress: bool = arg(True, "show progress bars (ours and Hugging Face's download / loading bars)")
    report_to: list[str] = arg(help="also log the metrics to: none | tensorboard | wandb (offline) | all; several "
                                    "comma-separated or as a YAML list", factory=lambda: ["none"])
    device: str = arg("auto", "auto (cuda:LOCAL_RANK when CUDA is available, else cpu) | cpu | cuda | cuda:N")
    dtype: str = arg("fp32", "fp32 | bf16 | fp16: FSDP2 mixed precision (fp32 reduction), else autocast")
    distributed: str = arg("none", "none | ddp | fsdp (FSDP2 fully_shard); ddp and fsdp need torchrun")
    fsdp_cpu_offload: bool = arg(False, "fsdp: parameters, gradients and optimizer state kept on the CPU")
    gradient_checkpointing: bool = arg(False, "the model's own activation checkpointing")
    master_dtype: str = arg("fp32", "fp32 | bf16: the trained weights and their gradients (bf16 needs torchao: "
                                    "its AdamW with bf16 stochastic rounding)")
    optimizer: str = arg("adamw", "adamw (torch's default: foreach on CUDA) | adamw_fused (torch, fused: no "
                                  "full-size temporary) | adamw_8bit (torchao AdamW8bit: 8-bit states)")
    ref_dtype: str = arg("auto", "frozen models (GDSO's reference, RISD / OPD's teacher): auto (the compute dtype) "
                                 "| bf16 | fp32")
    ref_offload: bool = arg(False, "fsdp: the frozen models' shards kept on the CPU (CPUOffloadPolicy)")
    attn_implementation: str = arg("auto", "auto (flash_attention_2 on CUDA when flash-attn is installed, else "
                                           "sdpa) | sdpa | eager | flash_attention_2")
    resume: bool = arg(False, "continue the checkpoint in output_dir even where its recorded settings differ")
    overwrite_output_dir: bool = arg(False, "start afresh in an output_dir that holds another run (its checkpoint "
                                            "is removed)")

    def __post_init__(self):
        from zrcore.training.distributed import check_fields, resolve_device

        check_fields(self.distributed, self.dtype)
        resolve_device(self.device)
        _require_choice(self, "lr_schedule", ("cosine", "constant"))
        _require_choice(self, "attn_implementation", ATTN_IMPLEMENTATIONS)
        from zrcore.training.metrics_log import report_targets

        self.report_to = list(report_targets(self.report_to)) or ["none"]
        _require_choice(self, "master_dtype", MASTER_DTYPES)
        _require_choice(self, "optimizer", OPTIMIZERS)
        _require_choice(self, "ref_dtype", ("auto", *MASTER_DTYPES))
        if self.master_dtype == "bf16" and self.optimizer == "adamw_fused":
            raise ValueError("master_dtype='bf16' needs stochastic rounding (torchao): use optimizer 'adamw' or "
                             "'adamw_8bit', not 'adamw_fused'")
        if self.ref_offload and self.distributed != "fsdp":
            raise ValueError("ref_offload keeps FSDP2 shards on the CPU: it needs distributed='fsdp'")
        self.require_positive("steps", "save_every", "log_every")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 (a negative norm flips the gradient), got "
                             f"{self.max_grad_norm}")
        if self.resume and self.overwrite_output_dir:
            raise ValueError("resume and overwrite_output_dir exclude each other: pick one")
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
    train_prompts: int = arg(192, "synthetic: prompts in the training set")
    eval_prompts: int = arg(48, "synthetic: held-out prompts")
    eval_seed: int = arg(1000, "synthetic: the seed of the held-out set and its evaluation sampling; fixed, so "
                               "that runs of several seeds are scored on the same images")
    candidates: int = arg(4, "images per prompt (synthetic) / candidates per group (M)")
    image_size: int = arg(112, "images are resized to this many pixels a side")
    eval_limit: int = arg(0, "at most this many evaluation records per dimension, whole prompts at a time (0: all)")
    eval_batch_size: int = arg(16, "records per evaluation call")
    # optimisation
    steps: int = arg(120, "optimisation steps")
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
        if isinstance(self.dimensions, str):  # "realism" from Python or YAML is one dimension, not its letters
            self.dimensions = [d.strip() for d in self.dimensions.split(",") if d.strip()]
        if not self.dimensions:
            raise ValueError("dimensions must name at least one rubric dimension")
        if len(set(self.dimensions)) != len(self.dimensions):
            raise ValueError(f"dimensions must not repeat, got {self.dimensions}")
        if self.eval_limit < 0:
            raise ValueError(f"eval_limit must be >= 0 (0: all records), got {self.eval_limit}")


@dataclass
class PretrainConfig(RunConfig):
    """Generic visual competence before any rubric: the tiny VLM learns to describe rendered synthetic scenes
    (objects, background, position, visible defects) in words, with no score and no rubric in sight."""

    output_dir: str = arg("runs/pretrain", "folder of the run")
    arch: str = arg("qwen2_vl", "tiny model architecture: qwen2_vl | qwen2_5_vl | qwen3_vl | qwen3_5")
    preset: str = arg("teacher", "tiny model size: student | teacher")
    image_size: int = arg(112, "rendered image size in pixels")
    scenes: int = arg(2000, "training scenes (x candidates images), from zrcore.data.captions.PRETRAIN_OFFSET on")
    candidates: int = arg(4, "images per scene")
    eval_scenes: int = arg(16, "held-out scenes after the training ones (a caption-loss check)")
    questions: bool = arg(False, "also one short question per part of each image (captions.questions)")
    match_questions: bool = arg(False, "also 'Does the image show <its prompt>?' per image (captions.match_question; "
                                       "off: the descriptions' verdict on a quoted prompt teaches the comparison)")
    contexts: bool = arg(True, "each description asked in a random surrounding text (captions.context)")
    vision_warmup_steps: int = arg(400, "first the vision tower alone classifies the attributes (0: no warm-up; "
                                        "zrcore.training.vision_warmup)")
    vision_warmup_lr: float = arg(3e-3, "learning rate of the vision warm-up")
    batch_size: int = arg(32, "descriptions per step (the global batch, split over processes)")
    steps: int = arg(800, "optimisation steps")
    lr: float = arg(2e-3, "AdamW learning rate")
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
    micro_batch_tokens: int = arg(0, "each update in micro-batches of whole prompts (M x G sequences) of at most "
                                     "this many padded tokens, gradients accumulated (0: one pass)")
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
    adv_eps: float = arg(1e-4, "eps of the advantages (eq. 3): A = (r - mean(r)) / (std(r) + eps), >= 0 (TRL's 1e-4; "
                               "a group of equal rewards gets A = 0 whatever eps)")
    include_ties: bool = arg(False, "tied candidates count as pairs of the pairwise term")
    reward_from: str = arg("distribution", "distribution | text (the score token sampled from q at "
                                           "sampling.temperature, appended, parsed and reinforced)")
    eval_samples: int = arg(2, "reasoning samples per image at evaluation (q averaged over them)")
    grad_balance_every: int = arg(0, "log ||grad|| of the policy, CE and pairwise terms every N steps (0: never, "
                                     "the default: each logged step costs one extra backward per term; one process "
                                     "only)")

    def __post_init__(self):
        super().__post_init__()
        _require_choice(self, "reward_from", ("distribution", "text"))
        _require_choice(self, "loss_type", LOSS_TYPES)
        _require_choice(self, "adv_scale", ADVANTAGE_SCALES)
        self.require_positive("updates_per_rollout", "ref_reset_every", "eval_samples")
        if not self.adv_eps >= 0:
            raise ValueError(f"adv_eps must be >= 0 (eq. 3: std + eps divides), got {self.adv_eps}")
        if self.grad_balance_every < 0:
            raise ValueError(f"grad_balance_every must be >= 0 (0: never), got {self.grad_balance_every}")
        if self.micro_batch_tokens < 0:
            raise ValueError(f"micro_batch_tokens must be >= 0 (0: one pass), got {self.micro_batch_tokens}")
        if self.micro_batch_tokens and self.adv_scale == "batch":
            raise ValueError("micro_batch_tokens with adv_scale='batch' would scale advantages per micro-batch: use "
                             "adv_scale 'group' or 'none', or micro_batch_tokens 0")


@dataclass
class RISDConfig(TrainConfig):
    """Student distilled from a teacher checkpoint: KL(q_T || q_S), q_T averaged over sampling.num_samples of the
    teacher's reasonings."""

    RENAMED: ClassVar[dict[str, str]] = TrainConfig.RENAMED | {
        "teacher_samples": "sampling.num_samples", "max_reasoning_tokens": "sampling.max_reasoning_tokens",
        "temperature": "sampling.temperature"}

    output_dir: str = arg("runs/risd", "folder of the run")
    teacher: str = arg("", "teacher checkpoint folder (output_dir/model of train_gdso.py; required)")
    sampling: DistillSamplingConfig = arg(help="the teacher's reasoning sampling, by default as the teacher was "
                                               "trained (see DistillSamplingConfig)", factory=DistillSamplingConfig)

    def __post_init__(self):
        if isinstance(self.sampling, dict):
            self.sampling = DistillSamplingConfig(**self.sampling)
        super().__post_init__()


@dataclass
class OPDConfig(TrainConfig):
    """On-policy distillation baseline: the student samples reasoning + score; A_t = log pi_T - log pi_S_old."""

    RENAMED: ClassVar[dict[str, str]] = GDSOTeacherConfig.RENAMED

    output_dir: str = arg("runs/opd", "folder of the run")
    teacher: str = arg("", "teacher checkpoint folder (required)")
    normalize: str = arg("trajectory", "eq. 19: trajectory ((1/T) per trajectory, then the mean) | token (the "
                                       "batch's token mean)")
    sampling: DistillSamplingConfig = arg(help="the student's reasoning sampling, by default as the teacher was "
                                               "trained (see DistillSamplingConfig); the teacher's log-probs are "
                                               "taken at the teacher's own temperature", factory=DistillSamplingConfig)

    def __post_init__(self):
        if isinstance(self.sampling, dict):
            self.sampling = DistillSamplingConfig(**self.sampling)
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
    val_seed: int = arg(0, "the seed of the validation prompts, fixed (like their noise) so that runs of several "
                           "seeds are validated on the same prompts")
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


__getattr__ = module_getattr(__name__, {"GDSOConfig": "GDSOTeacherConfig"}, globals())  # renamed apart from TRL's
