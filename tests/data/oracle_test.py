"""The planted-rules oracle and the most-frequent reference recommender."""

import dataclasses

import numpy as np
import pytest

from flame_jax.data._format import RaggedIds
from flame_jax.data._oracle import most_frequent_recommend, oracle_recommend
from flame_jax.data._synthetic import SyntheticConfig, generate_cohort
from tests.data.helpers import make_dataset

NOISE_FREE = {
    "p_give": 1.0,
    "p_stick": 1.0,
    "p_avoid": 1.0,
    "p_companion": 1.0,
    "p_age_avoid": 1.0,
    "p_contraindication": 1.0,
    "noise_drug_rate": 0.0,
    "popularity_skew": 60.0,  # one member of each class takes (almost) all the popularity
}


def reference_jaccard(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-visit |P & T| / |P | T| (1 when both are empty), float64."""
    out = []
    for p, t in zip(pred.astype(bool), truth.astype(bool), strict=True):
        union = (p | t).sum()
        out.append(1.0 if union == 0 else (p & t).sum() / union)
    return float(np.mean(out))


def reference_ddi_rate(pred: np.ndarray, ddi: np.ndarray) -> float:
    """Interacting pairs over all pairs, pooled over visits."""
    bad = total = 0
    for p in pred:
        idx = np.flatnonzero(p)
        for i, a in enumerate(idx):
            for b in idx[i + 1 :]:
                total += 1
                bad += int(ddi[a, b])
    return bad / total if total else 0.0


def _evaluate(cohort) -> dict[str, float]:
    ds = cohort.dataset
    rows = ds.split_rows("test")
    truth = ds.visits.med.multi_hot(ds.num_meds, rows)
    oracle, _ = oracle_recommend(cohort.rules, ds, rows)
    frequent, _ = most_frequent_recommend(ds, rows)
    return {
        "oracle_jaccard": reference_jaccard(oracle, truth),
        "frequent_jaccard": reference_jaccard(frequent, truth),
        "oracle_ddi": reference_ddi_rate(oracle, ds.ddi),
        "truth_ddi": reference_ddi_rate(truth, ds.ddi),
    }


def _check_reference_gap(scores: dict[str, float]) -> None:
    assert 0.5 < scores["oracle_jaccard"] < 1.0, scores  # noise keeps it below 1
    assert scores["oracle_jaccard"] >= scores["frequent_jaccard"] + 0.2, scores
    assert scores["oracle_ddi"] <= scores["truth_ddi"], scores


# --------------------------------------------------------------------------------------------------
# Oracle


def test_oracle_is_exact_without_noise():
    """With every planted probability at 0 or 1, the oracle reproduces the therapeutic drugs of
    every visit, and the ward drugs it adds are exactly the likely background ones."""
    cohort = generate_cohort(SyntheticConfig.tiny(**NOISE_FREE))
    ds, rules = cohort.dataset, cohort.rules
    truth = ds.visits.med.multi_hot(ds.num_meds)
    sets, _ = oracle_recommend(rules, ds, np.arange(len(ds.visits)))
    therapeutic = rules.drug_class() != 0
    np.testing.assert_array_equal(sets[:, therapeutic], truth[:, therapeutic])
    likely = sorted(b.drug for b in rules.background if b.prob > 0.5)
    assert all(np.flatnonzero(s[~therapeutic]).tolist() == likely for s in sets)


def test_oracle_beats_most_frequent_on_tiny(tiny):
    _check_reference_gap(_evaluate(tiny))


def test_default_cohort_statistics_and_references():
    """The one test on the default config: the figures the demo prints."""
    cohort = generate_cohort(SyntheticConfig())
    stats = cohort.dataset.statistics()
    assert stats["patients"] == 2000 and stats["meds"] == 60
    assert 6.0 <= stats["meds_per_visit"] <= 12.0
    assert 0.05 <= stats["ddi_rate_truth"] <= 0.12  # MIMIC-III: about 0.08
    assert stats["visits_per_patient"] > 2.0
    assert np.unique(cohort.dataset.visits.med.values).size == 60, "every drug is used"
    _check_reference_gap(_evaluate(cohort))


def test_oracle_uses_only_observable_inputs(tiny):
    """A visit's own medications (and later visits) never change its recommendation; earlier
    visits' medications do (the history effect)."""
    ds, rules = tiny.dataset, tiny.rules
    v = ds.visits
    rng = np.random.default_rng(0)
    last = np.flatnonzero(np.r_[v.patient_id[1:] != v.patient_id[:-1], True])
    second = np.flatnonzero(v.visit_index == 1)

    def with_meds(rows_to_change):
        lists = v.med.to_lists()
        for i in rows_to_change:
            lists[i] = sorted(rng.choice(ds.num_meds, 4, replace=False).tolist())
        return dataclasses.replace(
            ds, visits=dataclasses.replace(v, med=RaggedIds.from_lists(lists))
        )

    before = oracle_recommend(rules, ds, last)
    after = oracle_recommend(rules, with_meds(last), last)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])

    first = np.flatnonzero(v.visit_index == 0)
    before = oracle_recommend(rules, ds, second)[0]
    after = oracle_recommend(rules, with_meds(first), second)[0]
    assert (before != after).any(axis=1).mean() > 0.2


def test_oracle_scores_are_planted_marginals(medium):
    """Scores are calibrated: within each score bin, the mean score is close to the frequency
    with which the drug is really prescribed."""
    ds = medium.dataset
    rows = np.arange(len(ds.visits))
    truth = ds.visits.med.multi_hot(ds.num_meds, rows)
    sets, scores = oracle_recommend(medium.rules, ds, rows)
    assert scores.dtype == np.float32 and ((scores >= 0) & (scores <= 1)).all()
    assert abs(scores.sum(1).mean() - truth.sum(1).mean()) < 0.1 * truth.sum(1).mean()
    bins = np.digitize(scores, [0.05, 0.2, 0.4, 0.6, 0.8, 0.95])
    for b in np.unique(bins):
        mask = bins == b
        if mask.sum() >= 200:
            assert abs(scores[mask].mean() - truth[mask].mean()) < 0.08, b
    # The set is the decoded mode: its drugs are the likely ones.
    assert scores[sets].mean() > 0.7 > 0.1 > scores[~sets].mean()


def test_oracle_sets_keep_one_drug_per_substitutable_class(medium):
    ds, rules = medium.dataset, medium.rules
    sets, _ = oracle_recommend(rules, ds, ds.split_rows("val"))
    for c in rules.classes:
        if c.substitutable:
            assert sets[:, list(c.members)].sum(1).max() <= 1


def test_oracle_rows_order_and_empty(tiny):
    ds, rules = tiny.dataset, tiny.rules
    rows = ds.split_rows("test")
    perm = np.random.default_rng(1).permutation(rows.size)
    sets, scores = oracle_recommend(rules, ds, rows)
    sets_p, scores_p = oracle_recommend(rules, ds, rows[perm].tolist())
    np.testing.assert_array_equal(sets[perm], sets_p)
    np.testing.assert_array_equal(scores[perm], scores_p)
    empty_sets, empty_scores = oracle_recommend(rules, ds, np.zeros(0, np.int64))
    assert empty_sets.shape == empty_scores.shape == (0, ds.num_meds)


def test_oracle_rejects_rules_of_another_cohort(tiny):
    other_size = generate_cohort(SyntheticConfig.tiny(drugs=30, patients=6))
    with pytest.raises(ValueError, match="med_codes"):
        oracle_recommend(other_size.rules, tiny.dataset, [0])
    other_seed = generate_cohort(SyntheticConfig.tiny(seed=9, patients=6))
    with pytest.raises(ValueError, match="DDI graph|codes"):
        oracle_recommend(other_seed.rules, tiny.dataset, [0])
    with pytest.raises(ValueError, match="row"):
        oracle_recommend(tiny.rules, tiny.dataset, [len(tiny.dataset.visits)])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"p_give": 1.5}, "p_give"),
        ({"fallback_drug": 10_000}, "fallback_drug"),
        ({"noise_drug_rate": -1.0}, "noise_drug_rate"),
        ({"version": 2}, "version"),
    ],
)
def test_planted_rules_validate(tiny, change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(tiny.rules, **change)


def test_planted_rules_reject_overlapping_classes(tiny):
    rules = tiny.rules
    stolen = (rules.classes[2].members[0], *rules.classes[1].members[1:])
    bad = dataclasses.replace(rules.classes[1], members=stolen)
    with pytest.raises(ValueError, match=r"classes\[2\]\.members\[0\].*also in classes\[1\]"):
        dataclasses.replace(rules, classes=(rules.classes[0], bad, *rules.classes[2:]))


# --------------------------------------------------------------------------------------------------
# Most frequent


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_most_frequent_matches_reference(seed):
    ds = make_dataset(seed, patients=20)
    train = ds.split_rows("train")
    rows = ds.split_rows("test")
    sets, scores = most_frequent_recommend(ds, rows)
    counts = np.zeros(ds.num_meds)
    for i in train:
        for d in ds.visits.med[int(i)]:
            counts[d] += 1
    k = int(np.round(np.mean([len(ds.visits.med[int(i)]) for i in train])))
    order = sorted(range(ds.num_meds), key=lambda d: (-counts[d], d))
    expected = np.zeros(ds.num_meds, bool)
    expected[order[:k]] = True
    assert sets.shape == scores.shape == (len(rows), ds.num_meds)
    assert (sets == expected).all()
    np.testing.assert_allclose(
        scores, np.broadcast_to(counts / len(train), scores.shape), rtol=1e-6
    )


def test_most_frequent_ties_and_train_rows():
    ds = make_dataset(0)
    v = ds.visits
    lists = [[0, 1, 2] if i % 2 else [3, 4, 5] for i in range(len(v))]
    ds = dataclasses.replace(ds, visits=dataclasses.replace(v, med=RaggedIds.from_lists(lists)))
    rows = np.arange(len(v))
    sets, _ = most_frequent_recommend(ds, rows, train_rows=[1, 2])  # tie: lower indices win
    assert np.flatnonzero(sets[0]).tolist() == [0, 1, 2]
    sets, scores = most_frequent_recommend(ds, rows, train_rows=[2, 4, 5])
    assert np.flatnonzero(sets[0]).tolist() == [3, 4, 5]
    np.testing.assert_allclose(scores[0, :6], [1 / 3] * 3 + [2 / 3] * 3)
    with pytest.raises(ValueError, match="train_rows"):
        most_frequent_recommend(ds, rows, train_rows=[])
