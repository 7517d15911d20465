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
3. **Teacher-forced, with another row's image.** The same rows, each shown the image of another row; where the
   prompt's asked colour, the colour the text's objects clause names and the shown image's colour are three
   different colours, which of the three the model rates most likely as the copied colour: whether the copy comes
   from the prompt, from the words written, or from the image.
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


def copy_logps(rm, rows: list, texts: list[str], images: list) -> tuple[torch.Tensor, list[int]]:
    """Teacher-forced log-probabilities [B, L] of ``texts`` as the answers of ``rows``' contexts with ``images``,
    and per row the position of the copied count ("asked for <count> <colour> <shape>"; colour and shape follow)."""
    ids, mask, comp, img = rm.text_inputs([r.instruction for r in rows], rm.image_inputs(images), texts,
                                          [r.system for r in rows])
    logps = rm(ids, mask, img, comp, 1.0, with_distribution=False).logps  # [B, L]: log p of each token
    asked_id = rm.tokenizer.encode(" asked", add_special_tokens=False)[0]
    starts = []
    for b, text in enumerate(texts):
        at = ids[b].tolist().index(asked_id, int(comp[b].nonzero()[0])) + 2
        copied = text.split("asked for ")[1].split(":")[0].split(" ")
        got = [rm.tokenizer.decode([int(t)]).strip() for t in ids[b, at:at + 3]]
        if got != copied:  # one token per word, or the positions below would read other words
            raise ValueError(f"the copy {copied} is not one token per word here: {got}")
        starts.append(at)
    return logps, starts


def _copied(text: str) -> list[str]:
    return text.split("asked for ")[1].split(":")[0].split(" ")


@torch.no_grad()
def forced_copy(rm, gen: SyntheticRubric, start: int, scenes: int) -> str:
    rows = [r for r in captions(gen, scenes, 4, start=start, contexts=True) if "asked for" in r.text]
    right, total = defaultdict(int), defaultdict(int)
    for i in range(0, len(rows), 32):
        part = rows[i:i + 32]
        logps, starts = copy_logps(rm, part, [r.text for r in part], [r.image for r in part])
        for b, (r, at) in enumerate(zip(part, starts)):
            scene, d, _ = gen.candidate(r.index, r.candidate)
            drawn = (NUMBER_WORDS[d.count], d.colour, d.shape)
            copied = _copied(r.text)
            for k, name in enumerate(ATTRS):
                ok = float(logps[b, at + k]) > -0.6931
                differs = not copied[k].startswith(drawn[k])
                for key in (name, f"{name} where drawn differs") if differs else (name,):
                    right[key] += ok
                    total[key] += 1
    return ", ".join(f"{k} {right[k] / total[k]:.2f} ({total[k]})" for k in total)


@torch.no_grad()
def swapped_image_copy(rm, gen: SyntheticRubric, start: int, scenes: int, shift: int = 7) -> dict[str, int]:
    """Check 3: per row (shown the image of the row ``shift`` places on) whose asked, written and shown colours all
    differ, the source of the colour the model rates highest among the three: {"prompt" | "words" | "image": rows}."""
    rows = [r for r in captions(gen, scenes, 4, start=start, contexts=True) if "asked for" in r.text]
    won = {"prompt": 0, "words": 0, "image": 0}
    for i, r in enumerate(rows):
        other = rows[(i + shift) % len(rows)]
        asked = _copied(r.text)[1]
        colours = {"prompt": asked, "words": gen.candidate(r.index, r.candidate)[1].colour,
                   "image": gen.candidate(other.index, other.candidate)[1].colour}
        if len(set(colours.values())) < 3:
            continue
        copy = "asked for " + " ".join(_copied(r.text))
        texts = [r.text.replace(copy, copy.replace(f" {asked} ", f" {c} ")) for c in colours.values()]
        logps, starts = copy_logps(rm, [r] * 3, texts, [other.image] * 3)
        scores = [float(logps[b, at + 1]) for b, at in enumerate(starts)]
        won[list(colours)[max(range(3), key=scores.__getitem__)]] += 1
    return won


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
    print("the copied colour rated most likely, with another row's image, where the prompt's, the words' and the "
          "image's colours differ:", swapped_image_copy(rm, gen, PRETRAIN_OFFSET, args.scenes))


if __name__ == "__main__":
    main()
