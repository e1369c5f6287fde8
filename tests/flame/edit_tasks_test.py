"""Error profiles and edit-task synthesis: counts against loops, invariants, seeding, sparsity."""

import numpy as np
import pytest

from flame_jax.flame import EditTask, error_profile, synthesize_edit_tasks, with_candidates


def _random_sets(rng, visits, meds, p=0.3):
    return rng.random((visits, meds)) < p


@pytest.mark.parametrize("shape", [(1, 3), (17, 9), (40, 25)])
def test_profile_matches_loops(shape):
    rng = np.random.default_rng(shape[0])
    pred, truth = _random_sets(rng, *shape), _random_sets(rng, *shape)
    prof = error_profile(pred, truth)
    for v in range(shape[0]):
        g = set(np.flatnonzero(truth[v]))
        p = set(np.flatnonzero(pred[v]))
        assert prof.truth_size[v] == len(g)
        assert prof.miss[v] == len(g - p)
        assert prof.extra[v] == len(p - g)
    for d in range(shape[1]):
        assert prof.drug_miss[d] == sum(truth[v, d] and not pred[v, d] for v in range(shape[0]))
        assert prof.drug_extra[d] == sum(pred[v, d] and not truth[v, d] for v in range(shape[0]))


def test_tasks_are_consistent_and_seeded():
    rng = np.random.default_rng(0)
    truth = _random_sets(rng, 30, 12)
    truth[0] = False  # an empty ground truth must not crash
    pred = _random_sets(rng, 30, 12)
    prof = error_profile(pred, truth)
    sets = [np.flatnonzero(t) for t in truth]
    rows = np.arange(100, 130)
    tasks = synthesize_edit_tasks(prof, sets, rows, samples=200, seed=3)
    again = synthesize_edit_tasks(prof, sets, rows, samples=200, seed=3)
    other = synthesize_edit_tasks(prof, sets, rows, samples=200, seed=4)
    assert tasks == again and tasks != other
    for t in tasks:
        g = set(sets[t.row - 100].tolist())
        p0, add, rem = set(t.pre_list), set(t.add), set(t.remove)
        assert add <= g and not (rem & g)
        assert p0 == (g - add) | rem  # applying both edits to P0 recovers G
        assert (p0 | add) - rem == g
        assert list(t.pre_list) == sorted(t.pre_list)


def test_sparse_profile_and_unseen_sizes_do_not_crash():
    # pi_cls only ever missed drug 0 on visits with |G| = 1; later sets are larger.
    pred = np.zeros((2, 6), bool)
    truth = np.zeros((2, 6), bool)
    truth[:, 0] = True
    prof = error_profile(pred, truth)
    assert prof.drug_miss.tolist() == [2, 0, 0, 0, 0, 0]
    sets = [np.array([1, 2, 3, 4]), np.array([5])]
    tasks = synthesize_edit_tasks(prof, sets, np.array([0, 1]), samples=50, seed=0)
    # the nearest observed size (1) always missed exactly one drug
    assert all(len(t.add) == 1 and t.remove == () for t in tasks)


def test_missed_drugs_follow_the_profile_weights():
    # drug 0 missed 99 times, drug 1 never: with smoothing 1 the odds are 100 : 1.
    truth = np.zeros((100, 2), bool)
    truth[:, :] = True
    pred = truth.copy()
    pred[:99, 0] = False
    pred[99, 1] = False
    prof = error_profile(pred, truth)
    prof = prof._replace(drug_miss=np.array([99, 0]))
    tasks = synthesize_edit_tasks(prof, [np.array([0, 1])], np.array([0]), samples=2000, seed=1)
    missed0 = sum(t.add == (0,) for t in tasks)
    assert 0.97 < missed0 / 2000 <= 1.0


def test_bad_arguments():
    prof = error_profile(np.zeros((1, 2), bool), np.ones((1, 2), bool))
    with pytest.raises(ValueError, match="smoothing"):
        synthesize_edit_tasks(prof, [np.array([0])], np.array([0]), samples=1, seed=0, smoothing=0)
    with pytest.raises(ValueError, match="outside"):
        synthesize_edit_tasks(prof, [np.array([5])], np.array([0]), samples=1, seed=0)
    # the jaxtyping hook of the test run catches the shape mismatch first; plain calls get ours
    with pytest.raises((ValueError, TypeError), match="shape|visits"):
        error_profile(np.zeros((1, 2), bool), np.zeros((2, 2), bool))


def test_with_candidates_matches_a_loop():
    rng = np.random.default_rng(3)
    scores = rng.random((6, 9))
    tasks = [
        EditTask(row=int(r), pre_list=tuple(sorted(rng.choice(9, 3, replace=False).tolist())),
                 add=(0, 4, 8), remove=())
        for r in rng.integers(0, 6, 20)
    ]  # fmt: skip
    for k in (1, 3, 7):
        for t, u in zip(tasks, with_candidates(tasks, scores, k), strict=True):
            outside = [d for d in range(9) if d not in t.pre_list]
            best = sorted(outside, key=lambda d: -scores[t.row, d])[:k]
            assert list(u.candidates) == best
            assert u.add == tuple(d for d in t.add if d in best)
            assert (u.row, u.pre_list, u.remove) == (t.row, t.pre_list, t.remove)
    assert with_candidates(tasks, scores, 0) == tasks
    with pytest.raises(ValueError, match="k must be"):
        with_candidates(tasks, scores, -1)
