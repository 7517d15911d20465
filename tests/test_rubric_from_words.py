"""The clause accounting of benchmarks/analyses/rubric_from_words.py (the diagnostic of docs/RESULTS.md)."""

from benchmarks.analyses.rubric_from_words import clause_accuracy, split
from zrcore.data.captions import PRETRAIN_OFFSET
from zrcore.data.records import DIMENSIONS
from zrcore.training.datasets import EVAL_OFFSET


def _shares(report: str) -> dict[str, tuple[float, float]]:
    out = {}
    for part in report.split(";")[0].split(", "):
        key, hit, _, majority = part.split(" ")
        out[key] = (float(hit), float(majority.strip("()")))
    return out


def test_split_draws_training_held_out_and_pretraining_scenes():
    train, test, seen = split(2, 1, 56)
    assert {r.meta["index"] for r in train} == {0, 1}
    assert {r.meta["index"] for r in test} == {EVAL_OFFSET}
    assert {r.meta["index"] for r in seen} == {PRETRAIN_OFFSET}
    for part in (train, test, seen):  # every image under every dimension's rubric prompt
        assert {(r.meta["candidate"], r.dimension) for r in part} == {(c, d) for c in range(4) for d in DIMENSIONS}
    for r in train + test + seen:
        assert r.meta["description"] == " ".join(r.meta["clauses"].values())


def test_clause_accuracy_counts_each_clause_against_its_majority():
    _, test, _ = split(1, 2, 56)
    right = _shares(clause_accuracy(test, [r.meta["description"] for r in test]))
    empty = _shares(clause_accuracy(test, ["" for _ in test]))
    assert set(right) == set(test[0].meta["clauses"])
    images = {(r.meta["index"], r.meta["candidate"]): r.meta["clauses"] for r in test}
    for key, (hit, majority) in right.items():
        truths = [c[key] for c in images.values()]
        assert hit == 1.0 and empty[key][0] == 0.0
        assert abs(majority - max(map(truths.count, truths)) / len(truths)) < 0.006
    # a text that names one clause of the first image is right on exactly the images sharing that clause
    first = test[0].meta["clauses"]["centre"]
    one = _shares(clause_accuracy(test, [first for _ in test]))
    share = sum(c["centre"] == first for c in images.values()) / len(images)
    assert abs(one["centre"][0] - share) < 0.006


def test_clause_accuracy_reports_each_rubric_prompt_apart():
    """A text right only under the alignment prompt: every clause right there, none under the others."""
    _, test, _ = split(1, 1, 56)
    report = clause_accuracy(test, [r.meta["description"] if r.dimension == "alignment" else "" for r in test])
    overall = _shares(report)
    assert all(abs(hit - 1 / len(DIMENSIONS)) < 1e-9 for hit, _ in overall.values())
    per_prompt = dict(p.split(" ") for p in report.split("; all clauses under each rubric prompt: ")[1]
                      .split("\n")[0].split(", "))
    assert per_prompt == {d: ("1.00" if d == "alignment" else "0.00") for d in sorted(DIMENSIONS)}
    lines = {line.split(":")[0].strip(): line for line in report.split("\n")[1:]}
    assert set(lines) == {f"under the {d} prompt" for d in DIMENSIONS}
    assert all(x.endswith(" 1.00") for x in lines["under the alignment prompt"].split(": ", 1)[1].split(", "))
    assert all(x.endswith(" 0.00") for x in lines["under the realism prompt"].split(": ", 1)[1].split(", "))


def test_match_question_answers_compare_yes_with_no():
    """benchmarks/analyses/match_questions.py: "yes" exactly where the answer's first token is more likely than "no"'s."""
    import torch

    from benchmarks.analyses.match_questions import answer_yes
    from zrcore.data.synthetic import SyntheticRubric
    from zrcore.models import build_tiny_reward_model

    rm = build_tiny_reward_model("qwen2_vl", "student").eval()
    gen = SyntheticRubric(seed=0, image_size=56)
    images = [gen.candidate(PRETRAIN_OFFSET + i, 0)[2] for i in range(3)]
    questions = ["Does the image show one red circle on a white background?"] * 3
    said = answer_yes(rm, images, questions, batch=2)
    with torch.no_grad():
        first = {}
        for answer in ("yes.", "no."):
            ids, mask, comp, img = rm.text_inputs(questions, images, [answer] * 3)
            lp = rm(ids, mask, img, comp).logps
            first[answer] = torch.stack([row[m][0] for row, m in zip(lp, comp)])
    assert said.tolist() == (first["yes."] > first["no."]).tolist()


def test_verdict_checks_read_the_copied_words_at_their_positions():
    """benchmarks/analyses/verdict.py: the teacher-forced copy checks locate the copied count, colour and shape (one
    token each, checked against the text) and count every quoted row, on a random-init tiny model."""
    from benchmarks.analyses.verdict import forced_copy, swapped_image_copy
    from zrcore.data.captions import captions
    from zrcore.data.synthetic import SyntheticRubric
    from zrcore.models import build_tiny_reward_model

    rm = build_tiny_reward_model("qwen2_vl", "student").eval()
    gen = SyntheticRubric(seed=0, image_size=56)
    quoted = sum("asked for" in r.text for r in captions(gen, 3, 4, start=PRETRAIN_OFFSET, contexts=True))
    rows = [part.rsplit(" ", 2) for part in forced_copy(rm, gen, PRETRAIN_OFFSET, 3).split(", ")]
    totals = {name: n for name, _, n in rows}
    assert {totals[k] for k in ("count", "colour", "shape")} == {f"({quoted})"}
    assert all(0.0 <= float(share) <= 1.0 for _, share, _ in rows)
    won = swapped_image_copy(rm, gen, PRETRAIN_OFFSET, 3)
    assert set(won) == {"prompt", "words", "image"} and sum(won.values()) <= quoted
