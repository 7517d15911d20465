"""A synthetic rubric set rendered with Pillow, whose true score per dimension is known.

Each prompt asks for ``count`` ``colour`` ``shape``(s) on a ``background``; each candidate image is rendered with
defects drawn at random, and its true score per dimension follows from them on the half-point scale:

- alignment:    5 - 1.5 [wrong colour] - 1.5 [wrong shape] - 1.0 |count - asked|   (at least 1)
- realism:      5 - 1.0 blur_level - 1.0 noise_level                               (levels 0..2 each)
- aesthetics:   5 - 1.0 clutter_level - 1.5 [objects blend into the background] - 0.5 [off-centre]
- plausibility: 5 - 1.5 floating_objects - 1.0 [objects overlap]

The objects blend into the background (``CLASH``) when the luminance of their colour and of the background differ by
less than ``BLEND_CONTRAST`` levels (Rec. 601 luma, Y = 0.299 R + 0.587 G + 0.114 B): a visible property, not a
lookup. Simulated raters add Gaussian noise (std ``rater_noise``) to the true score, round to the half-point grid and
clip to the scale, each dimension's draws seeded by the dimension's name (``DIMENSIONS``), so that a record's
labels do not depend on which other dimensions a run asks for; the record's score aggregates them with
``zrcore.metrics.aggregate_ratings`` (drop the highest and lowest, average). Everything is deterministic given the seed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from PIL import Image, ImageDraw, ImageFilter

from zrcore.bins import ScoreBins
from zrcore.data.records import DIMENSIONS, Group, Record
from zrcore.metrics import aggregate_ratings

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40),
           "purple": (140, 60, 170), "orange": (240, 140, 30)}
BACKGROUNDS = {"white": (245, 245, 245), "gray": (128, 128, 128), "black": (20, 20, 20)}
BLEND_CONTRAST = 50  # luma levels: objects closer than this to the background's luma blend into it


def luma(rgb: tuple[int, int, int]) -> float:
    """Rec. 601 luma of an RGB colour: 0.299 R + 0.587 G + 0.114 B."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def blends(colour: str, background: str) -> bool:
    """Whether objects of ``colour`` blend into ``background``: luma difference below ``BLEND_CONTRAST``."""
    return abs(luma(COLOURS[colour]) - luma(BACKGROUNDS[background])) < BLEND_CONTRAST


# the low-contrast pairs (object colour, background): five of the 18, all on gray (green 9 levels from it, orange 29,
# purple 32, red 34, blue 44; yellow 63)
CLASH = frozenset((c, b) for c in COLOURS for b in BACKGROUNDS if blends(c, b))
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")


@dataclass(frozen=True)
class Scene:
    count: int
    shape: str
    colour: str
    background: str

    @property
    def prompt(self) -> str:
        plural = "s" if self.count > 1 else ""
        return f"{NUMBER_WORDS[self.count]} {self.colour} {self.shape}{plural} on a {self.background} background"


@dataclass(frozen=True)
class Defects:
    colour: str
    shape: str
    count: int
    blur: int = 0
    noise: int = 0
    clutter: int = 0
    off_centre: bool = False
    floating: int = 0
    overlap: bool = False


def _snap(x: float) -> float:
    return min(5.0, max(1.0, round(x * 2) / 2))


def true_scores(scene: Scene, d: Defects) -> dict[str, float]:
    """The rubric of the module docstring on the 1..5 half-point scale."""
    return {
        "alignment": _snap(5 - 1.5 * (d.colour != scene.colour) - 1.5 * (d.shape != scene.shape)
                           - 1.0 * abs(d.count - scene.count)),
        "realism": _snap(5 - 1.0 * d.blur - 1.0 * d.noise),
        "aesthetics": _snap(5 - 1.0 * d.clutter - 1.5 * ((d.colour, scene.background) in CLASH) - 0.5 * d.off_centre),
        "plausibility": _snap(5 - 1.5 * d.floating - 1.0 * d.overlap),
    }


CLUTTER_MARKS = (0, 3, 8)  # marks drawn per clutter level


def contrast_colour(background: str, g: torch.Generator) -> tuple[int, int, int]:
    """A random hue whose luminance is far from the background's: dark marks on white, light ones on black, either
    on gray (luminance at least 150 levels from white and black, 50 from gray), so that clutter never blends into the
    background."""
    hue = torch.rand(3, generator=g)
    hue = hue / hue.max().clamp_min(1e-6)
    dark = {"white": True, "black": False}.get(background, bool(torch.rand(1, generator=g) < 0.5))
    level = hue * 0.3 if dark else 0.7 + hue * 0.3
    return tuple(int(v * 255) for v in level.tolist())


def _outline(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(c * 0.45) for c in colour)


def render(scene: Scene, d: Defects, size: int = 64, seed: int = 0) -> Image.Image:
    """Draws the candidate: objects (outlined, so that an overlap shows) standing on a ground line, then clutter
    marks ("x" strokes size/8 wide, at least one 14-pixel vision patch at 112 pixels, in a colour that contrasts with
    the background), blur and noise. Overlapping objects are the last two, their centres one radius apart; floating
    objects are the first ``d.floating`` (``SyntheticRubric.defects`` keeps an overlapping pair on the ground)."""
    g = torch.Generator().manual_seed(seed)
    img = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    ground = int(size * 0.82)
    line = (90, 90, 90) if scene.background != "gray" else (60, 60, 60)
    draw.line([(0, ground), (size, ground)], fill=line, width=max(1, size // 64))
    r = max(3, size // 10)
    n = max(1, d.count)
    span = size * (0.55 if d.off_centre else 0.8)
    x0 = size * (0.05 if d.off_centre else 0.1)
    step = span / n
    centres = [x0 + step * (i + 0.5) for i in range(n)]
    if d.overlap and n > 1:
        centres[-1] = centres[-2] + r
    colour = COLOURS[d.colour]
    edge = max(1, size // 56)
    for i, cx in enumerate(centres):
        lift = int(size * 0.22) if i < d.floating else 0
        cy = ground - r - lift
        box = [cx - r, cy - r, cx + r, cy + r]
        if d.shape == "circle":
            draw.ellipse(box, fill=colour, outline=_outline(colour), width=edge)
        elif d.shape == "square":
            draw.rectangle(box, fill=colour, outline=_outline(colour), width=edge)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour, outline=_outline(colour),
                         width=edge)
    mark, stroke = size / 8, max(2, size // 28)
    for _ in range(CLUTTER_MARKS[d.clutter]):
        px, py = (torch.rand(2, generator=g) * (size - mark)).tolist()
        c = contrast_colour(scene.background, g)
        draw.line([(px, py), (px + mark, py + mark)], fill=c, width=stroke)
        draw.line([(px, py + mark), (px + mark, py)], fill=c, width=stroke)
    if d.blur:
        img = img.filter(ImageFilter.GaussianBlur(radius=d.blur * size / 64))
    if d.noise:
        arr = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3).float()
        arr = (arr + torch.randn(arr.shape, generator=g) * 28.0 * d.noise).clamp(0, 255).to(torch.uint8)
        img = Image.frombytes("RGB", (size, size), arr.numpy().tobytes())
    return img


class SyntheticRubric:
    """Generator of the synthetic rubric set (see the module docstring)."""

    def __init__(self, seed: int = 0, image_size: int = 64, n_raters: int = 5, rater_noise: float = 0.5,
                 bins: ScoreBins | None = None):
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        if n_raters < 1:
            raise ValueError(f"n_raters must be at least 1, got {n_raters}")
        self.seed, self.image_size, self.n_raters, self.rater_noise = seed, image_size, n_raters, rater_noise
        self.bins = bins or ScoreBins.half_points()
        if (self.bins.min, self.bins.max) != (1.0, 5.0):
            raise ValueError("the synthetic rubric is defined on the 1..5 scale")

    def _gen(self, *keys: int) -> torch.Generator:
        h = self.seed
        for k in keys:
            h = (h * 1_000_003 + k) % (2**61 - 1)
        return torch.Generator().manual_seed(h)

    def scene(self, index: int) -> Scene:
        g = self._gen(1, index)
        pick = lambda seq: seq[int(torch.randint(len(seq), (1,), generator=g))]
        return Scene(int(torch.randint(1, 4, (1,), generator=g)), pick(SHAPES), pick(tuple(COLOURS)),
                     pick(tuple(BACKGROUNDS)))

    def defects(self, scene: Scene, index: int, candidate: int) -> Defects:
        g = self._gen(2, index, candidate)
        u = lambda: float(torch.rand(1, generator=g))
        lvl = lambda: int(torch.randint(0, 3, (1,), generator=g))
        colour = scene.colour if u() > 0.3 else tuple(COLOURS)[int(torch.randint(len(COLOURS), (1,), generator=g))]
        shape = scene.shape if u() > 0.3 else SHAPES[int(torch.randint(len(SHAPES), (1,), generator=g))]
        count = scene.count if u() > 0.35 else max(1, min(5, scene.count + (1 if u() > 0.5 else -1)))
        blur = lvl() if u() > 0.4 else 0
        noise = lvl() if u() > 0.5 else 0
        clutter = lvl() if u() > 0.5 else 0
        off_centre = u() > 0.7
        floating = min(count, int(torch.randint(0, 3, (1,), generator=g))) if u() > 0.5 else 0
        overlap = u() > 0.8 and count > 1
        if overlap:  # the overlapping pair stands, so that the overlap stays visible
            floating = min(floating, count - 2)
        return Defects(colour, shape, count, blur=blur, noise=noise, clutter=clutter, off_centre=off_centre,
                       floating=floating, overlap=overlap)

    def ratings(self, true: float, index: int, candidate: int, dimension: str) -> list[float]:
        """The raters' scores of one record, seeded by (seed, index, candidate, the dimension's place in
        ``DIMENSIONS``): the same whatever dimensions a run asks for."""
        if dimension not in DIMENSIONS:
            raise ValueError(f"unknown dimension {dimension!r}; the synthetic set has {list(DIMENSIONS)}")
        g = self._gen(3, index, candidate, DIMENSIONS.index(dimension))
        noisy = true + self.rater_noise * torch.randn(self.n_raters, generator=g)
        return [_snap(float(x)) for x in noisy]

    def candidate(self, index: int, candidate: int) -> tuple[Scene, Defects, Image.Image]:
        """The scene of prompt ``index``, the defects of its candidate ``candidate`` and the rendered image."""
        scene = self.scene(index)
        d = self.defects(scene, index, candidate)
        return scene, d, render(scene, d, self.image_size, seed=self._gen(4, index, candidate).initial_seed())

    def records(self, n_prompts: int, candidates: int = 4, dimensions=DIMENSIONS, start: int = 0) -> list[Record]:
        """Records for prompts start..start+n_prompts-1, ``candidates`` images each, every dimension."""
        out = []
        for index in range(start, start + n_prompts):
            for c in range(candidates):
                scene, d, image = self.candidate(index, c)
                truth = true_scores(scene, d)
                for dim in dimensions:
                    if dim not in truth:
                        raise ValueError(f"unknown dimension {dim!r}; the synthetic set has {list(truth)}")
                    ratings = self.ratings(truth[dim], index, c, dim)
                    score = float(aggregate_ratings([ratings])[0])
                    std = math.sqrt(sum((r - score) ** 2 for r in ratings) / len(ratings))
                    out.append(Record(scene.prompt, image, dim, score, prompt_id=f"syn-{index}", ratings=ratings,
                                      std=std, meta={"true": truth[dim], "defects": asdict(d), "index": index,
                                                     "candidate": c}))
        return out

    def groups(self, n_prompts: int, candidates: int = 4, dimensions=DIMENSIONS, start: int = 0) -> list[Group]:
        from zrcore.data.records import group_records

        return group_records(self.records(n_prompts, candidates, dimensions, start), min_candidates=2)
