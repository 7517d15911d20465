"""Descriptions of rendered synthetic scenes, the pretraining set of the tiny VLMs: the image in words.

A description names what was drawn and how it looks, never how good it is:

    "two red circles on a white background. one floats above the ground. they overlap. off centre.
     slightly blurred. clean. some clutter."

objects (count, colour, shape as rendered, not as asked), background, position (standing on the ground line or
floating, overlapping, centred or off centre) and the visible defects (blur, noise and clutter levels). It holds no
score, no score label and no sentence of the rubric: the model learns to see before it is taught to judge.

The images come from ``SyntheticRubric`` at indices from ``PRETRAIN_OFFSET`` on, a range disjoint from the
training prompts (from 0) and the held-out ones (from ``zrcore.training.data.EVAL_OFFSET``).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from zrcore.data.synthetic import NUMBER_WORDS, Defects, Scene, SyntheticRubric

PRETRAIN_OFFSET = 1_000_000
INSTRUCTION = "Describe the image."
LEVELS = {
    "blur": ("sharp.", "slightly blurred.", "very blurred."),
    "noise": ("clean.", "slightly noisy.", "very noisy."),
    "clutter": ("no clutter.", "some clutter.", "a lot of clutter."),
}


def describe(scene: Scene, d: Defects) -> str:
    """The description of candidate ``d`` rendered for ``scene`` (see the module docstring)."""
    plural = "s" if d.count > 1 else ""
    parts = [f"{NUMBER_WORDS[d.count]} {d.colour} {d.shape}{plural} on a {scene.background} background."]
    if d.floating == 0:
        parts.append("it stands on the ground." if d.count == 1 else "they stand on the ground.")
    else:
        verb = "floats" if d.floating == 1 else "float"
        parts.append(f"{NUMBER_WORDS[d.floating]} {verb} above the ground.")
    if d.overlap:
        parts.append("they overlap.")
    parts.append("off centre." if d.off_centre else "centred.")
    parts += [LEVELS["blur"][d.blur], LEVELS["noise"][d.noise], LEVELS["clutter"][d.clutter]]
    return " ".join(parts)


@dataclass(frozen=True)
class Caption:
    image: Image.Image
    text: str
    index: int  # the scene index in SyntheticRubric
    candidate: int


def captions(gen: SyntheticRubric, n_scenes: int, candidates: int = 4, start: int = PRETRAIN_OFFSET) -> list[Caption]:
    """Rendered candidates of scenes ``start .. start + n_scenes - 1`` with their descriptions."""
    if start < PRETRAIN_OFFSET:
        raise ValueError(f"start must be >= PRETRAIN_OFFSET ({PRETRAIN_OFFSET}): lower indices are rubric data")
    out = []
    for index in range(start, start + n_scenes):
        for c in range(candidates):
            scene, d, image = gen.candidate(index, c)
            out.append(Caption(image, describe(scene, d), index, c))
    return out
