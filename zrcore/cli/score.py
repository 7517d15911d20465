"""zr-score: score images with a reward model (tiny random-init or a local checkpoint), writing JSONL.

    zr-score items.jsonl --model runs/risd/model --output scores.jsonl       # rows {"prompt": ..., "image": ...}
    zr-score images/ --prompts prompts.txt --model runs/risd/model          # a folder (sorted), one prompt per line
    zr-score images/ --prompt "a red circle" --model runs/gdso/model --mode teacher --on-error fail

Each output row holds the input fields and, per dimension, the distribution over the bins, its mean and std.
A bad row (missing field, a prompt that is not a string, missing or unreadable image) is reported with its line
number and skipped (``--on-error skip``, the default) or stops the run (``--on-error fail``). Images are decoded
``--batch-size`` at a time while scoring, so memory does not grow with the input. ``--model`` is required: a
``tiny[:ARCH]`` model is random-init and says so. ``--mode teacher`` scores with sampled reasoning, as a teacher
checkpoint (one with ``zrcore_sampling.yaml``) was trained. The output file is written whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch
from PIL import Image

log = logging.getLogger("zrcore")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class BadRow(ValueError):
    pass


def _check_row(row: dict) -> str | None:
    """The problem of a JSONL row, or None."""
    missing = [k for k in ("prompt", "image") if k not in row]
    if missing:
        return f"missing field {missing[0]!r}"
    for key in ("prompt", "image"):
        if not isinstance(row[key], str):
            return f"field {key!r} must be a string, got {row[key]!r}"
    return None


def read_items(args) -> list[dict]:
    """(line, prompt, image) items from a JSONL file or a folder with --prompts / --prompt; a bad row becomes an
    item with its "error". Images are not opened here (they are decoded batch by batch while scoring)."""
    src = Path(args.input)
    items = []
    if src.is_dir():
        images = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if args.prompts:
            prompts = [line.rstrip("\n") for line in Path(args.prompts).read_text().splitlines() if line.strip()]
            if len(prompts) != len(images):
                raise ValueError(f"{len(images)} images in {src} but {len(prompts)} prompts in {args.prompts}")
        elif args.prompt is not None:
            prompts = [args.prompt] * len(images)
        else:
            raise ValueError("a folder input needs --prompts FILE or --prompt TEXT")
        for i, (img, prompt) in enumerate(zip(images, prompts), 1):
            items.append({"line": i, "prompt": prompt, "image": str(img)})
    elif src.is_file():
        for i, line in enumerate(src.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                items.append({"line": i, "error": f"not valid JSON ({err.msg})"})
                continue
            problem = _check_row(row) if isinstance(row, dict) else "each line must be a JSON object"
            if problem:
                items.append({"line": i, "error": problem})
                continue
            image = Path(row["image"])
            row["image"] = str(image if image.is_absolute() else src.parent / image)
            items.append({"line": i, **row})
    else:
        raise ValueError(f"input {src} does not exist")
    return items


def open_image(item: dict) -> Image.Image:
    try:
        with Image.open(item["image"]) as img:
            return img.convert("RGB")
    except FileNotFoundError as err:
        raise BadRow(f"image file not found: {item['image']}") from err
    except (OSError, ValueError) as err:
        raise BadRow(f"cannot read image {item['image']}: {err}") from err


def load_model(spec: str):
    from zrcore.models import load_reward_model

    if spec in ("", "tiny") or spec.startswith("tiny:"):
        log.warning("zr-score: %s is a random-init model: its scores carry no information (use it to try the "
                    "tool; pass a trained checkpoint folder to score)", spec)
    return load_reward_model(spec)


def build_parser() -> argparse.ArgumentParser:
    from zrcore.training.cli_args import make_parser

    parser = make_parser(__doc__.split("\n\n")[0], prog="zr-score")
    parser.add_argument("input", help="a JSONL file of {prompt, image} rows, or a folder of images")
    parser.add_argument("--prompts", help="with a folder: a text file with one prompt per image (sorted names)")
    parser.add_argument("--prompt", help="with a folder: one prompt for every image")
    parser.add_argument("--dimension", default="all", help="a rubric dimension, or 'all' (default)")
    parser.add_argument("--model", required=True, help="a checkpoint folder (a recipe's output_dir/model), or "
                        "tiny[:ARCH] for a random-init model (scores carry no information)")
    parser.add_argument("--mode", choices=["student", "teacher"], default="student",
                        help="student: q read at once; teacher: q averaged over sampled reasoning traces, sampled as "
                             "the checkpoint was trained (its zrcore_sampling.yaml)")
    parser.add_argument("--samples", type=int, default=None,
                        help="teacher mode: traces per image (default: the checkpoint's own, else 2)")
    parser.add_argument("--seed", type=int, default=0, help="teacher mode: the sampling seed")
    parser.add_argument("--output", "-o", default="-", help="output JSONL (default: standard output)")
    parser.add_argument("--batch-size", type=int, default=8, help="images decoded and scored per call")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--on-error", choices=["skip", "fail"], default="skip")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also ZRCORE_DEBUG=1)")
    return parser


def score_batch(model, batch: list[dict], dims: list[str], args, sampling: dict) -> list[dict]:
    """The output rows of one batch of opened images."""
    rows = [{k: v for k, v in it.items() if not k.startswith("_")} for it in batch]
    prompts, images = [it["prompt"] for it in batch], [it["_pil"] for it in batch]
    with torch.no_grad():
        for d in dims:
            if args.mode == "student":
                q = model.score(prompts, images, d)
                probs = q.probs.float()
            else:
                g = sampling["samples"]
                seeds = [args.seed * 1_000_003 + it["line"] * 1009 + k for it in batch for k in range(g)]
                j = model.judge(prompts, images, d, num_samples=g, seeds=seeds,
                                max_reasoning_tokens=sampling["max_reasoning_tokens"],
                                temperature=sampling["temperature"])
                probs = j.distribution.probs.float().mean(1)
            values = model.bins.values.to(probs)
            mean = probs @ values
            std = (probs @ values.square() - mean.square()).clamp_min(0).sqrt()
            for row, p, m, s in zip(rows, probs.tolist(), mean.tolist(), std.tolist()):
                row[d] = {"probs": p, "mean": m, "std": s}
    for row in rows:
        row["bins"] = model.bins.values.tolist()
    return rows


def teacher_sampling(model, args) -> dict:
    """Teacher-mode sampling: ``--samples``, else the checkpoint's own, else 2 traces; its reasoning cap and
    temperature, else the longest description and 1.0."""
    from zrcore.data.captions import description_token_limit

    own = model.sampling or {}
    samples = args.samples if args.samples is not None else own.get("samples", 2)
    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    return {"samples": samples, "temperature": own.get("temperature", 1.0),
            "max_reasoning_tokens": own.get("max_reasoning_tokens") or description_token_limit(model.tokenizer)}


def run(argv: list[str] | None = None) -> int:
    """zr-score's body; errors of the user's input raise (``main`` reports them in one line)."""
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    from tqdm import tqdm

    from zrcore.training.distributed import resolve_device
    from zrcore.training.entry import hf_progress_bars

    hf_progress_bars(not args.no_progress)

    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise ValueError(f"--{err}") from None
    items = read_items(args)  # before the model: a bad input fails fast
    try:
        model = load_model(args.model).to(device).eval()
    except (OSError, ValueError) as err:
        raise ValueError(f"--model {args.model!r}: {' '.join(str(err).split())}") from None
    dims = list(model.dimensions) if args.dimension == "all" else [args.dimension]
    for d in dims:
        if d not in model.dimensions:
            raise ValueError(f"--dimension: unknown dimension {d!r}; the model knows {list(model.dimensions)}")
    if args.mode == "student" and model.sampling:
        log.info("zr-score: %s was trained as a teacher (zrcore_sampling.yaml); --mode teacher scores it with "
                 "sampled reasoning", args.model)
    sampling = teacher_sampling(model, args) if args.mode == "teacher" else {}
    out_path = None if args.output == "-" else Path(args.output)
    tmp = None if out_path is None else out_path.with_name(out_path.name + ".tmp")
    out = sys.stdout if tmp is None else open(tmp, "w")
    scored = errors = 0
    ok = False
    try:
        bar = tqdm(total=len(items), desc="scoring", unit="img", disable=args.no_progress, file=sys.stderr)
        for start in range(0, len(items), args.batch_size):  # decode a batch, score it, write it: bounded memory
            good = []
            for item in items[start:start + args.batch_size]:
                try:
                    if "error" in item:
                        raise BadRow(item["error"])
                    good.append(item | {"_pil": open_image(item)})
                except BadRow as err:
                    errors += 1
                    msg = f"zr-score: {args.input}: row {item['line']}: {err}"
                    if args.on_error == "fail":
                        print(msg, file=sys.stderr)
                        return 2
                    print(msg + " (skipped)", file=sys.stderr)
            if good:
                for row in score_batch(model, good, dims, args, sampling):
                    out.write(json.dumps(row) + "\n")
                scored += len(good)
            bar.update(min(args.batch_size, len(items) - start))
        bar.close()
        ok = scored > 0
    finally:
        if tmp is not None:
            out.close()
            if ok:
                os.replace(tmp, out_path)
            else:
                tmp.unlink(missing_ok=True)
    if not scored:
        print(f"zr-score: {args.input}: no image scored ({errors} bad rows of {len(items)})", file=sys.stderr)
        return 1
    print(f"zr-score: scored {scored} images, {errors} bad rows", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``zr-score`` command: exit 0 when every good row is scored, 1 when none could be, 2 on a bad argument
    or input (one line on stderr; ``--debug`` or ZRCORE_DEBUG=1 shows the traceback)."""
    from zrcore._log import cli_logging
    from zrcore.training.entry import run_main

    cli_logging(stream="stderr")
    return run_main(run, argv, prog="zr-score")


if __name__ == "__main__":
    raise SystemExit(main())
