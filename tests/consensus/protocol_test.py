import math
import time

import numpy as np
import pytest

from flame_jax.consensus._protocol import (
    HISTORY_FIELDS,
    RoundConfig,
    history_rows,
    jaccard,
    run_round,
)
from flame_jax.consensus._vancouver import vancouver
from flame_jax.consensus._vignettes import Vignette
from tests.consensus.protocol_helpers import (
    Scripted,
    names,
    recommender_member,
    reference_jaccard,
    vignettes,
    vocab,
)

A, B, C = names(1, 4), names(1, 8, 12), names(0, 2)
GOLD = Vignette(id="v", text="Case ID: visit-0\nx", gold=tuple(names(1, 4, 20)))


def padded_vancouver(grades, mask):
    """Vancouver on the observed edges, zero-padded to the round's 4 x 4 bucket."""
    g = np.zeros((4, 4), np.float32)
    m = np.zeros((4, 4), bool)
    r, i = mask.shape
    g[:r, :i] = np.where(mask, grades, 0.0)
    m[:r, :i] = mask
    res = vancouver(g, m)
    return res._replace(
        grade=res.grade[:i],
        item_variance=res.item_variance[:i],
        item_count=res.item_count[:i],
        reviewer_variance=res.reviewer_variance[:r],
    )


def three():
    return [
        Scripted("m0", A, {tuple(B): 0.7, tuple(C): 0.2}),
        Scripted("m1", B, {tuple(A): 0.9, tuple(C): 0.1}),
        Scripted("m2", C, {tuple(A): 0.8, tuple(B): 0.6}),
    ]


def test_peer_review_matrix_consensus_and_answer():
    members = three()
    r = run_round(GOLD, members, vocab(), seed=3, strategy="TEST")
    assert len(r.items) == 3 and [it.id for it in r.items] == ["Item_0", "Item_1", "Item_2"]
    by_drugs = {it.drugs: k for k, it in enumerate(r.items)}
    author = {tuple(m.answer): s for s, m in enumerate(members)}
    for k, it in enumerate(r.items):
        assert r.authors[k] == (author[it.drugs],)
    # every member graded exactly the items it did not author, nothing else
    for s, m in enumerate(members):
        own = by_drugs[tuple(m.answer)]
        assert not r.mask[s, own] and math.isnan(r.grades[s, own])
        for d, g in m.grades.items():
            assert r.mask[s, by_drugs[d]] and r.grades[s, by_drugs[d]] == g
        assert len(m.reviewed) == 1 and len(m.reviewed[0]) == 2
    # consensus is Vancouver of that matrix
    res = padded_vancouver(r.grades, r.mask)
    np.testing.assert_allclose(r.consensus, np.asarray(res.grade), rtol=1e-6)
    np.testing.assert_allclose(r.item_sd, np.sqrt(np.asarray(res.item_variance)), rtol=1e-5)
    np.testing.assert_allclose(
        [m.reviewer_variance for m in r.members], np.asarray(res.reviewer_variance), rtol=1e-5
    )
    best = int(np.argmax(r.consensus))
    assert r.answer == r.items[best].id and r.answer_drugs == r.items[best].drugs
    assert r.answer_drugs == tuple(A)  # graded 0.9 and 0.8
    assert r.confidence == pytest.approx(r.consensus[best])
    assert r.jaccard == pytest.approx(reference_jaccard(A, GOLD.gold))
    assert r.correct == (r.jaccard >= 0.5)
    assert r.failures == 0 and r.review_failures == 0 and r.strategy == "TEST"


def test_anonymisation_is_a_seeded_shuffle():
    labels = {}
    for seed in range(12):
        r = run_round(GOLD, three(), vocab(), seed=seed)
        labels[seed] = [m.item for m in r.members]
        assert sorted(labels[seed]) == ["Item_0", "Item_1", "Item_2"]
        again = run_round(GOLD, three(), vocab(), seed=seed)
        assert [m.item for m in again.members] == labels[seed]
        np.testing.assert_array_equal(again.consensus, r.consensus)
    assert len({tuple(v) for v in labels.values()}) > 1


def test_identical_answers_merge_and_authors_do_not_review_them():
    spelled = ["  " + A[0].upper(), A[1].replace(" ", "-") + " 10 mg"]
    members = [
        Scripted("m0", A, {tuple(B): 0.5}),
        Scripted("m1", spelled, {tuple(B): 0.4}),
        Scripted("m2", B, {tuple(A): 0.8}),
    ]
    r = run_round(GOLD, members, vocab(), seed=0)
    assert len(r.items) == 2
    k_a = next(k for k, it in enumerate(r.items) if it.drugs == tuple(A))
    assert r.authors[k_a] == (0, 1)
    assert r.members[0].item == r.members[1].item == r.items[k_a].id
    assert r.mask[:, k_a].tolist() == [False, False, True]
    assert [len(x[0]) for x in (members[0].reviewed, members[2].reviewed)] == [1, 1]


def test_the_same_member_in_two_slots_answers_and_reviews_twice():
    m0 = Scripted("m0", A, {tuple(B): 0.5})
    m1 = Scripted("m1", B, {tuple(A): 0.8})
    r = run_round(GOLD, [m0, m0, m1], vocab(), seed=0)
    assert len(r.items) == 2 and len(m0.reviewed) == 2
    assert [m.name for m in r.members] == ["m0", "m0", "m1"]


def test_failing_crashing_and_hanging_members_are_dropped_and_the_round_completes():
    for bad, kind in [
        (Scripted("down", C, fail="generate"), "http"),
        (Scripted("buggy", C, fail="crash"), "error: RuntimeError"),
        (Scripted("hangs", C, sleep=30.0), "timeout"),
    ]:
        members = [*three()[:2], bad]
        t0 = time.perf_counter()
        r = run_round(GOLD, members, vocab(), seed=0, config=RoundConfig(stage_timeout_s=0.5))
        assert time.perf_counter() - t0 < 5.0
        assert r.failures == 1 and r.members[2].failure.startswith(kind)
        assert r.members[2].item is None and not r.mask[2].any()
        assert not bad.reviewed  # dropped: no review call
        assert len(r.items) == 2 and r.answer_drugs == tuple(A)  # m1 graded A 0.9
        rows = history_rows(r, vocab(), GOLD.gold)
        assert [row["model"] for row in rows] == ["m0", "m1"]


def test_a_failed_review_is_a_missing_edge_never_a_zero():
    members = three()
    members[1].fail = "review"
    members[2].grades.pop(tuple(B))  # m2 cannot grade B: that one edge is missing
    r = run_round(GOLD, members, vocab(), seed=0)
    assert r.review_failures == 1 and r.members[1].review_failure.startswith("parse")
    assert not r.mask[1].any() and np.isnan(r.grades[1]).all()
    k_b = next(k for k, it in enumerate(r.items) if it.drugs == tuple(B))
    assert r.mask[:, k_b].tolist() == [True, False, False]
    assert math.isnan(r.members[1].reviewer_variance)
    # the consensus equals Vancouver on the observed edges only
    res = padded_vancouver(r.grades, r.mask)
    reviewed = np.asarray(res.item_count) > 0
    np.testing.assert_allclose(r.consensus[reviewed], np.asarray(res.grade)[reviewed], rtol=1e-6)
    assert r.consensus[k_b] == pytest.approx(0.7)  # only m0's grade, not pulled towards 0


def test_pointwise_review_gives_the_same_matrix_with_one_call_per_item():
    listwise = run_round(GOLD, three(), vocab(), seed=5)
    members = three()
    members[2].fail = "review"
    pointwise = run_round(GOLD, members, vocab(), seed=5, config=RoundConfig(review="pointwise"))
    assert [len(x) for x in members[0].reviewed] == [1, 1]  # two calls of one item each
    np.testing.assert_array_equal(pointwise.mask[:2], listwise.mask[:2])
    np.testing.assert_array_equal(pointwise.grades[:2], listwise.grades[:2])
    assert not pointwise.mask[2].any() and pointwise.review_failures == 1


def test_numpy_grades_count_and_nan_or_out_of_range_grades_are_missing_edges():
    members = three()
    members[0].grades = {tuple(B): np.float32(0.75), tuple(C): np.float64(np.nan)}
    members[1].grades = {tuple(A): np.float32(1.5), tuple(C): True}
    r = run_round(GOLD, members, vocab(), seed=0)
    k = {it.drugs: i for i, it in enumerate(r.items)}
    assert r.mask[0].tolist() == [d == tuple(B) for d, _ in sorted(k.items(), key=lambda x: x[1])]
    assert r.grades[0, k[tuple(B)]] == 0.75
    assert not r.mask[1].any() and r.review_failures == 0


def test_unanimity_has_no_reviews_and_no_confidence():
    members = [Scripted(f"m{i}", A) for i in range(3)]
    r = run_round(GOLD, members, vocab(), seed=0)
    assert len(r.items) == 1 and r.answer_drugs == tuple(A)
    assert math.isnan(r.confidence) and not r.mask.any()
    rows = history_rows(r, vocab(), GOLD.gold)
    assert [row["quality"] for row in rows] == [0.0, 0.0, 0.0]


def test_everyone_fails():
    members = [Scripted(f"m{i}", A, fail="generate") for i in range(3)]
    r = run_round(GOLD, members, vocab(), seed=0)
    assert r.answer is None and r.items == () and r.jaccard == 0.0 and not r.correct
    assert r.failures == 3 and history_rows(r, vocab(), GOLD.gold) == []


def test_canonicalisation_drops_unknown_names_and_fails_all_unknown_answers():
    members = [
        Scripted("m0", [*A, "Unobtainium"], {tuple(B): 0.5}),
        Scripted("m1", B, {tuple(A): 0.5}),
        Scripted("m2", ["Unobtainium", "Tea"]),
        Scripted("m3", [], {tuple(A): 0.1, tuple(B): 0.2}),
    ]
    r = run_round(GOLD, members, vocab(), seed=0)
    assert r.members[0].drugs == tuple(A) and r.members[0].unknown == ("Unobtainium",)
    assert r.members[2].failure.startswith("parse")
    assert r.members[3].drugs == ()  # an empty answer is an answer
    assert len(r.items) == 3


def test_history_rows_follow_the_schema_and_the_compound_formula():
    r = run_round(GOLD, three(), vocab(), seed=1, strategy="S", trial="v 0")
    rows = history_rows(r, vocab(), GOLD.gold, match_threshold=0.4, created="now")
    labels = {it.id: k for k, it in enumerate(r.items)}
    for row, m in zip(rows, r.members, strict=True):
        assert tuple(row) == HISTORY_FIELDS
        assert row["trial"] == "v 0" and row["strategy"] == "S" and row["created"] == "now"
        assert row["id"] == m.item and row["result"] == "; ".join(m.drugs)
        assert row["quality"] == pytest.approx(10 * r.consensus[labels[m.item]])
        assert row["variance"] == pytest.approx(100 * m.reviewer_variance)
        gen = float(reference_jaccard(m.drugs, GOLD.gold) >= 0.4)
        assert row["generation_accuracy"] == gen
        assert row["accuracy"] == pytest.approx(0.75 * gen + 0.25 * m.reviewer_quality)
        assert row["elapsed"] == r.elapsed_s and row["latency"] == m.latency_s
    no_gold = history_rows(r, vocab(), None)
    for row, m in zip(no_gold, r.members, strict=True):
        assert row["accuracy"] == pytest.approx(0.75 * m.reviewer_quality)


def test_rounds_with_recommender_members_on_rendered_vignettes():
    members = [
        recommender_member("oracle"),
        recommender_member("noisy", noise=0.4, seed=2),
        recommender_member("mf", "most-frequent"),
    ]
    for v in vignettes("test", 4):
        r = run_round(v, members, vocab(), seed=0)
        assert r.failures == 0 and r.answer is not None
        assert r.jaccard == pytest.approx(jaccard(r.answer_drugs, v.gold))
        for s in range(len(r.members)):
            assert r.mask[s].sum() == sum(s not in a for a in r.authors)


def test_round_config_validation():
    with pytest.raises(ValueError, match="stage_timeout_s"):
        RoundConfig(stage_timeout_s=0.0)
    with pytest.raises(ValueError, match="match_threshold"):
        RoundConfig(match_threshold=0.0)
    with pytest.raises(ValueError, match="RoundConfig.review"):
        RoundConfig(review="blind")
    with pytest.raises(ValueError, match="empty"):
        run_round(GOLD, [], vocab(), seed=0)
