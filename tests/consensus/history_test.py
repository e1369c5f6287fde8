"""Performance-history rows: strict JSONL IO, per-model profiles and recommendation from a log."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from flame_jax.consensus import (
    HistoryError,
    HistoryRow,
    chemistry_from_history,
    model_profiles,
    read_history,
    recommend_from_history,
    write_history,
)
from tests.consensus.consensus_reference import reference_cheme, reference_recommend

BASE = {
    "trial": "vignette_0 0",
    "model": "a",
    "temperature": 0.6,
    "latency": 1.5,
    "elapsed": 3.0,
    "id": "Item_0",
    "result": "metformin; lisinopril",
    "quality": 7.5,
    "generation_accuracy": 1.0,
    "variance": 0.2,
    "review_accuracy": 0.8,
    "accuracy": 0.95,
    "strategy": "REMOTE",
    "created": "2026-11-22T19:00:00Z",
}
TOY = [("a", 9.0, 0.9), ("b", 6.0, 0.7), ("c", 4.0, 0.6), ("d", 8.0, 0.4)]


def _row(**kw):
    return {**BASE, **kw}


def _toy_history():
    rows = []
    for t in range(3):
        for k, (m, q, a) in enumerate(TOY):
            # Worse records in other trials; the max-accuracy record is the toy value.
            scale = 1.0 if t == 1 else 0.5
            rows.append(
                _row(trial=f"v{t} 0", model=m, quality=q * scale, accuracy=a * scale, latency=k + 1)
            )
    return rows


def test_round_trip_and_append(tmp_path):
    path = tmp_path / "logs" / "history.jsonl"
    rows = [_row(model=m) for m in "abc"]
    write_history(path, rows[:2])
    write_history(path, [HistoryRow.from_mapping(rows[2])], append=True)
    back = read_history(path)
    assert [r.model for r in back] == ["a", "b", "c"]
    assert back[0].to_json() == rows[0]
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["model"] == "c"
    assert "task" not in json.loads(lines[0])
    tagged = _row(task="medication")
    write_history(path, [tagged])
    assert read_history(path)[0].task == "medication"
    assert not list(tmp_path.glob("logs/.*tmp"))  # no temporary files left behind


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, "unknown field"),
        ({"quality": None}, "'quality' must be a number"),
        ({"quality": True}, "'quality' must be a number"),
        ({"quality": 10.5}, "'quality' must be finite in"),
        ({"accuracy": -0.1}, "'accuracy' must be finite in"),
        ({"latency": float("nan")}, "'latency' must be finite"),
        ({"model": 3}, "'model' must be a string"),
        ({"model": ""}, "'model' must be a non-empty"),
    ],
)
def test_invalid_rows_name_file_line_and_field(tmp_path, change, message):
    path = tmp_path / "h.jsonl"
    bad = _row(**change)
    text = json.dumps(BASE) + "\n" + json.dumps(bad) + "\n"
    path.write_text(text)
    with pytest.raises(HistoryError, match=message) as info:
        read_history(path)
    assert f"{path}:2" in str(info.value)
    with pytest.raises(HistoryError, match="row 0"):
        write_history(tmp_path / "out.jsonl", [bad])
    assert not (tmp_path / "out.jsonl").exists()


def test_missing_field_bad_json_and_missing_file(tmp_path):
    path = tmp_path / "h.jsonl"
    row = dict(BASE)
    del row["variance"]
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(HistoryError, match=r"missing field\(s\) \['variance'\]"):
        read_history(path)
    path.write_text("\n" + json.dumps(BASE) + "\n{oops\n")
    with pytest.raises(HistoryError, match=f"{path}:3: not valid JSON"):
        read_history(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(HistoryError, match="must be an object"):
        read_history(path)
    with pytest.raises(FileNotFoundError, match="history"):
        read_history(tmp_path / "nope.jsonl")
    # A failed append leaves the old file intact.
    write_history(path, [BASE])
    with pytest.raises(HistoryError):
        write_history(path, [_row(quality=-1.0)], append=True)
    assert len(read_history(path)) == 1


def test_model_profiles_max_and_mean():
    rows = [*_toy_history(), _row(model="a", strategy="CHEMISTRY", accuracy=1.0, quality=10.0)]
    rows.append(_row(model="zzz"))  # not in the pool: ignored
    names = ["a", "b", "c", "d", "e"]
    prof = model_profiles(rows, names)
    np.testing.assert_allclose(prof.quality, [9.0, 6.0, 4.0, 8.0, 0.0])
    np.testing.assert_allclose(prof.accuracy, [0.9, 0.7, 0.6, 0.4, 0.1])
    np.testing.assert_array_equal(prof.count, [3, 3, 3, 3, 0])
    np.testing.assert_allclose(prof.latency[:4], [1, 2, 3, 4])
    assert np.isinf(prof.latency[4])
    mean = model_profiles(rows, names, aggregate="mean")
    np.testing.assert_allclose(mean.quality[:4], [q * 2 / 3 for _, q, _ in TOY])
    np.testing.assert_allclose(mean.accuracy[:4], [max(0.1, a * 2 / 3) for _, _, a in TOY])
    with_chem = model_profiles(rows, names, exclude_strategies=())
    assert with_chem.quality[0] == 10.0
    with pytest.raises(ValueError, match="unique"):
        model_profiles(rows, ["a", "a"])
    # A ValueError naming the field (a TypeError first when annotations are checked at run time).
    with pytest.raises((ValueError, TypeError), match="aggregate"):
        model_profiles(rows, names, aggregate="median")


def test_recommend_from_history_matches_the_toy_pool():
    rows = _toy_history()
    names = [m for m, _, _ in TOY]
    chem, _ = chemistry_from_history(rows, names)
    np.testing.assert_allclose(np.asarray(chem.value)[0], [0.0, 1.0, 1.0, 0.0])
    # Three pairs tie at loss 2.0; mean accuracy breaks the tie for {a, b}.
    assert recommend_from_history(rows, names, 2) == ("a", "b")
    assert recommend_from_history(rows, names, 3) == ("a", "b", "c")
    informative = recommend_from_history(rows, names, 3, mode="informative")
    assert len(informative) == 3 and set(informative) <= set(names)
    # Row order does not matter; the pool order is the returned order.
    shuffled = [rows[k] for k in np.random.default_rng(0).permutation(len(rows))]
    assert recommend_from_history(shuffled, names, 2) == ("a", "b")
    assert recommend_from_history(rows, names[::-1], 2) == ("b", "a")
    with pytest.raises(ValueError, match="ensemble size"):
        recommend_from_history(rows, names, 5)


def _near_one_history(seed, n=8):
    """A pool whose best records have accuracies next to 1 (and exactly 1), distinct qualities."""
    rng = np.random.default_rng(seed)
    names = [f"m{k}" for k in range(n)]
    acc = rng.uniform(0.3, 1.0, size=n)
    near = [1 - 1e-9, 1.0, 1 - 3e-8, 1 - 1e-12, 1 - 2e-8]
    acc[rng.permutation(n)[: len(near)]] = near
    quality = np.round(rng.uniform(5.0, 9.9, size=n), 3)
    rows = [
        _row(model=m, quality=float(q), accuracy=float(a), latency=float(k + 1))
        for k, (m, q, a) in enumerate(zip(names, quality, acc, strict=True))
    ]
    # A worse record per model, which the "max" aggregate must ignore.
    rows += [_row(model=m, trial="v1 0", quality=1.0, accuracy=0.2) for m in names]
    return rows, names, quality, acc


@pytest.mark.parametrize("seed", range(3))
def test_chemistry_from_history_keeps_accuracies_next_to_one(seed):
    """Accuracies of 1 - 1e-9 must not round to 1 (zero cost, skipped by ChemE) in float32.

    Same pairs, same values and the same ensemble of 3 as the float64 reference.
    """
    rows, names, q, a = _near_one_history(seed)
    n = len(names)
    chem, profiles = chemistry_from_history(rows, names)
    np.testing.assert_array_equal(profiles.accuracy, a)  # the profiles stay float64
    table = reference_cheme(q, a)
    has = np.zeros((n, n), bool)
    value = np.zeros((n, n))
    for (i, j), v in table.items():
        has[i, j], value[i, j] = True, v
    np.testing.assert_array_equal(np.asarray(chem.defined), has)
    np.testing.assert_allclose(np.asarray(chem.value), value, atol=1e-5)
    want = reference_recommend(table, n, size=3, accuracy=a, latency=np.arange(1.0, n + 1))
    assert recommend_from_history(rows, names, 3) == tuple(names[k] for k in want)


def test_recommendation_does_not_depend_on_the_hash_seed(tmp_path):
    """The released hill-climb depends on PYTHONHASHSEED; ours must not (spec §5 golden tests)."""
    path = tmp_path / "history.jsonl"
    write_history(path, _toy_history())
    script = textwrap.dedent(
        f"""
        from flame_jax.consensus import read_history, recommend_from_history
        rows = read_history({str(path)!r})
        names = sorted({{r.model for r in rows}})  # set iteration order varies with the seed
        print(recommend_from_history(rows, names, 2), recommend_from_history(rows, names, 3))
        """
    )
    # One run here (the hash seed of this process) and one under a different fixed seed.
    names = sorted({r.model for r in read_history(path)})
    here = f"{recommend_from_history(_toy_history(), names, 2)} "
    here += f"{recommend_from_history(_toy_history(), names, 3)}"
    seed = "54321" if os.environ.get("PYTHONHASHSEED") == "12345" else "12345"
    env = {**os.environ, "PYTHONHASHSEED": seed, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == here == "('a', 'b') ('a', 'b', 'c')"
