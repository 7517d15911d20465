"""Descriptions of rendered synthetic scenes, the pretraining set of the tiny VLMs: the image in words.

A description names what was drawn and how it looks, never how good it is (and short questions ask for one part
of it, answered with that part alone, so that the first answer position learns to read the image):

    "slightly blurred. clean. some clutter. two red circles on a white background. one floats above the
     ground. they overlap. off centre."

the visible defects (blur, noise and clutter levels) first, then the objects (count, colour, shape as rendered,
not as asked), background and position (standing on the ground line or floating, overlapping, centred or off
centre). The defects come first because a clause late in the text is mostly predicted from the words before it:
placed last, the defects were not learned from the pixels and the vision tower lost them (docs/RESULTS.md).
It holds no score, no score label and no sentence of the rubric: the model learns to see before it is taught to
judge.

The images come from ``SyntheticRubric`` at indices from ``PRETRAIN_OFFSET`` on, a range disjoint from the
training prompts (from 0) and the held-out ones (from ``zrcore.training.data.EVAL_OFFSET``).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from zrcore.data.synthetic import NUMBER_WORDS, Defects, Scene, SyntheticRubric

PRETRAIN_OFFSET = 1_000_000
FORMAT_VERSION = 2  # part of the pretraining cache key: bumped whenever the texts change (2: defects first)
INSTRUCTION = "Describe the image."
LEVELS = {
    "blur": ("sharp.", "slightly blurred.", "very blurred."),
    "noise": ("clean.", "slightly noisy.", "very noisy."),
    "clutter": ("no clutter.", "some clutter.", "a lot of clutter."),
}


def clauses(scene: Scene, d: Defects) -> dict[str, str]:
    """The parts of the description of candidate ``d`` rendered for ``scene`` (see the module docstring)."""
    plural = "s" if d.count > 1 else ""
    if d.floating == 0:
        ground = "it stands on the ground." if d.count == 1 else "they stand on the ground."
    else:
        ground = f"{NUMBER_WORDS[d.floating]} {'floats' if d.floating == 1 else 'float'} above the ground."
    return {  # the image-wide defects first: later clauses lean on the earlier words, these only on the pixels
        "blur": LEVELS["blur"][d.blur],
        "noise": LEVELS["noise"][d.noise],
        "clutter": LEVELS["clutter"][d.clutter],
        "objects": f"{NUMBER_WORDS[d.count]} {d.colour} {d.shape}{plural} on a {scene.background} background.",
        "ground": ground + (" they overlap." if d.overlap else ""),
        "centre": "off centre." if d.off_centre else "centred.",
    }


def describe(scene: Scene, d: Defects) -> str:
    """The description of candidate ``d`` rendered for ``scene``: its clauses in order."""
    return " ".join(clauses(scene, d).values())


def questions(scene: Scene, d: Defects) -> list[tuple[str, str]]:
    """(question, answer) pairs about one part of the image each."""
    part = clauses(scene, d)
    plural = "s" if d.count > 1 else ""
    return [("How many objects are there?", f"{NUMBER_WORDS[d.count]}."),
            ("What colour are the objects?", f"{d.colour}."),
            ("What shape are the objects?", f"{d.shape}{plural}."),
            ("What is the background?", f"{scene.background}."),
            ("Where are the objects?", part["ground"]),
            ("Are the objects centred?", part["centre"]),
            ("Is the image sharp?", part["blur"]),
            ("Is the image noisy?", part["noise"]),
            ("Is there clutter?", part["clutter"])]


@dataclass(frozen=True)
class Caption:
    image: Image.Image
    text: str
    index: int  # the scene index in SyntheticRubric
    candidate: int
    instruction: str = INSTRUCTION


def captions(gen: SyntheticRubric, n_scenes: int, candidates: int = 4, start: int = PRETRAIN_OFFSET,
             with_questions: bool = False) -> list[Caption]:
    """Rendered candidates of scenes ``start .. start + n_scenes - 1``: each image's description, then (with
    ``with_questions``) one row per question about it."""
    if start < PRETRAIN_OFFSET:
        raise ValueError(f"start must be >= PRETRAIN_OFFSET ({PRETRAIN_OFFSET}): lower indices are rubric data")
    out = []
    for index in range(start, start + n_scenes):
        for c in range(candidates):
            scene, d, image = gen.candidate(index, c)
            out.append(Caption(image, describe(scene, d), index, c))
            if with_questions:
                out += [Caption(image, a, index, c, q) for q, a in questions(scene, d)]
    return out
