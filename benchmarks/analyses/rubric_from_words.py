"""Can the rubric be learned from the words of the reasoning? Supervised rubric training with the reasoning fixed.

    python benchmarks/analyses/rubric_from_words.py MODEL --reasoning true      # the true description of each image
    python benchmarks/analyses/rubric_from_words.py MODEL --reasoning own       # the model's own description (greedy)
    python benchmarks/analyses/rubric_from_words.py MODEL --reasoning none      # no reasoning (student mode)

MODEL is a RewardModel folder (e.g. the main job's pretrained start ``runs/pretrained/qwen2_vl-teacher-*/model``).
On the main job's synthetic split (200 training prompts, the 16 held-out ones, 4 candidates, four dimensions) the
model is trained for ``--steps`` steps of 32 records (AdamW, constant lr) on

    L = - (1 / B) sum_i log q(bin(s_i) | image_i, rubric prompt_i, reasoning_i)

where reasoning_i is the true description of the image (``zrcore.data.captions.describe``: what a perfect eye would
write), the model's own greedy description under the rubric prompt (written once by the starting model and kept), or
nothing (``own`` also prints how often each clause of the true description is in the model's, on the held-out
images and on images the pretraining stage was trained on, beside the majority answer). Every ``--eval_every``
steps the held-out PLCC / HPA of E[q] per dimension is printed (the same reasoning kind at evaluation). The gap
between ``true`` and ``own`` is what the pixels -> words stage loses; the gap between ``true`` and ``none`` is what
reading the words gives the rubric stage.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from zrcore.data.captions import PRETRAIN_OFFSET, clauses
from zrcore.data.records import DIMENSIONS
from zrcore.data.synthetic import SyntheticRubric
from zrcore.metrics import hpa, plcc
from zrcore.models import RewardModel
from zrcore.training.datasets import EVAL_OFFSET


def split(n_train: int, n_eval: int, image_size: int) -> tuple[list, list, list]:
    """(training, held-out) records of the main job's synthetic split, and records of the first ``n_eval`` scenes
    the pretraining stage describes (its own training images), each with its true description in meta; every image
    under every dimension's rubric prompt, so that the held-out and the pretraining images compare prompt for
    prompt."""
    gen = SyntheticRubric(seed=0, image_size=image_size)
    out = []
    for start, n in ((0, n_train), (EVAL_OFFSET, n_eval), (PRETRAIN_OFFSET, n_eval)):
        records = gen.records(n, 4, dimensions=DIMENSIONS, start=start)
        for r in records:
            scene, d, _ = gen.candidate(r.meta["index"], r.meta["candidate"])
            r.meta["clauses"] = clauses(scene, d, quoted=True)  # the rubric prompt quotes the prompt
            r.meta["description"] = " ".join(r.meta["clauses"].values())
        out.append(records)
    return out[0], out[1], out[2]


@torch.no_grad()
def own_descriptions(rm, records: list, max_tokens: int, batch: int = 64) -> list[str]:
    """The model's greedy (temperature 1e-4) description of each record under its rubric prompt."""
    texts = []
    for i in range(0, len(records), batch):
        part = records[i:i + batch]
        j = rm.judge([r.prompt for r in part], [r.image for r in part], [r.dimension for r in part], num_samples=1,
                     max_reasoning_tokens=max_tokens, temperature=1e-4, seeds=range(i, i + len(part)))
        texts += j.texts
    return texts


def clause_accuracy(records: list, texts: list[str]) -> str:
    """How often each clause of the true description appears word for word in the written one (over every record:
    each image under each dimension's rubric prompt), beside the share of its most common value (what a model that
    ignores the image would get); then the share of the clauses right under each dimension's prompt, and each
    clause's share under each prompt."""
    rows = [(r.dimension, r.meta["clauses"], t) for r, t in zip(records, texts)]
    parts = []
    for key in rows[0][1]:
        truths = [c[key] for _, c, _ in rows]
        hit = sum(c[key] in t for _, c, t in rows) / len(rows)
        majority = max(truths.count(v) for v in set(truths)) / len(truths)
        parts.append(f"{key} {hit:.2f} (majority {majority:.2f})")
    per_prompt, lines = [], []
    for dim in sorted({d for d, _, _ in rows}):
        mine = [(c, t) for d, c, t in rows if d == dim]
        per_prompt.append(f"{dim} {sum(v in t for c, t in mine for v in c.values()) / sum(len(c) for c, _ in mine):.2f}")
        lines.append(f"\n  under the {dim} prompt: " + ", ".join(
            f"{key} {sum(c[key] in t for c, t in mine) / len(mine):.2f}" for key in rows[0][1]))
    return ", ".join(parts) + "; all clauses under each rubric prompt: " + ", ".join(per_prompt) + "".join(lines)


def distribution(rm, records: list, reasonings: list[str] | None):
    prompts, images, dims = [r.prompt for r in records], [r.image for r in records], [r.dimension for r in records]
    if reasonings is None:
        return rm(*rm.score_inputs(prompts, images, dims)).distribution
    ids, mask, _, img = rm.reasoned_inputs(prompts, images, dims, reasonings)
    return rm(ids, mask, img).distribution


@torch.no_grad()
def evaluate(rm, records: list, reasonings: list[str] | None, batch: int = 64) -> dict[str, tuple[float, float]]:
    """{dimension: (held-out PLCC, HPA)} of E[q], plus "mean"."""
    rm.eval()
    means = torch.cat([distribution(rm, records[i:i + batch], None if reasonings is None else
                                    reasonings[i:i + batch]).mean.float().cpu()
                       for i in range(0, len(records), batch)])
    rm.train()
    out = {}
    for dim in sorted({r.dimension for r in records}):
        idx = [i for i, r in enumerate(records) if r.dimension == dim]
        truth = [records[i].score for i in idx]
        out[dim] = (plcc(means[idx], truth), hpa(means[idx], truth, [records[i].prompt_id for i in idx]))
    out["mean"] = tuple(sum(v[k] for v in out.values()) / len(out) for k in range(2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a RewardModel folder")
    parser.add_argument("--reasoning", choices=["true", "own", "none"], default="true")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval_every", type=int, default=100)
    parser.add_argument("--train_prompts", type=int, default=200)
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--max_reasoning_tokens", type=int, default=0, help="0: the longest description")
    args = parser.parse_args()
    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(args.model)
    if not args.max_reasoning_tokens:
        from zrcore.data.captions import description_token_limit

        args.max_reasoning_tokens = description_token_limit(rm.tokenizer)
    train, test, seen = split(args.train_prompts, 16, args.image_size)
    if args.reasoning == "none":
        train_text = test_text = None
    elif args.reasoning == "true":
        train_text, test_text = [r.meta["description"] for r in train], [r.meta["description"] for r in test]
    else:
        rm.eval()
        train_text = own_descriptions(rm, train, args.max_reasoning_tokens) if args.steps else []
        test_text = own_descriptions(rm, test, args.max_reasoning_tokens)
        print("held-out descriptions, clauses right:", clause_accuracy(test, test_text))
        print("on the pretraining's own images:", clause_accuracy(seen, own_descriptions(rm, seen,
                                                                                          args.max_reasoning_tokens)))
        print("e.g.", repr(test_text[0]), "for", repr(test[0].meta["description"]))
        rm.train()
    opt = torch.optim.AdamW(rm.parameters(), lr=args.lr, weight_decay=0.0)
    order = torch.Generator().manual_seed(0)
    show = lambda step, res: print(f"step {step}: mean PLCC {res['mean'][0]:.3f} HPA {res['mean'][1]:.3f} | " + ", ".join(
        f"{d} {p:.3f}/{h:.3f}" for d, (p, h) in res.items() if d != "mean"), flush=True)
    show(0, evaluate(rm, test, test_text))
    t0 = time.time()
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(train), (32,), generator=order).tolist()
        rows = [train[i] for i in idx]
        dist = distribution(rm, rows, None if train_text is None else [train_text[i] for i in idx])
        loss = F.nll_loss(dist.log_probs, rm.bins.index(torch.tensor([r.score for r in rows])))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            show(step, evaluate(rm, test, test_text))
            print(f"  ({time.time() - t0:.0f} s, loss {loss.item():.3f})", flush=True)


if __name__ == "__main__":
    main()
