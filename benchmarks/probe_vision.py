"""What a tiny VLM's vision tower carries: ridge probes from its output tokens to the rendered defects.

    python benchmarks/probe_vision.py random                    # a random-init teacher
    python benchmarks/probe_vision.py runs/pretrain/model        # a pretrained one

600 held-out pretraining images (150 scenes x 4 candidates, indices beyond any pretraining run's); the vision
tower's merged output tokens of each image, flattened, are the features; a ridge regression (lambda = 1) fitted on
the first 450 predicts each defect level on the last 150, and the held-out correlation is printed.
"""

from __future__ import annotations

import argparse

import torch

from zrcore.data.captions import PRETRAIN_OFFSET
from zrcore.data.synthetic import SyntheticRubric
from zrcore.models import RewardModel, build_tiny_reward_model

TARGETS = {"noise": lambda d: d.noise, "blur": lambda d: d.blur, "clutter": lambda d: d.clutter,
           "count": lambda d: d.count, "floating": lambda d: d.floating}


@torch.no_grad()
def features(rm, images: list, batch: int = 100) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch):
        part = images[i:i + batch]
        img = rm.image_inputs(part)
        emb = rm.model.model.visual(img["pixel_values"], grid_thw=img["image_grid_thw"])
        emb = emb.pooler_output if getattr(emb, "pooler_output", None) is not None else emb
        out.append(emb.reshape(len(part), -1))
    return torch.cat(out).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a RewardModel folder, or 'random' for a random-init tiny teacher")
    parser.add_argument("--image_size", type=int, default=112)
    args = parser.parse_args()
    rm = build_tiny_reward_model("qwen2_vl", "teacher") if args.model == "random" else RewardModel.from_pretrained(
        args.model)
    rm.eval()
    gen = SyntheticRubric(seed=0, image_size=args.image_size)
    rows = [gen.candidate(PRETRAIN_OFFSET + 2000 + i, c) for i in range(150) for c in range(4)]
    x = features(rm, [image for _, _, image in rows])
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    train, test = slice(0, 450), slice(450, 600)
    gram = x[train].T @ x[train] + torch.eye(x.shape[1], dtype=x.dtype)
    for name, level in TARGETS.items():
        y = torch.tensor([float(level(d)) for _, d, _ in rows], dtype=torch.float64)
        w = torch.linalg.solve(gram, x[train].T @ y[train])
        corr = torch.corrcoef(torch.stack([x[test] @ w, y[test]]))[0, 1]
        print(f"{name}: held-out correlation of the ridge probe {float(corr):.2f}")


if __name__ == "__main__":
    main()
