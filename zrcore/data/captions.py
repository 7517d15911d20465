"""Descriptions of rendered synthetic scenes, the pretraining set of the tiny VLMs: the image in words.

A description names what was drawn and how it looks, never how good it is (and short questions ask for one part
of it, answered with that part alone, so that the first answer position learns to read the image):

    "slightly blurred. clean. some clutter. off centre. one floats. two overlap. two red circles on a gray
     background. asked for three red circles: count differs, colour same, shape same. they blend into the
     background."

the visible defects (blur, noise and clutter levels) first, then the position (centred or off centre, how many
objects float above the ground line, whether two overlap), then the objects (count, colour, shape as rendered, not
as asked) and background, and, when the surrounding text quotes the scene's text-to-image prompt, a verdict on it:
the asked objects copied, then "same" or "differs" for each of count, colour and shape; last,
whether the objects blend into the background (``zrcore.data.synthetic.blends``: low luma contrast). Everything the
pixels alone decide comes first, because a clause late in the text is mostly predicted from the words before it:
placed last, defects and positions were not learned from the pixels (docs/RESULTS.md). The verdict follows the
objects clause on purpose: it compares the quoted prompt with the words just written, each asked word at a fixed
distance from its drawn one, the way a VLM learns to check an image against its caption.
It holds no score, no score label and no sentence of the rubric: the model learns to see before it is taught to
judge. ``attributes`` gives the same content as classes (blur level, count, colour...), for the vision tower's
warm-up.

With ``contexts`` the request sits inside a random surrounding text (``context``: a system turn, lines of neutral
words and of the descriptions' own words, the scene's own text-to-image prompt three times in four), so that the
description follows the image whatever the user turn says, even when it names a defect, a colour or a shape. The
rubric prompt of a reward model is such a text: the pretrained teacher, prompted with it, writes a description of
the image as its reasoning (docs/RESULTS.md).

The images come from ``SyntheticRubric`` at indices from ``PRETRAIN_OFFSET`` on, a range disjoint from the
training prompts (from 0) and the held-out ones (from ``zrcore.training.datasets.EVAL_OFFSET``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from zrcore.data.synthetic import (
    BACKGROUNDS,
    COLOURS,
    NUMBER_WORDS,
    SHAPES,
    Defects,
    Scene,
    SyntheticRubric,
    blends,
)

PRETRAIN_OFFSET = 1_000_000
FORMAT_VERSION = 7  # part of the pretraining cache key: bumped whenever the texts or the images change (2: defects
# first, 3: optional surrounding context, 4: visible clutter and overlap, the prompt-match question, 5: positions
# before the objects, the blend clause, the verdict on a quoted prompt, clutter of 0 / 3 / 8 marks, the tokenizer;
# 6: contexts with the descriptions' words and plain sentences, the prompt quoted three times in four; 7: the
# verdict per attribute)
INSTRUCTION = "Describe the image."
LEVELS = {
    "blur": ("sharp.", "slightly blurred.", "very blurred."),
    "noise": ("clean.", "slightly noisy.", "very noisy."),
    "clutter": ("no clutter.", "some clutter.", "a lot of clutter."),
}


def verdict(scene: Scene, d: Defects) -> str:
    """Whether candidate ``d`` shows ``scene``'s prompt: the asked objects copied from the prompt, then each of
    count, colour and shape, in that order, with "same" or "differs":
    "asked for two red circles: count differs, colour same, shape same." The copy puts each asked word at a fixed
    distance from the drawn word of the objects clause just before it, and each comparison is named before its
    answer, so that every answer compares one pair of words."""
    plural = "s" if scene.count > 1 else ""
    asked = f"asked for {NUMBER_WORDS[scene.count]} {scene.colour} {scene.shape}{plural}: "
    return asked + ", ".join(f"{name} {'same' if a == b else 'differs'}" for name, a, b in (
        ("count", scene.count, d.count), ("colour", scene.colour, d.colour), ("shape", scene.shape, d.shape))) + "."


def clauses(scene: Scene, d: Defects, quoted: bool = False) -> dict[str, str]:
    """The parts of the description of candidate ``d`` rendered for ``scene`` (see the module docstring); with
    ``quoted`` (the surrounding text quotes the scene's prompt) the verdict too."""
    plural = "s" if d.count > 1 else ""
    floating = "nothing floats." if d.floating == 0 else \
        f"{NUMBER_WORDS[d.floating]} {'floats' if d.floating == 1 else 'float'}."
    they = "they blend" if d.count > 1 else "it blends"
    out = {  # what the pixels alone decide first: later clauses lean on the earlier words
        "blur": LEVELS["blur"][d.blur],
        "noise": LEVELS["noise"][d.noise],
        "clutter": LEVELS["clutter"][d.clutter],
        "centre": "off centre." if d.off_centre else "centred.",
        "ground": floating + (" two overlap." if d.overlap else ""),
        "objects": f"{NUMBER_WORDS[d.count]} {d.colour} {d.shape}{plural} on a {scene.background} background.",
    }
    if quoted:  # right after the objects clause it compares with
        out["verdict"] = verdict(scene, d)
    out["blend"] = f"{they} into the background." if blends(d.colour, scene.background) else \
        ("they stand out." if d.count > 1 else "it stands out.")
    return out


# what the vision tower's warm-up classifies (zrcore.training.vision_warmup): attribute -> number of classes
ATTRIBUTES = {"blur": 3, "noise": 3, "clutter": 3, "count": len(NUMBER_WORDS), "floating": 3, "overlap": 2,
              "off_centre": 2, "colour": len(COLOURS), "shape": len(SHAPES), "background": len(BACKGROUNDS),
              "blend": 2}


def attributes(scene: Scene, d: Defects) -> tuple[int, ...]:
    """The class of each of ``ATTRIBUTES`` in candidate ``d`` rendered for ``scene``: what its description names,
    as labels (no score, no judgement)."""
    values = {"blur": d.blur, "noise": d.noise, "clutter": d.clutter, "count": d.count, "floating": d.floating,
              "overlap": int(d.overlap), "off_centre": int(d.off_centre), "colour": list(COLOURS).index(d.colour),
              "shape": SHAPES.index(d.shape), "background": list(BACKGROUNDS).index(scene.background),
              "blend": int(blends(d.colour, scene.background))}
    return tuple(values[k] for k in ATTRIBUTES)


def describe(scene: Scene, d: Defects, quoted: bool = False) -> str:
    """The description of candidate ``d`` rendered for ``scene``: its clauses in order (with ``quoted``, the
    verdict on the quoted prompt right after the objects clause)."""
    return " ".join(clauses(scene, d, quoted).values())


def match_question(scene: Scene, d: Defects) -> tuple[str, str]:
    """Does the image show what was asked? The question quotes the scene's text-to-image prompt; the answer says
    what is drawn: "yes." when count, colour and shape are as asked, else "no." and the objects as drawn. It teaches
    the comparison of a prompt with the image that alignment needs, with no score and no rubric word."""
    asked = (scene.count, scene.colour, scene.shape) == (d.count, d.colour, d.shape)
    return f"Does the image show {scene.prompt}?", "yes." if asked else "no. " + clauses(scene, d)["objects"]


def description_token_limit(tokenizer) -> int:
    """The most tokens any description of ``describe`` can take with ``tokenizer``, verdict included (its longest:
    every attribute differs), plus one for the end of the turn: the reasoning cap at which no description is cut.
    Byte-level BPE never merges across spaces, so a description's length is the sum of its clauses' (the first one
    opens the turn, each other one follows its space); each clause is maximised over every option it has (the
    objects and blend clauses jointly: both depend on the count, colour and background), an upper bound that every
    option combination meets or stays under."""
    def longest(texts, space: bool = True) -> int:
        return max(len(tokenizer.encode(" " * space + t, add_special_tokens=False)) for t in texts)

    options: dict[str, set] = {}
    for count in range(1, len(NUMBER_WORDS)):
        for shape in SHAPES:
            for colour in COLOURS:
                for bg in BACKGROUNDS:
                    for floating in range(min(count, 2) + 1):
                        for overlap in (False, True) if count > 1 else (False,):
                            scene = Scene(count, shape, colour, bg)
                            d = Defects(colour, shape, count, floating=floating, overlap=overlap)
                            part = clauses(scene, d)
                            for key, text in part.items():
                                joint = key in ("objects", "blend")
                                options.setdefault("objects+blend" if joint else key, set()).add(
                                    part["objects"] + " " + part["blend"] if joint else text)
    for key, levels in LEVELS.items():
        options[key] = set(levels)
    options["centre"] = {"centred.", "off centre."}
    other = lambda seq, x, differs: [y for y in seq if (y != x) == differs][0]
    verdicts = [verdict(Scene(count, shape, colour, "white"),
                        Defects(other(COLOURS, colour, dc), other(SHAPES, shape, ds),
                                other(range(1, len(NUMBER_WORDS)), count, dn)))
                for count in range(1, len(NUMBER_WORDS)) for shape in SHAPES for colour in COLOURS
                for dn in (False, True) for dc in (False, True) for ds in (False, True)]
    first = next(iter(clauses(Scene(1, SHAPES[0], "red", "white"), Defects("red", SHAPES[0], 1))))
    return (sum(longest(texts, space=key != first) for key, texts in options.items()) + longest(verdicts)
            + 1)


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
# the descriptions' own words, also drawn into the context, so that a description does not change when the text
# around it happens to name a defect, a position, a colour or a shape (a rubric prompt does)
DESCRIPTION_WORDS = ("sharp slightly very blurred noisy clean some lot clutter centred off centre nothing float floats "
                     "overlap blend blends stand stands out into background "
                     + " ".join(COLOURS) + " " + " ".join(SHAPES) + " " + " ".join(NUMBER_WORDS[1:])).split()
QUOTED_SHARE = 0.75  # how often the context quotes the scene's prompt (and the description has a verdict on it)


def context(gen: SyntheticRubric, scene: Scene, index: int, candidate: int) -> tuple[str, str, bool]:
    """(system, instruction, whether it quotes the scene's prompt): a random context around the request to
    describe, so that a description follows the image whatever text surrounds it: a system turn half of the time,
    zero to four lines, each "Word: words..." or a plain sentence, of neutral words and the descriptions' own words
    (``CONTEXT_WORDS``, ``DESCRIPTION_WORDS``), then, ``QUOTED_SHARE`` of the time, the scene's text-to-image prompt
    as a "Prompt: ..." line at a random place among them, and last the instruction half of the time (else the last
    line is whatever came before). Drawn from the row's own generator: deterministic given (seed, index,
    candidate)."""
    g = gen._gen(5, index, candidate)
    rand = lambda n: int(torch.randint(n, (1,), generator=g))
    vocab = CONTEXT_WORDS + DESCRIPTION_WORDS
    words = lambda lo, hi: " ".join(vocab[rand(len(vocab))] for _ in range(lo + rand(hi - lo + 1)))
    line = lambda: (words(1, 1).capitalize() + ": " + words(2, 16)) if rand(2) else (words(3, 14).capitalize() + ".")
    system = (words(4, 14).capitalize() + ".") if rand(2) else ""
    lines = [line() for _ in range(rand(5))]
    quoted = rand(1000) < 1000 * QUOTED_SHARE
    if quoted:
        lines.insert(rand(len(lines) + 1), f"Prompt: {scene.prompt}")
    if rand(2) or not lines:
        lines.append(INSTRUCTION)
    return system, "\n".join(lines), quoted


def captions(gen: SyntheticRubric, n_scenes: int, candidates: int = 4, start: int = PRETRAIN_OFFSET,
             with_questions: bool = False, contexts: bool = False, match_questions: bool = False) -> list[Caption]:
    """Rendered candidates of scenes ``start .. start + n_scenes - 1``: each image's description (with
    ``contexts``: asked in a random surrounding text, ``context``, and ending with the verdict where that text
    quotes the scene's prompt), then (with ``with_questions``) one row per
    question about it, or (with ``match_questions`` alone) one row asking whether it shows the scene's prompt."""
    if start < PRETRAIN_OFFSET:
        raise ValueError(f"start must be >= PRETRAIN_OFFSET ({PRETRAIN_OFFSET}): lower indices are rubric data")
    out = []
    for index in range(start, start + n_scenes):
        for c in range(candidates):
            scene, d, image = gen.candidate(index, c)
            system, instruction, quoted = context(gen, scene, index, c) if contexts else ("", INSTRUCTION, False)
            labels = attributes(scene, d)
            out.append(Caption(image, describe(scene, d, quoted), index, c, instruction, system, labels))
            if with_questions:
                out += [Caption(image, a, index, c, q, attributes=labels) for q, a in questions(scene, d)]
            elif match_questions:
                q, a = match_question(scene, d)
                out.append(Caption(image, a, index, c, q, attributes=labels))
    return out
