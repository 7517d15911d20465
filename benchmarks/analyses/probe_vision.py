"""What a tiny VLM carries before it is taught the rubric: ridge probes from its features.

    python benchmarks/analyses/probe_vision.py random                    # a random-init teacher
    python benchmarks/analyses/probe_vision.py runs/pretrain/model        # a pretrained one
    python benchmarks/analyses/probe_vision.py runs/pretrain/model --at score [--mode teacher]

``--at vision`` (default): 600 held-out pretraining images (150 scenes x 4 candidates, indices beyond any
pretraining run's); the vision tower's merged output tokens of each image, flattened, are the features; a ridge
regression (lambda = 1) fitted on the first 450 predicts each defect level on the last 150, and the held-out
correlation is printed.

``--at score``: the last hidden state at the score position of the rubric prompt (student mode, or after one
sampled reasoning with ``--mode teacher``) for the synthetic rubric set of the main job's split (200 training
prompts, 16 held-out ones, 4 candidates): a ridge regression per dimension fitted on the training records predicts
the human score of the held-out ones, and the held-out PLCC and HPA are printed. It says whether the information a
linear score head needs is at the score position before any rubric training.
"""

from __future__ import annotations

import argparse

import torch

from zrcore.data.captions import PRETRAIN_OFFSET, description_token_limit
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


@torch.no_grad()
def score_position_features(rm, records: list, mode: str, batch: int = 64) -> torch.Tensor:
    """The last hidden state at the score position of each record's rubric prompt [N, H]."""
    out = []
    for i in range(0, len(records), batch):
        part = records[i:i + batch]
        prompts, images, dims = [r.prompt for r in part], [r.image for r in part], [r.dimension for r in part]
        if mode == "teacher":
            j = rm.judge(prompts, images, dims, num_samples=1, max_reasoning_tokens=description_token_limit(rm.tokenizer),
                         seeds=range(i, i + len(part)))
            ids, mask, img = j.sequences, j.attention_mask, j.image_inputs
        else:
            ids, mask, img = rm.score_inputs(prompts, images, dims)
        out.append(rm.model.model(**rm.tensor_inputs(ids, mask, img), use_cache=False).last_hidden_state[:, -1])
    return torch.cat(out).double()


def ridge(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor) -> torch.Tensor:
    """Predictions on x_test of the ridge regression (lambda = 1, with a bias) fitted on (x_train, y_train)."""
    bias = lambda x: torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    a, b = bias(x_train), bias(x_test)
    w = torch.linalg.solve(a.T @ a + torch.eye(a.shape[1], dtype=a.dtype), a.T @ y_train)
    return b @ w


def probe_score_position(rm, mode: str) -> None:
    from zrcore.metrics import hpa, plcc
    from zrcore.training.config import TrainConfig
    from zrcore.training.datasets import build_data

    groups, evals = build_data(TrainConfig(train_prompts=200, init_from=""))
    train = [r for g in groups for r in g.records]
    x_train, x_test = score_position_features(rm, train, mode), score_position_features(rm, evals, mode)
    for dim in sorted({r.dimension for r in evals}):
        tr = [i for i, r in enumerate(train) if r.dimension == dim]
        te = [i for i, r in enumerate(evals) if r.dimension == dim]
        y = torch.tensor([train[i].score for i in tr], dtype=torch.float64)
        pred = ridge(x_train[tr], y, x_test[te])
        truth = [evals[i].score for i in te]
        print(f"{dim}: held-out PLCC {plcc(pred, truth):.3f}, HPA "
              f"{hpa(pred, truth, [evals[i].prompt_id for i in te]):.3f} (ridge probe at the score position)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a RewardModel folder, or 'random' for a random-init tiny teacher")
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--at", choices=["vision", "score"], default="vision")
    parser.add_argument("--mode", choices=["student", "teacher"], default="student")
    args = parser.parse_args()
    rm = build_tiny_reward_model("qwen2_vl", "teacher") if args.model == "random" else RewardModel.from_pretrained(
        args.model)
    rm.eval()
    torch.manual_seed(0)
    if args.at == "score":
        probe_score_position(rm, args.mode)
        return
    gen = SyntheticRubric(seed=0, image_size=args.image_size)
    rows = [gen.candidate(PRETRAIN_OFFSET + 2000 + i, c) for i in range(150) for c in range(4)]
    x = features(rm, [image for _, _, image in rows])
    train, test = slice(0, 450), slice(450, 600)
    for name, level in TARGETS.items():
        y = torch.tensor([float(level(d)) for _, d, _ in rows], dtype=torch.float64)
        corr = torch.corrcoef(torch.stack([ridge(x[train], y[train], x[test]), y[test]]))[0, 1]
        print(f"{name}: held-out correlation of the ridge probe {float(corr):.2f}")


if __name__ == "__main__":
    main()
