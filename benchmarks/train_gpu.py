"""Training throughput on a GPU: step time, peak memory and rollout tokens/s of train_gdso.

    python benchmarks/train_gpu.py --size tiny --steps 20                   # the recipe's tiny teacher on CUDA
    torchrun --nproc_per_node 1 benchmarks/train_gpu.py --size 3b --steps 4 \\
        --distributed fsdp --dtype bf16 --gradient_checkpointing true      # a Qwen2.5-VL-3B-sized judge

``--size 3b`` builds a random-init model with Qwen2.5-VL-3B's dimensions (36 decoder layers of width 2048, vocabulary
151,936, a 32-block vision tower of width 1280) directly on the device, behind the tiny tokenizer (its ids fall
inside the vocabulary), with 448 x 448 images. Prints a row per step as it ends, then one per setting (mean over the
steps after the first), and writes that as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.results import Table

TINY_RUN = ["--init_from", "", "--train_prompts", "48", "--eval_prompts", "2", "--dimensions", "realism", "--progress", "false",
            "--save_every", "1000", "--eval_limit", "2"]


def qwen2_5_vl_3b(device: torch.device):
    """A random-init RewardModel with Qwen2.5-VL-3B's dimensions, built on ``device`` (fp32 master weights)."""
    import transformers

    from zrcore.models import RewardModel, build_tiny_tokenizer
    from zrcore.models.tiny import tiny_image_processor

    tok = build_tiny_tokenizer()
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(vocab_size=151_936, hidden_size=2048, intermediate_size=11_008, num_hidden_layers=36,
                num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=32_768,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
                eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
                bos_token_id=None)
    vision = dict(depth=32, hidden_size=1280, out_hidden_size=2048, intermediate_size=3420, num_heads=16,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31])
    config = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    with torch.device(device):
        model = transformers.Qwen2_5_VLForConditionalGeneration(config)
    return RewardModel(model, tok, tiny_image_processor("qwen2_5_vl", max_side=448))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "3b"], default="tiny")
    parser.add_argument("--out", default="")
    args, rest = parser.parse_known_args(argv)
    from zrcore.training.config import GDSOTeacherConfig, parse_config
    from zrcore.training.gdso import GDSOTeacherTrainer

    extra = (["--image_size", "448", "--sampling.max_reasoning_tokens", "64", "--batch_size", "1", "--candidates", "2"]
             if args.size == "3b" else [])
    cfg = parse_config(GDSOTeacherConfig, TINY_RUN + extra + rest + ["--output_dir", "/tmp/zrcore-train-gpu"])
    from zrcore.training.distributed import resolve_device

    model = qwen2_5_vl_3b(resolve_device(cfg.device)) if args.size == "3b" else None
    trainer = GDSOTeacherTrainer(cfg, model=model)
    if trainer.rt.device.type == "cuda" and trainer.main:
        print(f"allocated after building the trainer: {torch.cuda.memory_allocated() / 2**30:.2f} GiB", flush=True)
    rm = trainer.rm
    sampled = {"tokens": 0, "seconds": 0.0}
    judge = rm.judge

    def timed_judge(*a, **kw):
        t0 = time.perf_counter()
        out = judge(*a, **kw)
        if trainer.rt.device.type == "cuda":
            torch.cuda.synchronize()
        sampled["seconds"] += time.perf_counter() - t0
        sampled["tokens"] += sum(len(r) for r in out.reasoning_ids)
        return out

    rm.judge = timed_judge
    times, peaks = [], []
    from zrcore.training.model_setup import attn_implementation

    attention = attn_implementation(cfg.attn_implementation, trainer.rt.device)
    label = f"{args.size} {cfg.distributed} {cfg.dtype} ckpt={cfg.gradient_checkpointing} {attention}"
    steps_table = Table("setting", "step", "time (s):", "peak (GiB):")
    for step in range(cfg.steps):
        if step == 1:
            sampled.update(tokens=0, seconds=0.0)  # the first step compiles and warms the caches
        if trainer.rt.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        trainer.train_step(step)
        if trainer.rt.device.type == "cuda":
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated() / 2**30)
        times.append(time.perf_counter() - t0)
        if trainer.main:  # each step's row as it ends: a run cut short keeps them
            steps_table.row(label, step, f"{times[-1]:.3f}", f"{peaks[-1]:.2f}" if peaks else "-")
    params = sum(p.numel() for p in rm.parameters())
    if hasattr(next(rm.parameters()), "full_tensor"):
        params *= trainer.rt.world  # local shards
    steady = times[1:] or times
    row = {"size": args.size, "params_billion": params / 1e9, "device": str(trainer.rt.device),
           "gpu": torch.cuda.get_device_name() if trainer.rt.device.type == "cuda" else "cpu",
           "distributed": cfg.distributed, "dtype": cfg.dtype, "gradient_checkpointing": cfg.gradient_checkpointing,
           "steps": cfg.steps, "step_s": sum(steady) / len(steady), "first_step_s": times[0],
           "peak_gib": max(peaks) if peaks else float("nan"),
           "rollout_tokens_per_s": sampled["tokens"] / sampled["seconds"] if sampled["seconds"] else float("nan")}
    if trainer.main:
        Table("size", "params (B):", "mode", "dtype", "ckpt", "attention", "step (s):", "first step (s):", "peak (GiB):",
              "rollout tok/s:").row(
            row["size"], f"{row['params_billion']:.2f}", row["distributed"], row["dtype"],
            row["gradient_checkpointing"], attention, f"{row['step_s']:.3f}", f"{row['first_step_s']:.2f}",
            f"{row['peak_gib']:.2f}", f"{row['rollout_tokens_per_s']:.0f}")
        if args.out:
            Path(args.out).write_text(json.dumps(row, indent=1))
    trainer.rt.teardown()
    return row


if __name__ == "__main__":
    main()
