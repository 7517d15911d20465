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
judge. ``attributes`` gives the same content as classes (blur level, count, colour...), for the vision tower's
warm-up.

With ``contexts`` the request sits inside a random surrounding text (``context``: a system turn, neutral
"Word: words" lines, the scene's own text-to-image prompt), so that the description follows the image whatever the
user turn says. The rubric prompt of a reward model is such a text: the pretrained teacher, prompted with it,
writes a description of the image as its reasoning (docs/RESULTS.md).

The images come from ``SyntheticRubric`` at indices from ``PRETRAIN_OFFSET`` on, a range disjoint from the
training prompts (from 0) and the held-out ones (from ``zrcore.training.datasets.EVAL_OFFSET``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from zrcore.data.synthetic import BACKGROUNDS, COLOURS, NUMBER_WORDS, SHAPES, Defects, Scene, SyntheticRubric

PRETRAIN_OFFSET = 1_000_000
FORMAT_VERSION = 4  # part of the pretraining cache key: bumped whenever the texts or the images change (2: defects
# first, 3: optional surrounding context, 4: visible clutter and overlap, the prompt-match question)
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


# what the vision tower's warm-up classifies (zrcore.training.vision_warmup): attribute -> number of classes
ATTRIBUTES = {"blur": 3, "noise": 3, "clutter": 3, "count": len(NUMBER_WORDS), "floating": 3, "overlap": 2,
              "off_centre": 2, "colour": len(COLOURS), "shape": len(SHAPES), "background": len(BACKGROUNDS)}


def attributes(scene: Scene, d: Defects) -> tuple[int, ...]:
    """The class of each of ``ATTRIBUTES`` in candidate ``d`` rendered for ``scene``: what its description names,
    as labels (no score, no judgement)."""
    values = {"blur": d.blur, "noise": d.noise, "clutter": d.clutter, "count": d.count, "floating": d.floating,
              "overlap": int(d.overlap), "off_centre": int(d.off_centre), "colour": list(COLOURS).index(d.colour),
              "shape": SHAPES.index(d.shape), "background": list(BACKGROUNDS).index(scene.background)}
    return tuple(values[k] for k in ATTRIBUTES)


def describe(scene: Scene, d: Defects) -> str:
    """The description of candidate ``d`` rendered for ``scene``: its clauses in order."""
    return " ".join(clauses(scene, d).values())


def match_question(scene: Scene, d: Defects) -> tuple[str, str]:
    """Does the image show what was asked? The question quotes the scene's text-to-image prompt; the answer says
    what is drawn: "yes." when count, colour and shape are as asked, else "no." and the objects as drawn. It teaches
    the comparison of a prompt with the image that alignment needs, with no score and no rubric word."""
    asked = (scene.count, scene.colour, scene.shape) == (d.count, d.colour, d.shape)
    return f"Does the image show {scene.prompt}?", "yes." if asked else "no. " + clauses(scene, d)["objects"]


def description_token_limit(tokenizer) -> int:
    """The most tokens any description of ``describe`` can take with ``tokenizer``, plus one for the end of the turn:
    the reasoning cap at which no description is cut. Byte-level BPE never merges across the spaces between
    clauses, so a description's length is the sum of its clauses' (each after its space); the clauses that depend on
    the count (objects, ground) are maximised jointly over every count, floating number and overlap."""
    def longest(texts) -> int:
        return max(len(tokenizer.encode(" " + t, add_special_tokens=False)) for t in texts)

    fixed = sum(longest(options) for options in LEVELS.values()) + longest(("off centre.", "centred."))
    per_count = []
    for count in range(1, len(NUMBER_WORDS)):
        objects = [clauses(Scene(count, shape, colour, bg), Defects(colour, shape, count))["objects"]
                   for shape in SHAPES for colour in COLOURS for bg in BACKGROUNDS]
        grounds = [clauses(Scene(count, SHAPES[0], "red", "white"),
                           Defects("red", SHAPES[0], count, floating=f, overlap=o))["ground"]
                   for f in range(min(count, 2) + 1) for o in ((False, True) if count > 1 else (False,))]
        per_count.append(longest(objects) + longest(grounds))
    return fixed + max(per_count) + 1


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
            ("Is there clutter?", part["clutter"]),
            match_question(scene, d)]


@dataclass(frozen=True)
class Caption:
    image: Image.Image
    text: str
    index: int  # the scene index in SyntheticRubric
    candidate: int
    instruction: str = INSTRUCTION
    system: str = ""  # a system turn ("" = none)
    attributes: tuple[int, ...] = ()  # the image's classes of ATTRIBUTES


# neutral words of the surrounding context (no judging word, no number): the text a user may put around the image
CONTEXT_WORDS = ("the a an of on in with and or is are this that here there picture photo scene drawing image "
                 "object objects thing things shape shapes colour colours line lines left right top bottom middle "
                 "small large look see show shows drawn made please what where which text word words note "
                 "prompt asked request user page card example task answer given below above next").split()


def context(gen: SyntheticRubric, scene: Scene, index: int, candidate: int) -> tuple[str, str]:
    """(system, instruction): a random context around the request to describe, so that a description follows the
    image whatever text surrounds it: a system turn half of the time, zero to four lines "Word: words..." (one of
    them the scene's text-to-image prompt half of the time) before the instruction, which itself is present half
    of the time. Drawn from the row's own generator: deterministic given (seed, index, candidate)."""
    g = gen._gen(5, index, candidate)
    rand = lambda n: int(torch.randint(n, (1,), generator=g))
    words = lambda lo, hi: " ".join(CONTEXT_WORDS[rand(len(CONTEXT_WORDS))] for _ in range(lo + rand(hi - lo + 1)))
    system = (words(4, 14).capitalize() + ".") if rand(2) else ""
    lines = [words(1, 1).capitalize() + ": " + words(2, 16) for _ in range(rand(5))]
    if rand(2):
        lines.insert(rand(len(lines) + 1), f"Prompt: {scene.prompt}")
    if rand(2) or not lines:
        lines.append(INSTRUCTION)
    return system, "\n".join(lines)


def captions(gen: SyntheticRubric, n_scenes: int, candidates: int = 4, start: int = PRETRAIN_OFFSET,
             with_questions: bool = False, contexts: bool = False, match_questions: bool = False) -> list[Caption]:
    """Rendered candidates of scenes ``start .. start + n_scenes - 1``: each image's description (with
    ``contexts``: asked in a random surrounding text, ``context``), then (with ``with_questions``) one row per
    question about it, or (with ``match_questions`` alone) one row asking whether it shows the scene's prompt."""
    if start < PRETRAIN_OFFSET:
        raise ValueError(f"start must be >= PRETRAIN_OFFSET ({PRETRAIN_OFFSET}): lower indices are rubric data")
    out = []
    for index in range(start, start + n_scenes):
        for c in range(candidates):
            scene, d, image = gen.candidate(index, c)
            system, instruction = context(gen, scene, index, c) if contexts else ("", INSTRUCTION)
            labels = attributes(scene, d)
            out.append(Caption(image, describe(scene, d), index, c, instruction, system, labels))
            if with_questions:
                out += [Caption(image, a, index, c, q, attributes=labels) for q, a in questions(scene, d)]
            elif match_questions:
                q, a = match_question(scene, d)
                out.append(Caption(image, a, index, c, q, attributes=labels))
    return out
