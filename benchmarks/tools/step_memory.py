"""Measured peak memory of one GDSO step on the CPU for each memory option, by kind (torch's ``MemTracker`` on real
tensors): what each option of the trainer saves, at tiny scale.

    python -m benchmarks.tools.step_memory                    # the tiny Qwen2.5-VL teacher, 2 x 2 x 4, 24 tokens

Each row adds one option to the row above: the defaults (fp32 master weights, AdamW, the reference in fp32, one
pass), gradient checkpointing, micro-batches of one prompt. The step is step 1 (the optimizer states exist); the peak
is the largest total the tracker saw during it. torchao's optimizers (``adamw_8bit``, ``master_dtype bf16``) compile
their step with ``fullgraph=True``, which cannot run under the tracker's dispatch mode: their states are counted in
``zrcore.training.optim``'s table and the memory plan, not here.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from benchmarks.results import Table

BASE = dict(init_from="", arch="qwen2_5_vl", preset="teacher", device="cpu", dtype="fp32", batch_size=2, candidates=2,
            image_size=56, updates_per_rollout=1, grad_balance_every=0, train_prompts=4, eval_prompts=2, progress=False,
            beta=0.1)
ROWS = [("defaults (fp32 master, AdamW, fp32 reference, one pass)", {}),
        ("+ gradient_checkpointing", {"gradient_checkpointing": True}),
        ("+ micro_batch_tokens (one prompt per micro-batch)", {"gradient_checkpointing": True, "micro_batch_tokens": 1})]



def step_peak(options: dict, samples: int, tokens: int) -> dict[str, float]:
    """MiB by kind at the peak of step 1, and the total."""
    from zrcore.training.config import GDSOTeacherConfig
    from zrcore.training.gdso import GDSOTeacherTrainer
    from zrcore.training.memory_plan import step_tracker

    with tempfile.TemporaryDirectory() as out:
        cfg = GDSOTeacherConfig(output_dir=out, **BASE, **options,
                                sampling={"num_samples": samples, "max_reasoning_tokens": tokens})
        trainer = GDSOTeacherTrainer(cfg)
        trainer.train_step(0)  # optimizer states exist from here on
        tracker = step_tracker()  # torch's MemTracker, read for the global peak of a step
        tracker.track_external(trainer.rm, trainer.ref, trainer.opt)
        with tracker:
            trainer.train_step(1)
        peak = tracker.get_tracker_snapshot("peak")
    by_kind: dict[str, float] = {}
    for device_stats in peak.values():
        for kind, nbytes in device_stats.items():
            name = str(kind).split(".")[-1].lower()
            by_kind[name] = by_kind.get(name, 0.0) + nbytes / 2**20
    return by_kind


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=24)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    table = Table("options", "peak (MiB):", "params:", "grads:", "optimizer:", "activations:", "temporaries:")
    for name, options in ROWS:
        kinds = step_peak(options, args.samples, args.tokens)
        table.row(name, f"{kinds.get('total', 0.0):.1f}", f"{kinds.get('param', 0.0):.1f}",
                  f"{kinds.get('grad', 0.0):.1f}", f"{kinds.get('opt', 0.0):.1f}", f"{kinds.get('act', 0.0):.1f}",
                  f"{kinds.get('temp', 0.0):.1f}")


if __name__ == "__main__":
    main()
