"""Does a pretrained model compare the prompt with the image? Its verdict on the held-out alignment images, by kind.

    python benchmarks/analyses/verdict.py MODEL

MODEL is a RewardModel folder (e.g. the main job's start ``runs/pretrained/qwen2_vl-teacher-*/model``). Two checks:

1. **Greedy, under the rubric prompt.** The model describes each of the main job's held-out images (48 prompts x 4
   candidates) under the alignment rubric prompt, which quotes the text-to-image prompt. Per kind of mismatch
   (what the true verdict says), the share of images whose objects clause is right, whose copy of the asked objects
   ("asked for two red circles") is right, whose answer per attribute ("count same", "colour differs", ...) is
   right, and whose whole verdict is right.
2. **Teacher-forced, in the pretraining's own format.** On described pretraining rows whose context quotes the
   prompt (``zrcore.data.captions.captions`` with contexts; scenes the pretraining trained on, and later ones it
   never saw), the share of rows where the model gives the true copied word (count, colour, shape) a probability
   above 1/2, overall and where the drawn word differs from the asked one: whether the copy reads the prompt or
   repeats the objects clause just written.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import torch

from zrcore.data.captions import PRETRAIN_OFFSET, captions, clauses, description_token_limit
from zrcore.data.synthetic import NUMBER_WORDS, SyntheticRubric
from zrcore.models import RewardModel
from zrcore.training.datasets import EVAL_OFFSET

ATTRS = ("count", "colour", "shape")


@torch.no_grad()
def greedy_by_kind(rm, gen: SyntheticRubric, prompts: int) -> None:
    records = gen.records(prompts, 4, dimensions=("alignment",), start=EVAL_OFFSET)
    texts = []
    for i in range(0, len(records), 64):
        part = records[i:i + 64]
        texts += rm.judge([r.prompt for r in part], [r.image for r in part], [r.dimension for r in part],
                          num_samples=1, max_reasoning_tokens=description_token_limit(rm.tokenizer),
                          temperature=1e-4, seeds=range(i, i + len(part))).texts
    stats = defaultdict(lambda: [0] * 7)
    for r, text in zip(records, texts):
        scene, d, _ = gen.candidate(r.meta["index"], r.meta["candidate"])
        truth = clauses(scene, d, quoted=True)
        said = truth["verdict"]
        s = stats[said.split(": ", 1)[1]]
        s[0] += 1
        s[1] += truth["objects"] in text
        s[2] += said.split(":")[0] in text
        for k, name in enumerate(ATTRS):
            s[3 + k] += re.search(name + r" (same|differs)", said).group(0) in text
        s[6] += said in text
    print(f"greedy under the alignment rubric prompt, {len(records)} held-out images")
    print(f"{'true verdict':46s} {'n':>3s} objects copy count colour shape whole")
    rows = sorted(stats.items(), key=lambda x: -x[1][0]) + [("all", [sum(c) for c in zip(*stats.values())])]
    for kind, s in rows:
        print(f"{kind:46s} {s[0]:3d} " + "  ".join(f"{x / s[0]:.2f}" for x in s[1:]))


@torch.no_grad()
def forced_copy(rm, gen: SyntheticRubric, start: int, scenes: int) -> str:
    rows = [r for r in captions(gen, scenes, 4, start=start, contexts=True) if "asked for" in r.text]
    asked_id = rm.tokenizer.encode(" asked", add_special_tokens=False)[0]
    right, total = defaultdict(int), defaultdict(int)
    for i in range(0, len(rows), 32):
        part = rows[i:i + 32]
        ids, mask, comp, img = rm.text_inputs([r.instruction for r in part], rm.image_inputs([r.image for r in part]),
                                              [r.text for r in part], [r.system for r in part])
        logps = rm(ids, mask, img, comp, 1.0, with_distribution=False).logps  # [B, L]: log p of each token
        for b, r in enumerate(part):
            at = ids[b].tolist().index(asked_id, int(comp[b].nonzero()[0]))  # "asked for <count> <colour> <shape>"
            scene, d, _ = gen.candidate(r.index, r.candidate)
            drawn = (NUMBER_WORDS[d.count], d.colour, d.shape)
            copied = r.text.split("asked for ")[1].split(":")[0].split(" ")
            for k, name in enumerate(ATTRS):
                ok = float(logps[b, at + 2 + k]) > -0.6931
                differs = not copied[k].startswith(drawn[k])
                for key in (name, f"{name} where drawn differs") if differs else (name,):
                    right[key] += ok
                    total[key] += 1
    return ", ".join(f"{k} {right[k] / total[k]:.2f} ({total[k]})" for k in total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a RewardModel folder")
    parser.add_argument("--prompts", type=int, default=48, help="held-out prompts (x 4 candidates)")
    parser.add_argument("--scenes", type=int, default=60, help="pretraining scenes (x 4) per teacher-forced check")
    parser.add_argument("--unseen_from", type=int, default=5000, help="first scene after PRETRAIN_OFFSET that the "
                                                                       "pretraining did not train on")
    args = parser.parse_args()
    rm = RewardModel.from_pretrained(args.model)
    rm.eval()
    gen = SyntheticRubric(seed=0, image_size=112)
    greedy_by_kind(rm, gen, args.prompts)
    print("teacher-forced copy right (p > 1/2), pretraining scenes it trained on:",
          forced_copy(rm, gen, PRETRAIN_OFFSET, args.scenes))
    print("teacher-forced copy right (p > 1/2), pretraining scenes it never saw:",
          forced_copy(rm, gen, PRETRAIN_OFFSET + args.unseen_from, args.scenes))


if __name__ == "__main__":
    main()
