"""zr-score: score images with a reward model (tiny random-init or a local checkpoint), writing JSONL.

    zr-score items.jsonl --output scores.jsonl                    # rows {"prompt": ..., "image": ...}
    zr-score images/ --prompts prompts.txt --dimension all        # a folder (sorted) and one prompt per line
    zr-score images/ --prompt "a red circle" --model path/to/checkpoint --on-error fail

Each output row holds the input fields and, per dimension, the distribution over the bins, its mean and std.
A bad row (missing field, missing or unreadable image) is reported with its line number and skipped
(``--on-error skip``, the default) or stops the run (``--on-error fail``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class BadRow(ValueError):
    pass


def read_items(args) -> list[dict]:
    """(line, prompt, image) items from a JSONL file or a folder with --prompts / --prompt."""
    src = Path(args.input)
    items = []
    if src.is_dir():
        images = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if args.prompts:
            prompts = [line.rstrip("\n") for line in Path(args.prompts).read_text().splitlines() if line.strip()]
            if len(prompts) != len(images):
                raise SystemExit(f"zr-score: {len(images)} images in {src} but {len(prompts)} prompts in {args.prompts}")
        elif args.prompt is not None:
            prompts = [args.prompt] * len(images)
        else:
            raise SystemExit("zr-score: a folder input needs --prompts FILE or --prompt TEXT")
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
            missing = [k for k in ("prompt", "image") if not isinstance(row, dict) or k not in row]
            if missing:
                items.append({"line": i, "error": f"missing field {missing[0]!r}"})
                continue
            image = Path(row["image"])
            row["image"] = str(image if image.is_absolute() else src.parent / image)
            items.append({"line": i, **row})
    else:
        raise SystemExit(f"zr-score: input {src} does not exist")
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

    return load_reward_model(spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zr-score", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="a JSONL file of {prompt, image} rows, or a folder of images")
    parser.add_argument("--prompts", help="with a folder: a text file with one prompt per image (sorted names)")
    parser.add_argument("--prompt", help="with a folder: one prompt for every image")
    parser.add_argument("--dimension", default="all", help="a rubric dimension, or 'all' (default)")
    parser.add_argument("--model", default="tiny:qwen2_vl", help="tiny[:ARCH] or a local checkpoint folder")
    parser.add_argument("--output", "-o", default="-", help="output JSONL (default: standard output)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--on-error", choices=["skip", "fail"], default="skip")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")

    from tqdm import tqdm

    from zrcore.training.distributed import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as err:
        parser.error(f"--{err}")
    try:
        model = load_model(args.model).to(device).eval()
    except (OSError, ValueError) as err:
        parser.error(f"--model {args.model!r}: {err}")
    dims = list(model.dimensions) if args.dimension == "all" else [args.dimension]
    for d in dims:
        if d not in model.dimensions:
            parser.error(f"unknown dimension {d!r}; the model knows {list(model.dimensions)}")
    items = read_items(args)
    good, errors = [], 0
    for item in items:
        try:
            if "error" in item:
                raise BadRow(item["error"])
            item["_pil"] = open_image(item)
            good.append(item)
        except BadRow as err:
            errors += 1
            msg = f"zr-score: {args.input}: row {item['line']}: {err}"
            if args.on_error == "fail":
                print(msg, file=sys.stderr)
                return 2
            print(msg + " (skipped)", file=sys.stderr)
    if not good:
        print(f"zr-score: {args.input}: no image scored ({errors} bad rows of {len(items)})", file=sys.stderr)
        return 1
    out = sys.stdout if args.output == "-" else open(args.output, "w")
    values = model.bins.values.tolist()
    try:
        bar = tqdm(total=len(good), desc="scoring", unit="img", disable=args.no_progress, file=sys.stderr)
        for start in range(0, len(good), args.batch_size):
            batch = good[start:start + args.batch_size]
            rows = [{k: v for k, v in it.items() if not k.startswith("_")} for it in batch]
            with torch.no_grad():
                for d in dims:
                    q = model.score([it["prompt"] for it in batch], [it["_pil"] for it in batch], d)
                    for row, p, m, s in zip(rows, q.probs.tolist(), q.mean.tolist(), q.std.tolist()):
                        row[d] = {"probs": p, "mean": m, "std": s}
            for row in rows:
                row["bins"] = values
                out.write(json.dumps(row) + "\n")
            bar.update(len(batch))
        bar.close()
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"zr-score: scored {len(good)} images, {errors} bad rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
