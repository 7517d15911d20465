"""Rollout tokens/s of a judge: the sampling paths side by side on one model, against the bandwidth ceiling.

    torchrun --nproc_per_node 1 benchmarks/rollout_bench.py --size 3b --dtype bf16 --distributed fsdp  # the GPU rows
    python benchmarks/rollout_bench.py --smoke                                                         # CPU, toy sizes

Each row is one ``RewardModel.judge`` call (sampling, then the scoring forward) of P prompts x G = 4 samples, batch
B = 4P sequences, every trace run to ``--tokens`` (end-of-turn suppressed, so every path decodes the same number of
tokens); tokens/s = B x tokens / seconds, the median of ``--repeats`` calls after one warm-up call (which also
compiles). The paths:

- ``before``: HF ``generate`` on the G copies of each prompt (``HFGenerateBackend``: a Python multinomial per row per
  step, the module in its training mode; under FSDP2 every decoder layer gathered at every token);
- ``native dynamic`` / ``native static_compiled``: ``NativeBackend``, each prompt prefilled once and its cache
  expanded to the G samples, batched inverse-CDF sampling, weights gathered once (``unshard_once``); the dynamic
  cache, or HF's static cache with ``torch.compile``; under FSDP2 also ``native dynamic, gather per token``;
- ``transformers generate (TRL-like)``: what TRL's GRPOTrainer does without vLLM: the weights gathered once, eval
  mode, ``generate(do_sample=True)`` on the prompts repeated G times.

The ceiling: decoding reads every decoder weight once per step, so at most B / (weight bytes / bandwidth) tokens/s,
with the bandwidth of a device copy measured here (bytes read + written per second).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from benchmarks.results import Table, note

G = 4


def copy_bandwidth(device: torch.device, mib: int) -> float:
    """Bytes per second of a device-to-device copy of ``mib`` MiB (read and write both counted)."""
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * src.numel() / min(times[1:])


def decoder_bytes(rm, dtype: torch.dtype) -> int:
    """Bytes of the weights a decode step reads: every parameter outside the vision tower, in the compute dtype."""
    vision = {id(p) for p in rm.vision_parameters()}
    size = torch.empty((), dtype=dtype).element_size()
    return sum(p.numel() for p in {id(p): p for p in rm.parameters()}.values() if id(p) not in vision) * size


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images(n: int, side: int):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(side, side, 3, generator=g) * 255).to(torch.uint8).numpy()) for _ in range(n)]


class TRLLikeBackend:
    """``generate(do_sample=True)`` on every row (prompts repeated G times), weights gathered once and eval mode: the
    transformers path of TRL's GRPOTrainer (``unwrap_model_for_generation``, then ``generate``)."""

    @torch.no_grad()
    def sample(self, rm, request):
        from zrcore.models.rollout import SampledTokens, _image_rows

        rows = list(range(len(request.prompt_ids)))
        ids, mask = rm.left_pad(request.prompt_ids)
        with rm.generating(True):
            out = rm.model.generate(**rm.tensor_inputs(ids, mask, _image_rows(request.image_inputs, rows)),
                                    do_sample=True, temperature=request.temperature, top_k=None, top_p=None,
                                    max_new_tokens=request.max_new_tokens, eos_token_id=request.eos_token_id,
                                    pad_token_id=request.pad_token_id, suppress_tokens=request.suppress_ids)
        tokens = out[:, ids.shape[1]:].tolist()
        return SampledTokens(tokens, [[0.0] * len(t) for t in tokens])


def build(size: str, device: torch.device):
    if size == "3b":
        from benchmarks.train_gpu import qwen2_5_vl_3b

        return qwen2_5_vl_3b(device), 448
    from zrcore.models import build_tiny_reward_model

    return build_tiny_reward_model("qwen2_5_vl", "teacher", seed=0), 56


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "3b"], default="tiny")
    parser.add_argument("--batches", default="8,32", help="sequences per judge call (multiples of G = 4)")
    parser.add_argument("--tokens", type=int, default=128, help="sampled tokens per trace")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--distributed", choices=["none", "fsdp"], default="none",
                        help="fsdp: FSDP2 as the trainer shards the policy (launch with torchrun)")
    parser.add_argument("--paths", default="before,dynamic,static_compiled,trl",
                        help="comma-separated: before, dynamic, static_compiled, trl")
    parser.add_argument("--smoke", action="store_true", help="CPU, the tiny judge, batch 4, 6 tokens, 1 repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.batches, args.tokens, args.repeats, args.device = "tiny", "4", 6, 1, "cpu"
    from zrcore.models import RewardModel
    from zrcore.models.rollout import HFGenerateBackend, NativeBackend
    from zrcore.training.distributed import DTYPES, Runtime, resolve_device

    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype]
    rm, side = build(args.size, device)
    rm.suppressed_ids = sorted(set(rm.suppressed_ids) | {rm.end_of_turn_id})  # every trace runs to --tokens
    if args.distributed == "fsdp":
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rt = Runtime("fsdp", dist.get_rank(), dist.get_world_size(), device, dtype)
        rm = rt.prepare(rm, rm.shard_units(), methods=RewardModel.fsdp_methods)
    else:
        rm = rm.to(device, dtype)
    rm.train()  # as the trainer leaves it between updates
    weight_bytes = decoder_bytes(rm, dtype)
    bandwidth = copy_bandwidth(device, 1024 if device.type == "cuda" else 256)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    note(f"\n{args.size} judge on {name}, {args.dtype}, {args.distributed}; decoder weights "
         f"{weight_bytes / 2**30:.2f} GiB, copy bandwidth {bandwidth / 1e9:.1f} GB/s, {args.tokens} tokens per trace, "
         f"G = {G}")
    paths = {"before": ("before (HF generate per row)", lambda: HFGenerateBackend()),
             "dynamic": ("native dynamic", lambda: NativeBackend("dynamic", True)),
             "static_compiled": ("native static_compiled", lambda: NativeBackend("static_compiled", True)),
             "trl": ("transformers generate (TRL-like)", lambda: TRLLikeBackend())}
    chosen = [p for p in args.paths.split(",") if p]
    if args.distributed == "fsdp" and "dynamic" in chosen:
        paths["gather_each"] = ("native dynamic, gather per token", lambda: NativeBackend("dynamic", False))
        chosen.insert(chosen.index("dynamic") + 1, "gather_each")
    table = Table("batch", "path", "tokens/s:", "ceiling tokens/s:", "of ceiling:", "vs before:")
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts = batch // G
        images = _images(prompts, side)
        ceiling = batch * bandwidth / weight_bytes
        before = None
        for key in chosen:
            label, make = paths[key]
            seconds = []
            for rep in range(args.repeats + 1):
                _sync(device)
                t0 = time.perf_counter()
                with torch.no_grad():
                    j = rm.judge(["a photo"] * prompts, images, "realism", num_samples=G, max_reasoning_tokens=args.tokens,
                                 temperature=1.0, seeds=range(rep * batch, (rep + 1) * batch), backend=make())
                _sync(device)
                if rep:
                    seconds.append(time.perf_counter() - t0)
            assert all(len(r) == args.tokens for r in j.reasoning_ids), "a trace ended early"
            rate = batch * args.tokens / statistics.median(seconds)
            before = rate if key == "before" else before
            table.row(batch, label, f"{rate:.1f}", f"{ceiling:.0f}", f"{rate / ceiling:.1%}",
                      f"{rate / before:.2f}x" if before else "")
    if args.distributed == "fsdp":
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
