"""TRL's GRPO loop on the same judge and batch as benchmarks/train_gpu.py: step time and peak memory, for the
side-by-side rows of the GPU suite's ``scale`` step.

    python benchmarks/trl_step.py --size 3b --batch 2x4x4 --tokens 256 --steps 2      # on a GPU, bf16
    python benchmarks/trl_step.py --size tiny --batch 2x2x2 --tokens 4 --steps 1 --cpu # the smoke run

The trainer is ``zrcore.integrations.trl.GDSOTrainer`` with the GRPO settings (``lambda_pw = alpha_pt = alpha_pw =
0``): TRL's ``GRPOTrainer`` loop, generation (transformers) and loss, with the expected score of q as the reward, so
that the model, images, prompts and batch are the ones zrcore's own step sees. Gradient checkpointing is TRL's
(``gradient_checkpointing=True``). No reference policy (beta 0): TRL builds its reference from a model path, and
the judge here is a model object, so the zrcore rows it is set beside run with ``--beta 0`` too.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from benchmarks.results import Table


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "3b"], default="tiny")
    parser.add_argument("--batch", default="2x4x4", help="prompts x candidates x samples per step")
    parser.add_argument("--tokens", type=int, default=256, help="max completion tokens")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args(argv)
    from datasets import Dataset

    from benchmarks.train_gpu import qwen2_5_vl_3b
    from zrcore.data import SyntheticRubric
    from zrcore.integrations.trl import GDSOConfig, GDSOTrainer
    from zrcore.models import build_tiny_reward_model
    from zrcore.training.memory_plan import parse_batch

    p, m, g = parse_batch(args.batch)
    cuda = torch.cuda.is_available() and not args.cpu
    rm = qwen2_5_vl_3b(torch.device("cpu")) if args.size == "3b" else build_tiny_reward_model("qwen2_vl", "teacher")
    image_size = 448 if args.size == "3b" else 56
    recs = SyntheticRubric(seed=0, image_size=image_size).records(p * (args.steps + 1), m, ("realism",))
    data = Dataset.from_dict({"prompt": [r.prompt for r in recs], "image": [r.image for r in recs],
                              "score": [r.score for r in recs], "dimension": [r.dimension for r in recs],
                              "prompt_id": [r.prompt_id for r in recs]})
    with tempfile.TemporaryDirectory() as out:
        cfg = GDSOConfig(out, per_device_train_batch_size=p * m * g, num_generations=g, num_candidates=m,
                         max_completion_length=args.tokens, max_steps=args.steps, learning_rate=1e-6, beta=0.0,
                         lambda_pw=0.0, alpha_pt=0.0, alpha_pw=0.0, use_cpu=not cuda, bf16=cuda,
                         gradient_checkpointing=True, report_to=[], save_strategy="no", logging_steps=1,
                         disable_tqdm=True)
        trainer = GDSOTrainer(rm, args=cfg, train_dataset=data)
        times, peaks = [], []

        class Timer:  # a TrainerCallback without importing transformers' base here
            def __getattr__(self, name):
                return lambda *a, **kw: None

            def on_step_begin(self, *a, **kw):
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                self.t0 = time.perf_counter()

            def on_step_end(self, *a, **kw):
                if cuda:
                    torch.cuda.synchronize()
                    peaks.append(torch.cuda.max_memory_allocated() / 2**30)
                times.append(time.perf_counter() - self.t0)

        trainer.add_callback(Timer())
        trainer.train()
    steady = times[1:] or times
    row = {"size": args.size, "batch": args.batch, "tokens": args.tokens, "step_s": sum(steady) / len(steady),
           "peak_gib": max(peaks) if peaks else float("nan"), "device": "cuda" if cuda else "cpu"}
    Table("trainer", "size", "batch", "tokens", "step (s):", "peak (GiB):").row(
        "TRL GRPOTrainer (GDSOTrainer, GRPO settings)", args.size, args.batch, args.tokens, f"{row['step_s']:.3f}",
        f"{row['peak_gib']:.2f}" if peaks else "-")
    return row


if __name__ == "__main__":
    main()
