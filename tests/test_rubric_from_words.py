"""The clause accounting of benchmarks/rubric_from_words.py (the diagnostic of docs/RESULTS.md)."""

from benchmarks.rubric_from_words import clause_accuracy, split
from zrcore.data.captions import PRETRAIN_OFFSET
from zrcore.training.data import EVAL_OFFSET


def _shares(report: str) -> dict[str, tuple[float, float]]:
    out = {}
    for part in report.split(", "):
        key, hit, _, majority = part.split(" ")
        out[key] = (float(hit), float(majority.strip("()")))
    return out


def test_split_draws_training_held_out_and_pretraining_scenes():
    train, test, seen = split(2, 1, 56)
    assert {r.meta["index"] for r in train} == {0, 1}
    assert {r.meta["index"] for r in test} == {EVAL_OFFSET}
    assert {r.meta["index"] for r in seen} == {PRETRAIN_OFFSET} and {r.dimension for r in seen} == {"realism"}
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
