"""A memory plan of one GDSO step, per rank, without a GPU.

    python -m zrcore.training.memory_plan --preset qwen2_5_vl_7b --batch 4x4x4 --reasoning_tokens 750 \\
        --image_size 448 --distributed fsdp --world_size 1 --master_dtype bf16 --optimizer adamw_8bit \\
        --gradient_checkpointing true --micro_batch_tokens 16384 --ref_offload true

What is estimated: the peak bytes one rank holds on its accelerator in each phase of a GDSO step in steady state
(step >= 2: optimizer states exist, gradients were freed after the previous step), split by kind.

- Phases: ``build`` (the policy and the reference materialized and loaded, before step 1), ``rollout`` (sampling
  the G reasoning traces of every candidate), ``old_logprobs`` and ``ref_logprobs`` (no-grad forwards of the policy
  and of the frozen reference), ``forward_backward`` (one micro-batch of the update, gradients accumulating) and
  ``optimizer`` (the step; the gradients are freed right after it).
- Kinds: ``parameters`` (the policy's shards plus any gathered, unsharded copies), ``gradients``, ``optimizer``
  (optimizer states), ``reference`` (the frozen reference's shards), ``activations`` (saved for the backward),
  ``kv_cache`` and ``temporaries`` (everything transient: backward buffers, all-gather / reduce-scatter buffers,
  logits chunks, the optimizer's work space, load buffers).

How (the way torchtitan estimates): the real transformers model of the preset is built on the meta device in the
master dtype, wrapped by a driver module that is the FSDP2 root, and under ``distributed="fsdp"`` sharded with
``fully_shard`` per decoder layer and per vision block over torch's fake process group (``FakeStore``, world size
N, rank 0), with ``MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=fp32)``. Its storage is then materialized
with ``to_empty`` inside ``FakeTensorMode(allow_non_fake_inputs=True)`` (no memory is allocated), the reference
likewise in ``ref_dtype``, and ``torch.distributed._tools.mem_tracker.MemTracker`` records the bytes of every
storage while the driver runs the phases on fake tensors: the no-grad forwards of the policy and the reference, and
one micro-batch forward + backward of a policy-gradient + CE surrogate loss over the same outputs as GDSO's
(completion log-probs, the score distribution); with several micro-batches the gradients of the earlier ones are
alive. The same code runs on real tensors (``fake=False``) and gives the same bytes; the tests also compare the plan
with zrcore's GDSO trainer step under MemTracker on CPU.

The optimizer step is not run: on fake tensors MemTracker records about 16 B/param of work space for torch's foreach
AdamW where real tensors allocate 4 B/param (one full-size temporary). Its tensors are counted from the shards: the
master weights, their gradients (in the master dtype), the states (2 x the master dtype per parameter for torch
AdamW) and that temporary for ``optimizer="adamw"`` (none for the fused step).

The decoder is driven through ``inputs_embeds`` (transformers' vision path reads ``grid_thw`` with ``.tolist()``,
which fake tensors cannot answer); the image placeholder tokens are part of the driven sequence. The rest is added
analytically, each term named in the notes of the plan:

- vision tower activations, per patch per block: ``1.24 * (8 * I_v + 20 * W_v)`` bytes in 16-bit compute (64 KiB
  at Qwen2.5-VL's width 1280, intermediate 3420, as measured on an H200), ``2 * W_v`` with checkpointing; twice that
  in fp32; each candidate image encoded once per micro-batch and shared by its G samples;
- KV cache of the rollout: full-attention layers hold ``2 * layers * kv_heads * head_dim * tokens * sequences``
  elements in the compute dtype; Qwen3.5's linear-attention layers hold a fixed state per sequence instead
  (``v_heads * k_dim * v_dim`` fp32 recurrent state + the conv state, ``(2 * k_heads * k_dim + v_heads * v_dim) *
  (kernel - 1)`` elements); ``min(rollout_batch_size, local sequences)`` sequences at the longest length; one
  layer's cache more while the cache grows;
- rollout: the policy's weights gathered once (a full copy in the compute dtype) when ``unshard_once``, else the
  largest unit; the last position's logits over the vocabulary (fp32, three copies while sampling);
- torchao's optimizers by their formulas: ``adamw_8bit`` (AdamW8bit: 1 B per element per state
  plus one scale in the parameter dtype per 256 elements, tensors of >= 4096 elements; smaller ones keep full
  states) and, with ``master_dtype="bf16"``, torchao's AdamW with bf16 stochastic rounding (states in bf16); their
  compiled per-parameter step has no full-size temporary;
- the log-probs of the completion follow the GPU path's memory (liger-kernel's fused linear cross-entropy):
  gradient buffers for the hidden states and the LM head allocated in the forward, one chunk of logits at a time;
- ``fsdp_cpu_offload`` / ``ref_offload`` (FSDP2's ``CPUOffloadPolicy``): the measured shards of the policy
  (parameters, gradients, optimizer states and its work space) / the reference move to the host, reported apart;
- ``distributed="ddp"``: a replica per rank plus DDP's gradient buckets (a second copy of the gradients, alive from
  the wrapping on);
- build: the shards plus one full tensor (the largest, 16-bit from the checkpoint and its master-dtype copy) in
  flight while loading sharded.

Sequences are counted at their cap: prompt + image tokens + ``reasoning_tokens`` + the scoring suffix, all
micro-batches at the longest length. The no-grad forwards run in the same micro-batches as the update.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

__all__ = ["KINDS", "OPTIMIZERS", "PHASES", "PRESETS", "MemoryOptions", "MemoryPlan", "Workload", "estimate",
           "format_table", "main", "model_config", "parse_args", "parse_batch",
           "step_tracker"]

PHASES = ("build", "rollout", "old_logprobs", "ref_logprobs", "forward_backward", "optimizer")
KINDS = ("parameters", "gradients", "optimizer", "reference", "activations", "kv_cache", "temporaries")
OPTIMIZERS = ("adamw", "adamw_fused", "adamw_8bit")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_GIB = 2 ** 30
_log = logging.getLogger(__name__)

_QWEN2_5_VL_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                          spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                          fullatt_block_indexes=[7, 15, 23, 31])
_QWEN3_5_VISION = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16,
                       spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                       deepstack_visual_indexes=[])
# the shapes of the public config.json files (Qwen/Qwen2.5-VL-3B-Instruct, -7B-Instruct, Qwen/Qwen3.5-9B, -27B)
PRESETS: dict[str, dict] = {
    "qwen2_5_vl_3b": dict(arch="qwen2_5_vl", tie=True, vision=dict(_QWEN2_5_VL_VISION, out_hidden_size=2048),
                          text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                                    num_attention_heads=16, num_key_value_heads=2, vocab_size=151936)),
    "qwen2_5_vl_7b": dict(arch="qwen2_5_vl", tie=False, vision=dict(_QWEN2_5_VL_VISION, out_hidden_size=3584),
                          text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                    num_attention_heads=28, num_key_value_heads=4, vocab_size=152064)),
    "qwen3_5_9b": dict(arch="qwen3_5", tie=False, vision=dict(_QWEN3_5_VISION, out_hidden_size=4096),
                       text=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=32,
                                 num_attention_heads=16, num_key_value_heads=4, head_dim=256, vocab_size=248320,
                                 linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
                                 linear_value_head_dim=128, linear_conv_kernel_dim=4,
                                 layer_types=["linear_attention"] * 3 + ["full_attention"])),
    "qwen3_5_27b": dict(arch="qwen3_5", tie=False, vision=dict(_QWEN3_5_VISION, out_hidden_size=5120),
                        text=dict(hidden_size=5120, intermediate_size=17408, num_hidden_layers=64,
                                  num_attention_heads=24, num_key_value_heads=4, head_dim=256, vocab_size=248320,
                                  linear_num_key_heads=16, linear_num_value_heads=48, linear_key_head_dim=128,
                                  linear_value_head_dim=128, linear_conv_kernel_dim=4,
                                  layer_types=["linear_attention"] * 3 + ["full_attention"])),
}
for _arch in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5"):
    for _size in ("student", "teacher"):
        PRESETS[f"tiny_{_arch}_{_size}"] = dict(arch=_arch, tiny=_size)


def model_config(preset: str):
    """The transformers config of a preset (see PRESETS): the real model class is built from it."""
    import transformers

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    spec = PRESETS[preset]
    if "tiny" in spec:
        from zrcore.models.tiny import tiny_model_config

        return tiny_model_config(spec["arch"], spec["tiny"])
    text = dict(spec["text"], max_position_embeddings=32768)
    if spec["arch"] == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}
        cls = transformers.Qwen2_5_VLConfig
    else:
        n = text["num_hidden_layers"]
        text["layer_types"] = (text["layer_types"] * n)[:n]
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25,
                                   "mrope_section": [11, 11, 10], "mrope_interleaved": True}
        cls = transformers.Qwen3_5Config
    return cls(text_config=text, vision_config=dict(spec["vision"]), tie_word_embeddings=spec["tie"])


def _model_class(config):
    import transformers

    return {"Qwen2VLConfig": transformers.Qwen2VLForConditionalGeneration,
            "Qwen2_5_VLConfig": transformers.Qwen2_5_VLForConditionalGeneration,
            "Qwen3VLConfig": transformers.Qwen3VLForConditionalGeneration,
            "Qwen3_5Config": transformers.Qwen3_5ForConditionalGeneration}[type(config).__name__]


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass
class Workload:
    """One GDSO step's batch: P prompts x M candidates x G samples, sequence lengths at their caps."""

    prompts: int = 4
    candidates: int = 4
    samples: int = 4
    reasoning_tokens: int = 750
    image_size: int = 448
    prompt_tokens: int = 200  # the rubric prompt's text around the image
    suffix_tokens: int = 8  # end of turn + the forced scoring suffix

    def __post_init__(self):
        for name in ("prompts", "candidates", "samples", "reasoning_tokens", "image_size", "prompt_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class MemoryOptions:
    """The trainer's memory options, with its names and meanings (see the module docstring)."""

    dtype: str = "bf16"
    master_dtype: str = "fp32"
    optimizer: str = "adamw"
    ref_dtype: str = "auto"  # auto: the compute dtype, as the trainer's
    ref_offload: bool = False
    fsdp_cpu_offload: bool = False
    gradient_checkpointing: bool = False
    micro_batch_tokens: int = 0
    distributed: str = "fsdp"
    world_size: int = 1
    beta: float = 1.0
    unshard_once: bool = True
    rollout_batch_size: int = 64

    def __post_init__(self):
        if self.ref_dtype == "auto":
            self.ref_dtype = self.dtype
        for name in ("dtype", "master_dtype", "ref_dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"{name} must be one of {list(_DTYPES)}, got {getattr(self, name)!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.distributed not in ("none", "ddp", "fsdp"):
            raise ValueError(f"distributed must be one of ['none', 'ddp', 'fsdp'], got {self.distributed!r}")
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        if self.distributed == "none" and self.world_size != 1:
            raise ValueError(f"world_size {self.world_size} needs distributed='ddp' or 'fsdp' (none is one process)")
        for name in ("fsdp_cpu_offload", "ref_offload"):
            if getattr(self, name) and self.distributed != "fsdp":
                raise ValueError(f"{name} is FSDP2's CPUOffloadPolicy: it needs distributed='fsdp'")
        if self.micro_batch_tokens < 0:
            raise ValueError(f"micro_batch_tokens must be >= 0 (0: one forward/backward), got "
                             f"{self.micro_batch_tokens}")
        if self.rollout_batch_size < 1:
            raise ValueError(f"rollout_batch_size must be >= 1, got {self.rollout_batch_size}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


@dataclass
class MemoryPlan:
    """Per-rank bytes by phase and kind (``table[phase][kind]``), host bytes of offloaded state, the shapes used."""

    preset: str
    workload: Workload
    options: MemoryOptions
    table: dict[str, dict[str, int]]
    host: dict[str, int]
    params: int
    shape: dict
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def phase_total(self, phase: str) -> int:
        return sum(self.table[phase].values())

    @property
    def peak(self) -> int:
        return max(self.phase_total(p) for p in self.table)

    @property
    def peak_phase(self) -> str:
        return max(self.table, key=self.phase_total)

    def to_json(self) -> dict:
        return {"preset": self.preset, "workload": asdict(self.workload), "options": asdict(self.options),
                "params": self.params, "shape": self.shape, "table_bytes": self.table, "host_bytes": self.host,
                "phase_totals_bytes": {p: self.phase_total(p) for p in self.table}, "peak_bytes": self.peak,
                "peak_gib": self.peak / _GIB, "peak_phase": self.peak_phase, "notes": self.notes,
                "seconds": self.seconds}


# ---- the shapes the analytic terms need ------------------------------------------------------------------------
def _shape(config, wl: Workload) -> dict:
    t, v = config.text_config, config.vision_config
    width = getattr(v, "embed_dim", None) or v.hidden_size
    inter = getattr(v, "intermediate_size", None) or int(width * getattr(v, "mlp_ratio", 4))
    side = max(v.patch_size * v.spatial_merge_size, wl.image_size // (v.patch_size * v.spatial_merge_size)
               * v.patch_size * v.spatial_merge_size)
    patches = (side // v.patch_size) ** 2
    types = list(getattr(t, "layer_types", None) or ["full_attention"] * t.num_hidden_layers)
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    image_tokens = patches // v.spatial_merge_size ** 2
    s = {"hidden": t.hidden_size, "intermediate": t.intermediate_size, "layers": t.num_hidden_layers,
         "vocab": t.vocab_size, "kv_heads": t.num_key_value_heads, "head_dim": head_dim,
         "full_layers": types.count("full_attention"), "linear_layers": types.count("linear_attention"),
         "vision_width": width, "vision_intermediate": inter, "vision_depth": v.depth, "patches": patches,
         "image_tokens": image_tokens, "seq_len": wl.prompt_tokens + image_tokens + wl.reasoning_tokens
         + wl.suffix_tokens}
    if s["linear_layers"]:
        s.update(lin_k_heads=t.linear_num_key_heads, lin_v_heads=t.linear_num_value_heads,
                 lin_k_dim=t.linear_key_head_dim, lin_v_dim=t.linear_value_head_dim,
                 lin_kernel=t.linear_conv_kernel_dim)
    return s


def _split(wl: Workload, opt: MemoryOptions, seq_len: int) -> tuple[int, int, int]:
    """(local prompts, prompts per micro-batch, micro-batches) of the rank holding the most prompts."""
    world = opt.world_size if opt.distributed != "none" else 1
    local = math.ceil(wl.prompts / world)
    group_tokens = wl.candidates * wl.samples * seq_len
    per = local if opt.micro_batch_tokens == 0 else max(1, min(local, opt.micro_batch_tokens // group_tokens))
    return local, per, math.ceil(local / per)


def _kv_bytes(s: dict, sequences: int, tokens: int, compute_bytes: int) -> tuple[int, int]:
    """(KV cache bytes, one full-attention layer's cache) for ``sequences`` of ``tokens``."""
    per_layer = 2 * s["kv_heads"] * s["head_dim"] * tokens * sequences * compute_bytes
    kv = s["full_layers"] * per_layer
    if s["linear_layers"]:
        state = s["lin_v_heads"] * s["lin_k_dim"] * s["lin_v_dim"] * 4
        conv = (2 * s["lin_k_heads"] * s["lin_k_dim"] + s["lin_v_heads"] * s["lin_v_dim"]) * (s["lin_kernel"] - 1)
        kv += s["linear_layers"] * sequences * (state + conv * compute_bytes)
    return kv, per_layer


def _vision_act_bytes(s: dict, images: int, checkpointing: bool, compute_bytes: int) -> int:
    per = 2 * s["vision_width"] if checkpointing else 1.24 * (8 * s["vision_intermediate"] + 20 * s["vision_width"])
    return int(per * compute_bytes / 2 * s["patches"] * s["vision_depth"] * images)


def _adam_state_bytes(params: list[torch.Tensor], opt: MemoryOptions) -> int:
    """The two Adam moments over the local shards: torch AdamW's in the parameter dtype, torchao AdamW8bit's as in
    the module docstring."""
    total = 0
    for p in params:
        n, b = p.numel(), p.element_size()
        if opt.optimizer == "adamw_8bit" and n >= 4096 and n % 256 == 0:
            total += 2 * (n + (n // 256) * b) + 256 * 4 * 2  # codes + block scales + the two 256-entry maps
        else:
            total += 2 * n * b
    return total


# ---- the measured part ------------------------------------------------------------------------------------------
class _FusedLinearLogprobs(torch.autograd.Function):
    """log p(target) per row of ``hidden`` under the LM head ``weight`` with the memory of liger-kernel's fused
    linear cross-entropy: gradient buffers for hidden and weight allocated in the forward, then one chunk of
    logits at a time (chunk rows = next power of two of rows / ceil(V / H))."""

    @staticmethod
    def forward(ctx, hidden, weight, targets):
        n, h = hidden.shape
        v = weight.shape[0]
        chunk = min(n, 1 << max(0, math.ceil(math.log2(max(1, math.ceil(n / math.ceil(v / h)))))))
        grad_h = torch.zeros_like(hidden)
        grad_w = torch.zeros_like(weight) if weight.requires_grad else None
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            z = (hidden[start:stop] @ weight.t()).float()
            lse = torch.logsumexp(z, -1)
            out[start:stop] = z.gather(-1, targets[start:stop, None]).squeeze(-1) - lse
            dz = torch.softmax(z, -1).to(hidden.dtype)
            grad_h[start:stop] = dz @ weight
            if grad_w is not None:
                grad_w.addmm_(dz.t(), hidden[start:stop])
            del z, dz, lse
        ctx.save_for_backward(grad_h, grad_w if grad_w is not None else torch.empty(0))
        return out

    @staticmethod
    def backward(ctx, grad):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad[:, None].to(grad_h.dtype)
        return gh, (grad_w if grad_w.numel() else None), None


class _Driver(torch.nn.Module):
    """The FSDP2 root around the transformers model: embeddings, the decoder through ``inputs_embeds``, the
    completion log-probs and the score distribution at the last position (K score rows of the LM head)."""

    def __init__(self, model, bins: int = 9):
        super().__init__()
        self.model = model
        self.bins = bins

    def forward(self, ids: torch.Tensor, completion: int):
        from zrcore.ops.score_distribution import score_distribution_torch

        lm = self.model.model.language_model
        hidden = lm(inputs_embeds=lm.embed_tokens(ids), use_cache=False).last_hidden_state
        weight = self.model.get_output_embeddings().weight
        h = hidden[:, -completion - 2:-2].reshape(-1, hidden.shape[-1])
        logps = _FusedLinearLogprobs.apply(h, weight, ids[:, -completion - 1:-1].reshape(-1))
        token_ids = torch.arange(self.bins, device=ids.device)
        values = torch.linspace(1.0, 5.0, self.bins, device=ids.device)
        q = score_distribution_torch(hidden[:, -1].to(weight.dtype), weight, token_ids, values)
        return logps, q.log_probs  # [rows * completion], [rows, K]


@contextlib.contextmanager
def _fake_group(world: int):
    """torch's fake process group of ``world`` ranks (this process is rank 0) for the duration of the block; the
    default group is destroyed afterwards, so that nothing else in the process sees an initialized group."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise RuntimeError("memory_plan needs its own fake process group: run it where no process group is "
                           "initialized (not under torchrun)")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


def step_tracker():
    """torch's MemTracker (torch 2.13's private hooks), adapted to read global peaks only: no gradient hooks on frozen
    modules, no per-module peaks, per-module statistics restarted at each top-level call (a sampling loop calls the
    model once per token), and no backward hooks registered for calls without gradients."""
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.utils._pytree import tree_map_only

    class Tracker(MemTracker):
        def _track_module_params_and_buffers(self, module, install_grad_hooks: bool = True):
            frozen = not any(p.requires_grad for p in module.parameters())
            return super()._track_module_params_and_buffers(module, install_grad_hooks and not frozen)

        def _update_peak_stats(self, peak_state) -> None:  # the global peak only (not one per active module:
            for dev, snap in self._curr_mem_snap.items():  # that loop over every module per op dominates at scale)
                if self._peak_mem.get(dev, 0) < snap["Total"]:
                    self._peak_mem[dev] = snap["Total"]
                    self._peak_mem_snap[dev] = dict(snap)

        # only the global peaks are read: per-module statistics restart at each top-level call (a generate step
        # calls the model once per token), and hooks of modules without statistics are skipped
        def _pre_fw_hook(self, module, inputs) -> None:
            if module in self.memory_tracking and not self._mod_tracker.is_bw:
                name = self._mod_tracker.get_known_fqn(module)
                if set(self._mod_tracker.parents) - {name} == {"Global"}:
                    self.reset_mod_stats()
            super()._pre_fw_hook(module, inputs)

        def _post_fw_hook(self, module, inputs, outputs) -> None:
            if module in self.memory_tracking:
                super()._post_fw_hook(module, inputs, outputs)

        def _pre_bw_hook(self, module, args) -> None:
            if module is not None and module in self.memory_tracking:
                super()._pre_bw_hook(module, args)

        def _post_bw_hook(self, module, args) -> None:
            if module is not None and module in self.memory_tracking:
                super()._post_bw_hook(module, args)

    tracker = Tracker()
    mod = tracker._mod_tracker
    pre, post = mod._fw_pre_hook, mod._fw_post_hook

    def detached(args):  # without gradients nothing is hooked for a backward (a parameter view may be passed)
        return args if torch.is_grad_enabled() else tree_map_only(torch.Tensor, torch.Tensor.detach, args)

    mod._fw_pre_hook = lambda m, inputs: pre(m, detached(inputs))
    mod._fw_post_hook = lambda m, inputs, outputs: post(m, inputs, detached(outputs))
    return tracker


class _Phases:
    """Peak snapshots of a MemTracker between marks (the tracker keeps one global peak; it is reset per phase)."""

    def __init__(self, tracker):
        self.mt = tracker

    def reset(self) -> None:
        self.mt.reset_mod_stats()
        cur = self.mt.get_tracker_snapshot("current")
        self.mt._peak_mem = {d: s["Total"] for d, s in cur.items()}
        self.mt._peak_mem_snap = copy.deepcopy(cur)

    def peak(self) -> dict[str, int]:
        snap = self.mt.get_tracker_snapshot("peak")
        out: dict[str, int] = {}
        for dev_snap in snap.values():
            for k, v in dev_snap.items():
                key = getattr(k, "name", k)  # _MemRefType members (a str enum) by name; "Total" as is
                out[key] = out.get(key, 0) + int(v)
        return out


def _nbytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        local = t.to_local() if hasattr(t, "to_local") else t
        st = local.untyped_storage()
        key = st._cdata
        if key in seen:
            continue
        seen.add(key)
        total += st.nbytes()
    return total


def _build(config, dtype: torch.dtype, opt: MemoryOptions, trainable: bool, checkpointing: bool):
    cls = _model_class(config)
    with torch.device("meta"):
        model = cls(copy.deepcopy(config))
    model.to(dtype)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    driver = _Driver(model)
    if not trainable:
        driver.requires_grad_(False)
        driver.eval()
    else:
        driver.train()
    if opt.distributed == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        from zrcore.sharding import block_units

        mp = MixedPrecisionPolicy(param_dtype=_DTYPES[opt.dtype], reduce_dtype=torch.float32)
        for unit in block_units(model):
            fully_shard(unit, mp_policy=mp)
        fully_shard(driver, mp_policy=mp, reshard_after_forward=True)
    return driver


def _materialize(driver, fake: bool, seed: int) -> None:
    """Storage for the meta-built module (fake tensors inside FakeTensorMode); real tensors get small random values.
    The rotary tables are buffers computed at construction: they are computed again."""
    driver.to_empty(device="cpu")
    if not fake:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in driver.parameters():
                local = p.to_local() if hasattr(p, "to_local") else p
                local.copy_(torch.randn(local.shape, generator=gen) * 0.02)
    for m in driver.modules():
        if hasattr(m, "inv_freq") and hasattr(m, "rope_init_fn"):
            m.inv_freq = m.rope_init_fn(m.config, torch.device("cpu"))[0]


def _measure(config, wl: Workload, opt: MemoryOptions, s: dict, fake: bool, progress) -> dict:
    group = _fake_group(opt.world_size) if opt.distributed == "fsdp" else contextlib.nullcontext()
    with group:
        return _measure_in_group(config, wl, opt, s, fake, progress)


def _measure_in_group(config, wl: Workload, opt: MemoryOptions, s: dict, fake: bool, progress) -> dict:
    from torch._subclasses.fake_tensor import FakeTensorMode

    master, ref_dtype = _DTYPES[opt.master_dtype], _DTYPES[opt.ref_dtype]
    policy = _build(config, master, opt, True, opt.gradient_checkpointing)
    ref = _build(config, ref_dtype, opt, False, False) if opt.beta > 0 else None
    local, per, n_micro = _split(wl, opt, s["seq_len"])
    rows, seq, comp = per * wl.candidates * wl.samples, s["seq_len"], wl.reasoning_tokens + 1
    autocast = (torch.autocast("cpu", dtype=_DTYPES[opt.dtype])
                if opt.distributed != "fsdp" and opt.dtype != "fp32" else contextlib.nullcontext())
    out: dict = {}
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    with mode:
        _materialize(policy, fake, 0)
        if ref is not None:
            _materialize(ref, fake, 1)
        params = [p for p in policy.parameters() if p.requires_grad]
        out["policy_bytes"] = _nbytes(params)
        out["ref_bytes"] = _nbytes(ref.parameters()) if ref is not None else 0
        out["params"] = sum(p.numel() for p in params)  # DTensor.numel() is the global count
        out["largest"] = max(p.numel() for p in params)
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, s["vocab"], (rows, seq), generator=None if fake else gen)
        tracker = step_tracker()
        tracker.track_external(*[mod for mod in (policy, ref) if mod is not None])
        phases = _Phases(tracker)
        with tracker:
            out["build"] = phases.peak()
            progress("old log-probs (no-grad forward of the policy)")
            phases.reset()
            policy.eval()  # no checkpointing without gradients (transformers checkpoints only in training)
            with torch.no_grad(), autocast:
                o = policy(ids, comp)
            del o
            policy.train()
            out["old_logprobs"] = phases.peak()
            if ref is not None:
                progress("reference log-probs (no-grad forward of the reference)")
                phases.reset()
                with torch.no_grad(), autocast:
                    o = ref(ids, comp)
                del o
                out["ref_logprobs"] = phases.peak()
            if n_micro > 1:  # later micro-batches accumulate into the gradients of the earlier ones
                for p in params:
                    p.grad = torch.zeros_like(p)
                tracker._track_module_params_and_buffers(policy, install_grad_hooks=False)  # tagged as gradients
            progress(f"forward + backward of one micro-batch ({rows} sequences x {seq} tokens)")
            phases.reset()
            with autocast:
                logps, logq = policy(ids, comp)
                loss = -logps.mean() - logq[:, 0].float().mean()  # the policy term's and the CE term's inputs
            loss.backward()
            del logps, logq, loss
            out["forward_backward"] = phases.peak()
            locals_ = [p.to_local() if hasattr(p, "to_local") else p for p in params]
            # every trained parameter has a gradient after a real backward (the vision tower's too, not driven
            # here), in the parameter's dtype (FSDP2 reduces in fp32 and casts back to the shard's dtype)
            out["grad_bytes"] = sum(t.numel() * t.element_size() for t in locals_)
            out["state_bytes"] = _adam_state_bytes(locals_, opt)
            # torch's foreach AdamW allocates one full-size temporary (the sqrt of the second moment) per step;
            # fused and torchao's compiled steps none (checked on real tensors in the tests: fake tensors record
            # about three times the foreach work space, so the step is not run on them)
            out["optimizer_work"] = (sum(t.numel() for t in locals_) * 4
                                     if opt.optimizer == "adamw" and opt.master_dtype == "fp32" else 0)
            for p in params:
                p.grad = None
        out["rows"], out["micro_batches"], out["local_prompts"], out["prompts_per_micro"] = rows, n_micro, local, per
    return out


def _kinds(snap: dict[str, int], ref_bytes: int) -> dict[str, int]:
    """MemTracker's categories -> the plan's kinds (the reference's shards taken out of the parameters)."""
    k = dict.fromkeys(KINDS, 0)
    k["parameters"] = snap.get("PARAM", 0) - ref_bytes
    k["reference"] = ref_bytes
    k["gradients"] = snap.get("GRAD", 0)
    k["optimizer"] = snap.get("OPT", 0)
    k["activations"] = snap.get("ACT", 0)
    k["temporaries"] = snap.get("TEMP", 0) + snap.get("BUFFER", 0) + snap.get("OTH", 0)
    return k


def estimate(preset: str, workload: Workload | None = None, options: MemoryOptions | None = None, *,
             fake: bool = True, config=None, progress: bool = False) -> MemoryPlan:
    """The memory plan of one GDSO step (see the module docstring). ``config``: a transformers config to use
    instead of the preset's; ``fake=False`` runs the same code on real CPU tensors (small models only)."""
    wl, opt = workload or Workload(), options or MemoryOptions()
    config = config if config is not None else model_config(preset)
    t0 = time.time()

    def note(msg: str) -> None:
        if progress:
            _log.info("[memory_plan %5.1fs] %s", time.time() - t0, msg)

    s = _shape(config, wl)
    note(f"{preset}: building on meta, world size {opt.world_size}, {opt.distributed}")
    m = _measure(config, wl, opt, s, fake, note)
    cb = 2 if opt.dtype == "bf16" else 4
    mb = 2 if opt.master_dtype == "bf16" else 4
    notes: list[str] = []
    ref_b, pol_b, states = m["ref_bytes"], m["policy_bytes"], m["state_bytes"]
    n_params = m["params"]
    table: dict[str, dict[str, int]] = {}

    # build: the shards + one full tensor in flight while loading
    b = _kinds(m["build"], ref_b)
    b["temporaries"] += m["largest"] * (2 + mb)
    table["build"] = b
    notes.append("build: + the largest full tensor (16-bit from the checkpoint and its master copy) while loading")

    # steady state: optimizer states alive in every phase; gradients freed after the previous step
    ddp_buckets = m["grad_bytes"] if opt.distributed == "ddp" else 0
    images_micro = m["prompts_per_micro"] * wl.candidates
    for phase in ("old_logprobs", "ref_logprobs"):
        if phase not in m:
            continue
        k = _kinds(m[phase], ref_b)
        k["optimizer"] += states
        k["activations"] += _vision_act_bytes(s, images_micro, True, cb)  # no-grad: about one block's output
        table[phase] = k
    fb = _kinds(m["forward_backward"], ref_b)
    fb["optimizer"] += states
    fb["activations"] += _vision_act_bytes(s, images_micro, opt.gradient_checkpointing, cb)
    fb["gradients"] += ddp_buckets
    table["forward_backward"] = fb
    notes.append(f"vision tower: {images_micro} images per micro-batch, {s['patches']} patches x "
                 f"{s['vision_depth']} blocks, analytic activations")
    o = dict.fromkeys(KINDS, 0)  # every tensor alive in the step is known: the shards, their gradients, states
    o.update(parameters=pol_b, gradients=m["grad_bytes"] + ddp_buckets, optimizer=states, reference=ref_b,
             temporaries=m["optimizer_work"])
    table["optimizer"] = o

    # rollout: persistent state + gathered weights + KV cache + sampling temporaries
    seqs = min(opt.rollout_batch_size, m["local_prompts"] * wl.candidates * wl.samples)
    kv, kv_layer = _kv_bytes(s, seqs, s["seq_len"], cb)
    gathered = 0  # fsdp: gathered once (a full copy) or a unit at a time; else autocast's cache of 16-bit weights
    if opt.distributed == "fsdp":
        gathered = n_params * cb if opt.unshard_once else n_params * cb // max(1, s["layers"]) * 2
    elif opt.dtype != opt.master_dtype:
        gathered = n_params * cb
    prompts_in_call = max(1, seqs // wl.samples)
    prefill = prompts_in_call * (s["seq_len"] - wl.reasoning_tokens) * (2 * s["intermediate"] + 4 * s["hidden"]) * cb
    r = dict.fromkeys(KINDS, 0)
    r["parameters"] = pol_b + gathered
    r["reference"] = ref_b
    r["optimizer"] = states
    r["kv_cache"] = kv
    r["activations"] = _vision_act_bytes(s, prompts_in_call, True, cb)
    r["temporaries"] = kv_layer + 3 * seqs * s["vocab"] * 4 + prefill
    table["rollout"] = r
    for phase in ("rollout", "old_logprobs", "ref_logprobs"):  # DDP's buckets live as long as the wrapper
        if phase in table:
            table[phase]["gradients"] += ddp_buckets
    notes.append(f"rollout: {seqs} sequences per generate call, KV cache analytic"
                 + (f", weights gathered {'once' if opt.unshard_once else 'one unit at a time'}"
                    if opt.distributed == "fsdp" else ""))

    host: dict[str, int] = {}
    if opt.fsdp_cpu_offload:
        work = table["optimizer"]["temporaries"]
        host = {"parameters": pol_b, "gradients": m["grad_bytes"], "optimizer": states, "optimizer_work": work}
        for phase, k in table.items():
            k["parameters"] = max(0, k["parameters"] - pol_b)
            k["optimizer"] = 0
            if phase == "optimizer":
                k["gradients"], k["temporaries"] = 0, 0
            else:
                k["gradients"] = max(0, k["gradients"] - (m["grad_bytes"] if phase == "forward_backward" else 0))
        notes.append("fsdp_cpu_offload: the policy's shards, gradients and optimizer states on the host")
    if opt.ref_offload and ref_b:
        host["reference"] = ref_b
        for k in table.values():
            k["reference"] = 0
        notes.append("ref_offload: the reference's shards on the host")
    ordered = {p: {k: int(v) for k, v in table[p].items()} for p in PHASES if p in table}
    return MemoryPlan(preset, wl, opt, ordered, host, n_params, s, notes, time.time() - t0)


def format_table(plan: MemoryPlan) -> str:
    """A markdown table: phases as rows, kinds as columns, GiB per rank (MiB below 1 GiB); the peak below."""
    unit, div = ("GiB", _GIB) if plan.peak >= _GIB else ("MiB", 2 ** 20)
    head = f"| phase ({unit}) | " + " | ".join(KINDS) + " | total |"
    lines = [head, "|---" * (len(KINDS) + 2) + "|"]
    for phase, kinds in plan.table.items():
        cells = " | ".join(f"{kinds[k] / div:.2f}" for k in KINDS)
        lines.append(f"| {phase} | {cells} | **{plan.phase_total(phase) / div:.2f}** |")
    o, w = plan.options, plan.workload
    lines.append("")
    count = f"{plan.params / 1e9:.2f} B" if plan.params >= 1e8 else f"{plan.params / 1e6:.2f} M"
    lines.append(f"{plan.preset} ({count} parameters), {w.prompts}x{w.candidates}x{w.samples}, "
                 f"{w.reasoning_tokens}-token traces, {w.image_size} px ({plan.shape['image_tokens']} image tokens, "
                 f"{plan.shape['seq_len']} tokens a sequence); {o.distributed} x {o.world_size}, dtype {o.dtype}, "
                 f"master {o.master_dtype}, {o.optimizer}, ref {o.ref_dtype}"
                 f"{' offloaded' if o.ref_offload else ''}, cpu_offload {o.fsdp_cpu_offload}, checkpointing "
                 f"{o.gradient_checkpointing}, micro_batch_tokens {o.micro_batch_tokens}")
    lines.append(f"peak per rank: {plan.peak / div:.2f} {unit} ({plan.peak_phase})"
                 + (f"; host per rank: {sum(plan.host.values()) / div:.2f} {unit}" if plan.host else "")
                 + f"; estimated in {plan.seconds:.0f} s")
    return "\n".join(lines)


def parse_batch(text: str) -> tuple[int, int, int]:
    """'PxMxG' -> (prompts, candidates, samples)."""
    try:
        p, m, g = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"batch must be PxMxG (prompts x candidates x samples), e.g. 4x4x4; got {text!r}") from None
    return p, m, g


def parse_args(argv: list[str] | None = None) -> tuple[str, Workload, MemoryOptions, bool]:
    """The command line -> (preset, workload, options, JSON wanted); a bad value exits with one line naming it."""
    ap = argparse.ArgumentParser(prog="python -m zrcore.training.memory_plan",
                                 description="Per-rank peak memory of one GDSO step, by phase and kind, estimated on "
                                             "fake tensors (no GPU).")
    ap.add_argument("--preset", required=True, help=f"one of {sorted(PRESETS)}")
    ap.add_argument("--batch", default="4x4x4", help="P x M x G: prompts x candidates x samples")
    ap.add_argument("--reasoning_tokens", type=int, default=750)
    ap.add_argument("--image_size", type=int, default=448)
    ap.add_argument("--prompt_tokens", type=int, default=200)
    ap.add_argument("--world_size", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the plan as JSON")
    defaults = MemoryOptions()
    for name, value in asdict(defaults).items():
        if name == "world_size":
            continue
        kind = _bool if isinstance(value, bool) else type(value)
        ap.add_argument(f"--{name}", type=kind, default="auto" if name == "ref_dtype" else value)
    args = ap.parse_args(argv)
    try:
        p, m, g = parse_batch(args.batch)
        wl = Workload(p, m, g, args.reasoning_tokens, args.image_size, args.prompt_tokens)
        opt = MemoryOptions(**{k: getattr(args, k) for k in asdict(defaults)})
    except ValueError as err:
        ap.error(str(err))
    if args.preset not in PRESETS:
        ap.error(f"--preset must be one of {sorted(PRESETS)}, got {args.preset!r}")
    return args.preset, wl, opt, args.json


def main(argv: list[str] | None = None) -> int:
    preset, wl, opt, as_json = parse_args(argv)
    if not as_json and not _log.handlers:  # the command's progress notes on stderr
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        _log.addHandler(handler)
        _log.setLevel(logging.INFO)
    plan = estimate(preset, wl, opt, progress=not as_json)
    sys.stdout.write((json.dumps(plan.to_json(), indent=1) if as_json else format_table(plan)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
