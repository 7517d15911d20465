"""Does a pretrained tiny VLM compare a prompt with the image? Its yes / no answer to the pretraining's match question
("Does the image show <the scene's prompt>?", ``zrcore.data.captions.match_question``) on held-out images.

    python benchmarks/analyses/match_questions.py MODEL        # e.g. runs/pretrained/qwen2_vl-teacher-*/model

On held-out pretraining images (scenes after the pretraining's own) the model's answer is the first word it puts
more probability on, log pi("yes." | image, question) against log pi("no." | image, question) (the answer's first
token); it prints the accuracy beside the majority answer's share, overall and by what differs from the prompt
(count, colour, shape). A model that only learned the answer's prior stays at the majority share.
"""

from __future__ import annotations

import argparse

import torch

from zrcore.data.captions import PRETRAIN_OFFSET, match_question
from zrcore.data.synthetic import SyntheticRubric
from zrcore.models import RewardModel


@torch.no_grad()
def answer_yes(rm, images: list, questions: list[str], batch: int = 64) -> torch.Tensor:
    """[N] bool: the model puts more probability on "yes." than on "no." as the answer's first token."""
    out = []
    for i in range(0, len(images), batch):
        imgs, qs = images[i:i + batch], questions[i:i + batch]
        first = []
        for answer in ("yes.", "no."):
            ids, mask, comp, img = rm.text_inputs(qs, imgs, [answer] * len(qs))
            logps = rm(ids, mask, img, comp, 1.0, with_distribution=False).logps
            first.append(torch.stack([row[m][0] for row, m in zip(logps, comp)]))
        out.append(first[0] > first[1])
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a RewardModel folder (a pretrained tiny model)")
    parser.add_argument("--scenes", type=int, default=64, help="held-out scenes (x 4 candidates)")
    parser.add_argument("--after", type=int, default=500, help="the pretraining's own scenes (skipped)")
    parser.add_argument("--image_size", type=int, default=112)
    args = parser.parse_args()
    rm = RewardModel.from_pretrained(args.model).eval()
    gen = SyntheticRubric(seed=0, image_size=args.image_size)
    rows = [gen.candidate(PRETRAIN_OFFSET + args.after + i, c) for i in range(args.scenes) for c in range(4)]
    questions = [match_question(scene, d) for scene, d, _ in rows]
    truth = torch.tensor([a == "yes." for _, a in questions])
    said = answer_yes(rm, [img for _, _, img in rows], [q for q, _ in questions])
    right = said == truth
    majority = max(float(truth.float().mean()), 1 - float(truth.float().mean()))
    print(f"match question, {len(rows)} held-out images: accuracy {float(right.float().mean()):.3f} "
          f"(majority answer {majority:.3f}; 'yes' is right for {float(truth.float().mean()):.3f})")
    for what in ("count", "colour", "shape"):
        wrong = torch.tensor([getattr(scene, what) != getattr(d, what) for scene, d, _ in rows])
        if wrong.any():
            print(f"  images whose {what} differs from the prompt ({int(wrong.sum())}): answered no "
                  f"{float((~said[wrong]).float().mean()):.3f}")
    if truth.any():
        print(f"  images as asked ({int(truth.sum())}): answered yes {float(said[truth].float().mean()):.3f}")


if __name__ == "__main__":
    main()
