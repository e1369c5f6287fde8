import json
import math

import jax
import numpy as np
import pytest
import yaml

from flame_jax.cli.main import main
from flame_jax.config import load_config
from flame_jax.consensus._history import read_history, recommend_from_history
from flame_jax.consensus._strategies import (
    METRICS,
    ConsensusRunConfig,
    EvaluationConfig,
    chemistry_selector,
    evaluate_strategies,
    expected_calibration_error,
    format_strategy_table,
    paired_difference,
    performance_ensemble,
    save_evaluation,
)
from flame_jax.data import save_dataset
from tests.consensus.protocol_helpers import (
    cohort,
    recommender_member,
    reference_ece,
    vignettes,
    vocab,
)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bins", [1, 5, 10])
def test_ece_matches_the_binned_definition(seed, bins):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    conf = rng.random(n)
    conf[rng.random(n) < 0.2] = np.nan  # undefined confidences are skipped
    conf[rng.random(n) < 0.1] = 1.0  # the last bin is closed
    correct = rng.random(n) < conf
    got = expected_calibration_error(conf, correct, bins=bins)
    want = reference_ece(conf, correct, bins)
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, abs=1e-12)


def test_ece_edge_cases():
    assert math.isnan(expected_calibration_error(np.array([np.nan]), np.array([1])))
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([0, 0])) == 1.0
    # permutation invariant
    conf, corr = np.array([0.1, 0.5, 0.93, 0.4]), np.array([0, 1, 1, 0])
    p = np.array([2, 0, 3, 1])
    assert expected_calibration_error(conf[p], corr[p]) == expected_calibration_error(conf, corr)


@pytest.fixture(scope="module")
def pool():
    return [
        recommender_member("oracle", pool="remote"),
        recommender_member("noisy1", pool="remote", noise=0.15, seed=1),
        recommender_member("noisy2", pool="remote", noise=0.25, seed=2),
        recommender_member("mf", "most-frequent", pool="local"),
        recommender_member("noisy3", pool="local", noise=0.4, seed=3),
        recommender_member("noisy4", pool="local", noise=0.5, seed=4),
    ]


@pytest.fixture(scope="module")
def evaluation(pool):
    config = EvaluationConfig.tiny(bootstrap_rounds=50)
    return evaluate_strategies(
        pool,
        vignettes("test", 6),
        vignettes("val", 5),
        vocab(),
        key=jax.random.key(0),
        config=config,
        chemistry=chemistry_selector("informative"),
        progress=False,
    )


def test_strategies_draw_from_their_pools(evaluation, pool):
    remote = {m.name for m in pool if m.pool == "remote"}
    local = {m.name for m in pool if m.pool == "local"}
    rounds = evaluation.rounds
    assert list(rounds) == ["REMOTE", "LOCAL", "RANDOM", "CHEMISTRY", "PERFORMANCE"]
    for s, rs in rounds.items():
        assert len(rs) == 6 * 2  # vignettes x repetitions
        for r in rs:
            ens = [m.name for m in r.members]
            assert len(ens) == 3
            if s == "REMOTE":
                assert set(ens) <= remote and len(set(ens)) == 3
            if s == "LOCAL":
                assert set(ens) <= local and len(set(ens)) == 3
    for s in ("CHEMISTRY", "PERFORMANCE"):
        fixed = evaluation.fixed_ensembles[s]
        assert all(tuple(m.name for m in r.members) == fixed for r in rounds[s])
    # RANDOM draws with replacement from both pools
    random_names = {m.name for r in rounds["RANDOM"] for m in r.members}
    assert random_names & remote and random_names & local
    trials = [r.trial for r in rounds["REMOTE"]]
    assert len(set(trials)) == len(trials)


def test_performance_and_chemistry_use_the_calibration_history_only(evaluation, pool):
    eval_ids = {v.id for v in vignettes("test", 6)}
    calib = [row for row in evaluation.history if row["trial"].split()[0] not in eval_ids]
    assert {row["strategy"] for row in calib} == {"REMOTE", "LOCAL", "RANDOM"}
    assert len(calib) > 0
    names = [m.name for m in pool]
    assert evaluation.fixed_ensembles["PERFORMANCE"] == performance_ensemble(calib, names, 3)
    chem = recommend_from_history(calib, names, 3, mode="informative")
    assert evaluation.fixed_ensembles["CHEMISTRY"] == chem and len(chem) == 3
    mean = {n: np.mean([r["accuracy"] for r in calib if r["model"] == n]) for n in names}
    chosen = evaluation.fixed_ensembles["PERFORMANCE"]
    assert min(mean[n] for n in chosen) >= max(mean[n] for n in names if n not in chosen) - 1e-12


def test_report_means_match_the_rounds_and_intervals_bracket_them(evaluation):
    for rep in evaluation.reports:
        rounds = evaluation.rounds[rep.name]
        assert rep.rounds == 12 and rep.vignettes == 6
        assert rep.mean["jaccard"] == pytest.approx(np.mean([r.jaccard for r in rounds]))
        assert rep.mean["match"] == pytest.approx(np.mean([r.correct for r in rounds]))
        assert rep.mean["failures"] == 0.0
        conf = np.array([r.confidence for r in rounds])
        corr = np.array([r.correct for r in rounds])
        assert rep.mean["ece"] == pytest.approx(reference_ece(conf, corr, 10), nan_ok=True)
        assert rep.mean["undefined_confidence"] == pytest.approx(np.mean(np.isnan(conf)))
        var = [m.reviewer_variance for r in rounds for m in r.members]
        var = [v for v in var if math.isfinite(v)]
        assert rep.mean["reviewer_variance"] == pytest.approx(np.mean(var))
        rows = [h for h in evaluation.history if h["strategy"] == rep.name]
        rows = [h for h in rows if h["trial"] in {r.trial for r in rounds}]
        assert rep.mean["compound"] == pytest.approx(np.mean([h["accuracy"] for h in rows]))
        for k, _ in METRICS:
            if math.isfinite(rep.mean[k]) and math.isfinite(rep.low[k]):
                assert rep.low[k] - 1e-9 <= rep.high[k]
    remote, local = evaluation.reports[0], evaluation.reports[1]
    assert remote.mean["jaccard"] > local.mean["jaccard"]  # the oracle pool is better


def test_same_key_same_evaluation(pool):
    config = EvaluationConfig.tiny(strategies=("RANDOM",), bootstrap_rounds=20)
    args = (pool, vignettes("test", 3), [], vocab())
    a = evaluate_strategies(*args, key=jax.random.key(7), config=config, progress=False)
    b = evaluate_strategies(*args, key=jax.random.key(7), config=config, progress=False)
    c = evaluate_strategies(*args, key=jax.random.key(8), config=config, progress=False)

    def draws(e):
        return [[m.name for m in r.members] for r in e.rounds["RANDOM"]]

    assert draws(a) == draws(b) and draws(a) != draws(c)
    for k in ("jaccard", "match", "ece", "reviewer_variance"):
        assert a.reports[0].low[k] == b.reports[0].low[k]


def test_evaluation_input_errors(pool):
    v = vignettes("test", 3)
    kw = {"key": jax.random.key(0), "progress": False}
    with pytest.raises(ValueError, match="overlap"):
        evaluate_strategies(pool, v, v[:1], vocab(), **kw)
    with pytest.raises(ValueError, match="chemistry function"):
        evaluate_strategies(pool, v, vignettes("val", 2), vocab(), **kw)
    with pytest.raises(ValueError, match="calibration vignette set"):
        evaluate_strategies(
            pool, v, [], vocab(), config=EvaluationConfig(strategies=("PERFORMANCE",)), **kw
        )
    with pytest.raises(ValueError, match="remote pool has 3 members, fewer than"):
        evaluate_strategies(
            pool,
            v,
            [],
            vocab(),
            config=EvaluationConfig(strategies=("REMOTE",), ensemble_size=4),
            **kw,
        )
    with pytest.raises(ValueError, match="unique"):
        evaluate_strategies([pool[0], pool[0]], v, [], vocab(), **kw)
    with pytest.raises(ValueError, match="unknown strategy 'BEST'"):
        EvaluationConfig(strategies=("BEST",))
    with pytest.raises(ValueError, match="calibration_strategies: PERFORMANCE"):
        EvaluationConfig(calibration_strategies=("PERFORMANCE",))


def test_table_and_saved_files(evaluation, tmp_path):
    table = format_strategy_table(evaluation.reports)
    lines = table.splitlines()
    assert lines[0].startswith("| strategy | rounds | Jaccard |")
    assert len(lines) == 2 + len(evaluation.reports)
    remote = evaluation.reports[0]
    assert f"| REMOTE | 12 | {remote.mean['jaccard']:.3f} [{remote.low['jaccard']:.3f}," in table
    out = save_evaluation(evaluation, tmp_path / "run")
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "calibration.png", "history.csv", "history.jsonl", "metrics.json", "metrics.md",
        "rounds.jsonl", "strategies.png",
    ]  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["name"] for r in metrics["reports"]] == list(evaluation.rounds)
    rounds = (out / "rounds.jsonl").read_text().splitlines()
    assert len(rounds) == sum(len(r) for r in evaluation.rounds.values())
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].startswith("trial,model,temperature,latency,elapsed,id,result,quality")
    assert len(history) == 1 + len(evaluation.history)
    rows = read_history(out / "history.jsonl")  # valid in the performance-history schema
    assert [r.to_json() for r in rows] == [dict(h) for h in evaluation.history]
    assert (out / "strategies.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError):
        save_evaluation(evaluation, out)


def test_cli_consensus_run(tmp_path, capsys):
    c = cohort()
    save_dataset(c.dataset, tmp_path / "ds")
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "rules.json").write_text(json.dumps(c.rules.to_json()))
    config = {
        "data": str(tmp_path / "ds"),
        "truth": str(tmp_path / "truth"),
        "limit": 4,
        "calibration_limit": 3,
        "members": [
            {"name": "oracle", "kind": "oracle", "pool": "remote"},
            {"name": "noisy", "kind": "oracle", "pool": "remote", "noise": 0.3, "seed": 1},
            {"name": "mf", "kind": "most-frequent", "pool": "local"},
            {"name": "noisy-local", "kind": "oracle", "pool": "local", "noise": 0.5},
        ],
        "evaluation": {
            "strategies": ["REMOTE", "LOCAL", "CHEMISTRY", "PERFORMANCE"],
            "ensemble_size": 2,
            "repetitions": 1,
            "bootstrap_rounds": 20,
            "round": {"stage_timeout_s": 30},
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert main(["consensus", "run", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "PERFORMANCE ensemble (from the calibration history):" in text
    assert "CHEMISTRY ensemble (from the calibration history):" in text
    assert "| REMOTE | 4 |" in text and "| PERFORMANCE | 4 |" in text
    assert (out / "metrics.md").exists()
    resolved = load_config(ConsensusRunConfig, out / "config.yaml")  # the resolved config
    assert resolved == load_config(ConsensusRunConfig, path)
    config["members"][0]["kind"] = "gpt"
    path.write_text(yaml.safe_dump(config))
    assert main(["consensus", "run", "--config", str(path)]) == 2
    assert "members[0]" in capsys.readouterr().err


def test_paired_difference_against_the_first_strategy(evaluation):
    rounds = evaluation.rounds
    assert list(evaluation.paired) == ["LOCAL", "RANDOM", "CHEMISTRY", "PERFORMANCE"]
    for s, (mean, low, high) in evaluation.paired.items():
        per = {}
        for r in rounds[s]:
            per.setdefault(r.vignette, []).append(r.jaccard)
        ref = {}
        for r in rounds["REMOTE"]:
            ref.setdefault(r.vignette, []).append(r.jaccard)
        want = np.mean([np.mean(per[v]) - np.mean(ref[v]) for v in sorted(per)])
        assert mean == pytest.approx(want, abs=1e-12)
        assert low <= mean + 1e-12 and mean <= high + 1e-12
    zero = paired_difference(rounds["LOCAL"], rounds["LOCAL"], rng=np.random.default_rng(0))
    assert zero == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="different vignettes"):
        paired_difference(rounds["LOCAL"][:2], rounds["REMOTE"], rng=np.random.default_rng(0))
