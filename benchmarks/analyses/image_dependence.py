"""Does a pretrained tiny VLM read each part of its description off the image? Per-clause NLL with the right image
and with another scene's image.

    python benchmarks/analyses/image_dependence.py MODEL        # e.g. runs/pretrained/qwen2_vl-teacher-*/model

On 128 held-out pretraining images (32 scenes x 4 candidates, after the pretraining's own scenes) the description
of each image is scored twice under "Describe the image.": once after its own image, once after the image of the
same candidate of the next scene. Per clause c of the description (``zrcore.data.captions.clauses``) it prints

    NLL_c = - (1 / #images) sum_images sum_{t in c} log pi(y_t | image, instruction, y_<t)

for both. A clause the model reads off the pixels costs much more after the wrong image; one it predicts from the
words alone costs the same (the entropy of its prior).
"""

from __future__ import annotations

import argparse

import torch

from zrcore.data.captions import PRETRAIN_OFFSET, captions, clauses
from zrcore.data.synthetic import SyntheticRubric
from zrcore.models import RewardModel


@torch.no_grad()
def clause_nll(rm, rows: list, gen: SyntheticRubric, shift: int, batch: int = 64) -> dict[str, float]:
    """Mean NLL per clause of each row's description, read after the image ``shift`` rows further on."""
    sums: dict[str, list[float]] = {}
    for i in range(0, len(rows), batch):
        part = rows[i:i + batch]
        images = [r.image for r in part]
        images = images[shift:] + images[:shift]
        ids, mask, comp, img = rm.text_inputs([r.instruction for r in part], images, [r.text for r in part])
        logps = rm(ids, mask, img, comp, 1.0, with_distribution=False).logps
        for b, r in enumerate(part):
            scene, d, _ = gen.candidate(r.index, r.candidate)
            lp = logps[b][comp[b]].tolist()
            start, prefix = 0, ""
            for key, text in clauses(scene, d).items():
                prefix = f"{prefix} {text}".strip()
                end = len(rm.tokenizer.encode(prefix, add_special_tokens=False))
                sums.setdefault(key, []).append(-sum(lp[start:end]))
                start = end
    return {k: sum(v) / len(v) for k, v in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a RewardModel folder")
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--scenes", type=int, default=32)
    parser.add_argument("--start", type=int, default=500, help="first scene, after PRETRAIN_OFFSET")
    args = parser.parse_args()
    rm = RewardModel.from_pretrained(args.model)
    rm.eval()
    gen = SyntheticRubric(seed=0, image_size=args.image_size)
    rows = captions(gen, args.scenes, 4, start=PRETRAIN_OFFSET + args.start)
    right, wrong = clause_nll(rm, rows, gen, 0), clause_nll(rm, rows, gen, 4)
    for key in right:
        print(f"{key:8s} NLL after its own image {right[key]:.3f}, after another scene's image {wrong[key]:.3f}")


if __name__ == "__main__":
    main()
