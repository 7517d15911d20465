"""The pretraining set describes images and never judges them: no score label, no rubric sentence, no number;
its scenes come from an index range disjoint from every rubric training and evaluation set."""

import re

import pytest

from zrcore.bins import ScoreBins
from zrcore.data.captions import (
    ATTRIBUTES,
    INSTRUCTION,
    LEVELS,
    PRETRAIN_OFFSET,
    attributes,
    captions,
    clauses,
    context,
    describe,
    description_token_limit,
    match_question,
    verdict,
)
from zrcore.data.synthetic import (
    BACKGROUNDS,
    CLASH,
    COLOURS,
    NUMBER_WORDS,
    SHAPES,
    Defects,
    Scene,
    SyntheticRubric,
    render,
)
from zrcore.models.templates import RubricTemplates
from zrcore.training.config import TrainConfig
from zrcore.training.datasets import EVAL_OFFSET, build_data


def _rubric_clauses() -> list[str]:
    t = RubricTemplates.load()
    texts = [t.system, t.question, t.reasoning_prefix, t.score_suffix]
    for dim in t.dimensions.values():
        texts += [dim["name"], *dim["rubric"].split(";")]
    return [c.strip(" .\n").lower() for c in texts if len(c.strip(" .\n")) > 3]


def test_descriptions_hold_no_score_and_no_rubric():
    gen = SyntheticRubric(seed=0, image_size=32)
    rows = captions(gen, 60, with_questions=True)
    texts = {r.text for r in rows} | {r.instruction for r in rows} | {INSTRUCTION}
    assert len({r.text for r in rows if r.instruction == INSTRUCTION}) > 100  # the descriptions are varied
    # the description, nine questions about one part, and whether the image shows its scene's prompt
    assert len({r.instruction for r in rows if not r.instruction.startswith("Does the image show ")}) == 10
    assert {r.text for r in rows if r.instruction.startswith("Does the image show ")} > {"yes."}
    for text in texts:
        _assert_not_judging(text)


def _assert_not_judging(text: str) -> None:
    assert not re.search(r"\d", text), text  # no score label, no number at all
    assert not (set(text.replace(".", " ").split()) & set(ScoreBins.half_points().labels)), text
    low = text.lower()
    assert not any(c in low for c in _rubric_clauses()), text
    assert not any(w in low for w in ("score", "rubric", "rate", "quality", "good", "bad", "judge")), text


def test_contexts_vary_and_never_judge():
    """With contexts the request to describe sits in a random text: system turns, neutral lines and the scene's own
    prompt vary, the description does not, and nothing in the context judges either."""
    gen = SyntheticRubric(seed=0, image_size=32)
    plain, ctx = captions(gen, 40), captions(gen, 40, contexts=True)
    for p, c in zip(plain, ctx):  # the same descriptions of the same images, with a verdict where the prompt is quoted
        scene, d, _ = gen.candidate(c.index, c.candidate)
        quoted = f"Prompt: {scene.prompt}" in c.instruction
        said = clauses(scene, d, quoted)
        assert c.text == " ".join(said.values()) and ("verdict" in said) == quoted, (c.instruction, c.text)
        assert c.text.replace(" " + verdict(scene, d), "") == p.text
    assert 0.6 < sum("asked for" in r.text for r in ctx) / len(ctx) < 0.9  # QUOTED_SHARE of them
    assert {r.instruction for r in plain} == {INSTRUCTION} and {r.system for r in plain} == {""}
    assert len({r.instruction for r in ctx}) > 100 and len({r.system for r in ctx}) > 50
    assert 0.3 < sum(r.system == "" for r in ctx) / len(ctx) < 0.7
    assert any(f"Prompt: {gen.scene(r.index).prompt}" in r.instruction for r in ctx)
    assert any(INSTRUCTION not in r.instruction for r in ctx)  # sometimes no explicit request at all
    # the surrounding text also names defects, positions, colours and shapes, which the description ignores
    said = {w for r in ctx for w in (r.system + " " + r.instruction).lower().replace(".", " ").split()}
    assert {"blurred", "floats", "overlap", "red", "triangle"} <= said
    for r in ctx:
        _assert_not_judging(r.system)
        _assert_not_judging(r.instruction)
    scene = gen.scene(PRETRAIN_OFFSET)
    assert context(gen, scene, PRETRAIN_OFFSET, 1) == context(gen, scene, PRETRAIN_OFFSET, 1)  # deterministic


def test_description_follows_what_was_drawn():
    scene = Scene(2, "circle", "red", "white")  # asked for
    drawn = Defects("blue", "square", 3, blur=2, noise=0, clutter=1, off_centre=True, floating=1, overlap=True)
    assert describe(scene, drawn) == ("very blurred. clean. some clutter. off centre. one floats. two overlap. three "
                                      "blue squares on a white background. they stand out.")
    assert describe(scene, drawn, quoted=True).endswith(
        " three blue squares on a white background. asked for two red circles: count differs, colour differs, "
        "shape differs. they stand out.")
    assert describe(Scene(1, "circle", "green", "gray"), Defects("green", "circle", 1), quoted=True) == (
        "sharp. clean. no clutter. centred. nothing floats. one green circle on a gray background. asked for one "
        "green circle: count same, colour same, shape same. it blends into the background.")


def test_verdict_names_exactly_what_differs_from_the_prompt():
    """Written only from what is asked and what is drawn: every combination of count, colour and shape."""
    scene = Scene(2, "circle", "red", "white")
    for count in (2, 3):
        for colour in ("red", "blue"):
            for shape in ("circle", "square"):
                word = lambda differs: "differs" if differs else "same"
                said = verdict(scene, Defects(colour, shape, count))
                assert said == (f"asked for two red circles: count {word(count != 2)}, colour {word(colour != 'red')}, "
                                f"shape {word(shape != 'circle')}.")


def _luma(pixels) -> float:
    r, g, b = (sum(p[i] for p in pixels) / len(pixels) for i in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_blend_clause_follows_the_contrast_drawn():
    """The blend clause and CLASH are read off the rendered pixels: the objects' luma (the centre pixel of a lone,
    unblurred object) against the background's (a corner), under and over 50 levels apart."""
    for colour in COLOURS:
        for bg in BACKGROUNDS:
            scene = Scene(1, "square", colour, bg)
            img = render(scene, Defects(colour, "square", 1), size=64)
            obj = _luma([img.getpixel((32 + dx, 45 + dy)) for dx in (-1, 0, 1) for dy in (-1, 0, 1)])
            back = _luma([img.getpixel((2, 2))])
            low = abs(obj - back) < 50
            assert ((colour, bg) in CLASH) == low, (colour, bg, obj, back)
            said = clauses(scene, Defects(colour, "square", 1))["blend"]
            assert said == ("it blends into the background." if low else "it stands out."), (colour, bg)
    assert len(CLASH) == 5  # as many pairs as before the contrast rule: the share of clashing images is unchanged


def test_attributes_are_the_classes_the_description_names():
    scene = Scene(2, "circle", "red", "white")
    drawn = Defects("blue", "square", 3, blur=2, noise=0, clutter=1, off_centre=True, floating=1, overlap=True)
    assert dict(zip(ATTRIBUTES, attributes(scene, drawn))) == {
        "blur": 2, "noise": 0, "clutter": 1, "count": 3, "floating": 1, "overlap": 1, "off_centre": 1,
        "colour": 2, "shape": 1, "background": 0, "blend": 0}
    gen = SyntheticRubric(seed=0, image_size=32)
    rows = captions(gen, 12)
    for r in rows:
        labels = dict(zip(ATTRIBUTES, r.attributes))
        assert all(0 <= labels[k] < n for k, n in ATTRIBUTES.items()), labels
        scene, d, _ = gen.candidate(r.index, r.candidate)
        said = clauses(scene, d)
        for level in ("blur", "noise", "clutter"):
            assert LEVELS[level][labels[level]] == said[level]
    # every class of the image-wide defects occurs, so the warm-up has something to tell apart
    for level in ("blur", "noise", "clutter"):
        assert {dict(zip(ATTRIBUTES, r.attributes))[level] for r in rows} == {0, 1, 2}


def test_pretraining_scenes_are_disjoint_from_rubric_data():
    gen = SyntheticRubric(seed=0, image_size=32)
    pre = captions(gen, 8)
    assert min(r.index for r in pre) >= PRETRAIN_OFFSET
    with pytest.raises(ValueError, match="PRETRAIN_OFFSET"):
        captions(gen, 1, start=EVAL_OFFSET)
    cfg = TrainConfig(train_prompts=8, eval_prompts=8, candidates=4, image_size=32, init_from="")
    groups, evals = build_data(cfg)
    rubric_indices = {r.meta["index"] for g in groups for r in g.records} | {r.meta["index"] for r in evals}
    assert rubric_indices and max(rubric_indices) < PRETRAIN_OFFSET
    assert not rubric_indices & {r.index for r in pre}
    rubric_images = {r.image.open().tobytes() for r in evals} | {r.image.open().tobytes() for g in groups
                                                                 for r in g.records}
    assert not rubric_images & {r.image.tobytes() for r in pre}


def test_rubric_sets_cannot_reach_the_pretraining_range():
    with pytest.raises(ValueError, match="eval_prompts"):
        build_data(TrainConfig(eval_prompts=PRETRAIN_OFFSET - EVAL_OFFSET + 1, init_from=""))
    with pytest.raises(ValueError, match="train_prompts"):
        build_data(TrainConfig(train_prompts=EVAL_OFFSET + 1, init_from=""))


def _encode(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def test_the_reasoning_cap_fits_every_description():
    """description_token_limit is the longest description the generator can produce, verdict included, plus
    end-of-turn: a loop over every scene-dependent option (count, shape, colour, background, floating, overlap) with
    the longest levels, centring and verdict reaches it exactly (a description's tokens are its clauses' tokens, each
    after its space: checked on generated descriptions), and 2,000 generated descriptions stay within it."""
    from zrcore.models.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    limit = description_token_limit(tok)
    n_tokens = lambda text: len(_encode(tok, " " + text))
    first = lambda text: len(_encode(tok, text))  # the first clause opens the turn: no space before it
    longest_levels = [max(options, key=n_tokens if i else first) for i, options in enumerate(LEVELS.values())]
    centre = max(("centred.", "off centre."), key=n_tokens)
    verdicts = [verdict(Scene(n, s, c, "white"), Defects(c2, s2, n2))
                for n in range(1, len(NUMBER_WORDS)) for s in SHAPES for c in COLOURS
                for c2 in COLOURS for s2 in SHAPES for n2 in (n, 3 - n if n < 3 else 1)]
    longest_verdict = max(verdicts, key=n_tokens)
    longest = 0
    for count in range(1, len(NUMBER_WORDS)):
        for f in range(min(count, 2) + 1):
            for overlap in (False, True) if count > 1 else (False,):
                for shape in SHAPES:
                    for colour in COLOURS:
                        for bg in BACKGROUNDS:
                            part = clauses(Scene(count, shape, colour, bg),
                                           Defects(colour, shape, count, floating=f, overlap=overlap))
                            text = " ".join([*longest_levels, centre, part["ground"], part["objects"],
                                             longest_verdict, part["blend"]])
                            longest = max(longest, len(_encode(tok, text)))
    assert limit == longest + 1
    gen = SyntheticRubric(seed=3, image_size=16)
    lengths = []
    for index in range(500):
        for c in range(4):
            scene, d = gen.scene(index), gen.defects(gen.scene(index), index, c)
            text = describe(scene, d, quoted=True)
            n = len(_encode(tok, text))
            parts = list(clauses(scene, d, quoted=True).values())
            assert n == len(_encode(tok, parts[0])) + sum(len(_encode(tok, " " + t)) for t in parts[1:]), text
            lengths.append(n)
    assert max(lengths) + 1 <= limit
    assert max(lengths) > 36  # the descriptions are long enough that a short cap would cut them


def test_match_question_answers_with_what_is_drawn():
    scene = Scene(2, "circle", "red", "white")
    assert match_question(scene, Defects("red", "circle", 2)) == (
        "Does the image show two red circles on a white background?", "yes.")
    q, a = match_question(scene, Defects("blue", "circle", 3, blur=2))
    assert a == "no. three blue circles on a white background."
