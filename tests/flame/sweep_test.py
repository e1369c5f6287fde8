"""Sweeps: grid expansion and validation, host assignment, a real tiny sweep, interrupt + resume."""

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from flame_jax.flame import (
    FlameConfig,
    SweepConfig,
    assign_runs,
    expand_sweep,
    gather_sweep,
    load_sweep_config,
    run_sweep,
)
from flame_jax.flame._pipeline import grpo_dir

pytestmark = pytest.mark.slow  # sweeps run whole pipelines (make test-fast skips them)

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "flame"
TINY = str(EXPERIMENTS / "sweep_tiny.yaml")


def _main(argv):
    """``flame-jax ARGV`` through ``flame_jax.cli.main.main`` (exit status, error handling)."""
    from flame_jax.cli.main import main

    return main(argv)


# ------------------------------------------------------------------------------------------------
# expansion, ids, validation, assignment (no training)


def test_expansion_is_a_product_with_lambda_inside_each_run():
    c = SweepConfig(
        base="tiny",
        fixed=(("grpo.group_size", 3),),
        grid=(
            ("seed", (0, 1, 2)),
            ("grpo.lambdas", (0.0, 0.5, 2.0)),
            ("grpo.loop.optimizer.learning_rate", (1e-3, 3e-3)),
        ),
    )
    runs = expand_sweep(c)
    assert len(runs) == 6  # 3 seeds x 2 learning rates; lambda is not multiplied out
    assert [r.index for r in runs] == list(range(6))
    assert [(r.config.seed, r.config.grpo.loop.optimizer.learning_rate) for r in runs] == [
        (s, lr) for s in (0, 1, 2) for lr in (1e-3, 3e-3)
    ]
    for r in runs:
        assert r.config.grpo.lambdas == (0.0, 0.5, 2.0)
        assert r.config.grpo.group_size == 3
        # everything not overridden is the base preset's
        assert r.config.sft == FlameConfig.tiny().sft
    assert runs[0].group == (("grpo.loop.optimizer.learning_rate", 1e-3),)
    assert runs[0].run_id.startswith("seed-0_learning_rate-0.001-")
    # ids are stable, distinct, and a function of the overrides only
    assert [r.run_id for r in expand_sweep(c)] == [r.run_id for r in runs]
    assert len({r.run_id for r in runs}) == 6
    other = SweepConfig(base="tiny", grid=(("seed", (0, 1, 2)),))
    assert {r.run_id for r in expand_sweep(other)}.isdisjoint({r.run_id for r in runs})


def test_no_grid_is_one_run_of_the_base():
    runs = expand_sweep(SweepConfig(base="tiny"))
    assert len(runs) == 1 and runs[0].config == FlameConfig.tiny()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grid": (("grpo.lamdas", (0.0,)),)}, "GrpoStage has no field 'lamdas'"),
        ({"grid": (("seed.x", (0,)),)}, "key 'seed.x': seed is not a config section"),
        ({"grid": (("seed", ()),)}, "'seed' needs a non-empty list"),
        ({"grid": (("seed", (1, 1)),)}, "'seed' repeats a value"),
        ({"grid": (("grpo.lambdas", (0.0, -1.0)),)}, "values must be numbers >= 0, got -1.0"),
        ({"fixed": (("seed", 1),), "grid": (("seed", (0,)),)}, "'seed' is given twice"),
        ({"stages": ("cls", "sft")}, "ending with 'eval'"),
        ({"stages": ("cls", "evaluate")}, "ending with 'eval'"),
        ({"workers": 0}, "workers must be >= 1"),
        ({"rollout_prompts": 0}, "rollout_prompts must be >= 1"),
    ],
)
def test_config_errors_name_the_key_and_value(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SweepConfig(base="tiny", **kwargs)


def test_bad_values_are_reported_with_the_run_and_field():
    c = SweepConfig(base="tiny", grid=(("grpo.group_size", (2, 1)),))
    with pytest.raises(
        ValueError, match=r"sweep run 1 \(grpo.group_size=1\): .*group_size must be >= 2, got 1"
    ):
        expand_sweep(c)
    c = SweepConfig(base="tiny", grid=(("grpo.loop.optimizer.learning_rate", ("fast",)),))
    with pytest.raises(ValueError, match="learning_rate: expected a number, got 'fast'"):
        expand_sweep(c)
    with pytest.raises(ValueError, match="neither a preset"):
        expand_sweep(SweepConfig(base="no/such/file.yaml"))


def test_yaml_loading(tmp_path):
    c = load_sweep_config(TINY)
    assert c.base == "tiny" and c.lambdas == (0.0, 1.0)
    assert [k for k, _ in c.run_axes] == ["seed"]
    paper = load_sweep_config(EXPERIMENTS / "sweep_paper.yaml")
    runs = expand_sweep(paper)  # the base path is relative to the sweep file
    assert len(runs) == 5 and runs[0].config.policy.pretrained is not None
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: tiny\ngird: {seed: [0]}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: gird: unknown key"):
        load_sweep_config(bad)
    bad.write_text("base: tiny\ngrid: {seed: 3}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: grid.seed: expected a list of values"):
        load_sweep_config(bad)
    bad.write_text("base: tiny\ngrid: {grpo.nope: [1]}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: grid: key 'grpo.nope'"):
        load_sweep_config(bad)


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_hosts_get_disjoint_runs_covering_the_sweep(count):
    runs = expand_sweep(
        SweepConfig(base="tiny", grid=(("seed", (0, 1, 2, 3)), ("grpo.group_size", (2, 3))))
    )
    shares = [assign_runs(runs, process_index=i, process_count=count) for i in range(count)]
    ids = [r.run_id for share in shares for r in share]
    assert sorted(ids) == sorted(r.run_id for r in runs)  # covering and disjoint
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced
    with pytest.raises(ValueError, match="process index 2 is not in"):
        assign_runs(runs, process_index=2, process_count=2)


def test_cli_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: tiny\ngrid: {seed: [0, 0]}\n")
    assert _main(["sweep", str(bad), "--out", str(tmp_path / "s")]) == 2
    assert "flame-jax: error:" in capsys.readouterr().err
    assert _main(["sweep", TINY, "--out", str(tmp_path / "s"), "--process-index", "1"]) == 2
    assert "--process-count" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# a real tiny sweep: 2 seeds x 2 lambdas (shared by the tests below)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "tiny"
    assert _main(["sweep", TINY, "--out", str(out), "--quiet"]) == 0
    return out


def _reference_rows(config, out):
    """Mean and std (ddof 1) over seeds of each run's eval/metrics.json, in float64."""
    runs = expand_sweep(config)
    rows = {}
    for lam in config.lambdas:
        name = f"pi_list after GRPO (lambda={lam:g})"
        per_seed = []
        for r in runs:
            data = json.loads((out / "runs" / r.run_id / "eval" / "metrics.json").read_text())
            per_seed.append(next(x for x in data["reports"] if x["name"] == name)["mean"])
        rows[lam] = {
            m: (np.mean([p[m] for p in per_seed]), np.std([p[m] for p in per_seed], ddof=1))
            for m in ("jaccard", "f1", "ddi_rate", "num_meds")
        }
    return rows


def test_sweep_writes_tables_and_plots(sweep):
    for name in ("sweep.json", "results.csv", "results.md", "frontier.png", "rollouts.csv",
                 "rollouts.md", "rollouts.png", "state/host-0-of-1.json"):  # fmt: skip
        assert (sweep / name).is_file(), name
    assert (sweep / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = load_sweep_config(TINY)
    runs = expand_sweep(config)
    state = json.loads((sweep / "state/host-0-of-1.json").read_text())
    assert {k: v["status"] for k, v in state["runs"].items()} == {r.run_id: "done" for r in runs}
    tables = gather_sweep(runs, sweep)
    assert tables.missing == () and len(tables.finished) == 2
    grpo = [r for r in tables.results if r["recommender"] == "pi_list after GRPO"]
    assert [r["lambda"] for r in grpo] == [0.0, 1.0]
    want = _reference_rows(config, sweep)
    for row in grpo:
        assert row["seeds"] == 2
        for m, (mean, std) in want[row["lambda"]].items():
            assert math.isclose(row[f"{m}_mean"], mean, abs_tol=1e-12), m
            assert math.isclose(row[f"{m}_std"], std, abs_tol=1e-12), m
    md = (sweep / "results.md").read_text()
    assert "| pi_list after GRPO | 1 | 2 |" in md and "pi_cls alone" in md
    csv_head = (sweep / "results.csv").read_text().splitlines()[0]
    assert csv_head.startswith("recommender,lambda,seeds,jaccard_mean,jaccard_std")
    # rollouts: every trained lambda's policy scored under every lambda, finite statistics
    roll = tables.rollouts
    assert sorted((r["trained_lambda"], r["lambda"]) for r in roll) == [
        (a, b) for a in (0.0, 1.0) for b in (0.0, 1.0)
    ]
    for r in roll:
        assert all(np.isfinite(r[k]) for k in ("reward_mean", "reward_std")), r
        assert 0.0 <= r["zero_advantage_fraction"] <= 1.0


def test_dry_run_reports_state(sweep, capsys):
    assert _main(["sweep", TINY, "--out", str(sweep), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs x lambdas [0.0, 1.0]" in out and out.count("[done]") == 2


def test_other_sweep_in_the_folder_is_refused(sweep, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text(Path(TINY).read_text().replace("seed: [0, 1]", "seed: [0, 1, 2]"))
    assert _main(["sweep", str(other), "--out", str(sweep), "--quiet"]) == 2
    assert "holds another sweep" in capsys.readouterr().err


def test_interrupted_sweep_resumes_where_it_stopped(sweep, tmp_path, capsys):
    config = load_sweep_config(TINY)
    first, second = expand_sweep(config)
    out = tmp_path / "resumed"
    shutil.copytree(sweep, out)
    for name in ("results.csv", "results.md", "frontier.png", "rollouts.csv"):
        (out / name).unlink()
    # The first run finished; the second was killed during its last GRPO training (after the
    # checkpoint of step 2 of 3), before evaluation.
    run2 = out / "runs" / second.run_id
    (run2 / "sweep_result.json").unlink()
    shutil.rmtree(run2 / "eval")
    lam_dir = grpo_dir(run2, config.lambdas[-1])
    (lam_dir / "policy.npz").unlink()
    shutil.rmtree(lam_dir / "checkpoints" / "3")
    first_result = out / "runs" / first.run_id / "sweep_result.json"
    stamp = os.stat(first_result).st_mtime_ns
    lines = []
    tables = run_sweep(config, out, progress=False, log=lines.append)
    started = [line for line in lines if line.startswith("[sweep] run ")]
    assert len(started) == 1 and second.run_id in started[0]  # the finished run was not re-run
    assert "1 already done, 1 to run now" in lines[0]
    assert os.stat(first_result).st_mtime_ns == stamp
    assert (lam_dir / "policy.npz").is_file()
    # the resumed sweep's tables equal the uninterrupted sweep's
    assert (out / "results.csv").read_text() == (sweep / "results.csv").read_text()
    assert (out / "rollouts.csv").read_text() == (sweep / "rollouts.csv").read_text()
    assert tables.missing == ()


def test_max_runs_stops_early_and_lists_the_missing_runs(sweep, tmp_path):
    config = load_sweep_config(TINY)
    first, second = expand_sweep(config)
    out = tmp_path / "partial"
    shutil.copytree(sweep, out)
    shutil.rmtree(out / "runs" / second.run_id)
    tables = run_sweep(config, out, max_runs=0, progress=False, log=lambda _m: None)
    assert tables.finished == (first.run_id,) and tables.missing == (second.run_id,)
    assert all(r["seeds"] == 1 for r in tables.results)
    assert all(r["jaccard_std"] == 0.0 for r in tables.results)


# ------------------------------------------------------------------------------------------------
# scheduling over local devices (threads), with a stand-in for the training run


def test_workers_run_each_run_on_its_own_device(tmp_path, monkeypatch):
    import threading

    import jax
    import jax.numpy as jnp

    from flame_jax._io import write_json_atomic
    from flame_jax.flame import _sweep

    seen = {}
    lock = threading.Lock()

    def fake_execute(run, root, config, *, progress, log):
        device = next(iter(jnp.zeros(()).devices()))
        with lock:
            seen[run.run_id] = (device, threading.get_ident())
        result = {"run_id": run.run_id, "point": [], "rows": [], "rollouts": [], "seconds": 0.0}
        write_json_atomic(root / "runs" / run.run_id / "sweep_result.json", result)
        return result

    monkeypatch.setattr(_sweep, "_execute", fake_execute)
    config = SweepConfig(base="tiny", grid=(("seed", (0, 1, 2, 3, 4)),), workers=3)
    runs = expand_sweep(config)
    tables = run_sweep(config, tmp_path / "s", progress=False, log=lambda _m: None)
    assert tables.missing == () and len(seen) == 5
    devices = jax.local_devices()[:3]
    for r in runs:  # run k of this host on local device k mod 3, in its own thread
        assert seen[r.run_id][0] == devices[r.index % 3]
    assert len({seen[r.run_id][1] for r in runs}) == 3
    state = json.loads((tmp_path / "s" / "state" / "host-0-of-1.json").read_text())
    assert all(v["status"] == "done" for v in state["runs"].values())
    # a second call finds everything done and runs nothing
    seen.clear()
    run_sweep(config, tmp_path / "s", progress=False, log=lambda _m: None)
    assert seen == {}


def test_a_failed_run_is_recorded_and_raised(tmp_path, monkeypatch):
    from flame_jax.flame import _sweep

    def boom(run, root, config, *, progress, log):
        raise ValueError(f"run {run.run_id} exploded")

    monkeypatch.setattr(_sweep, "_execute", boom)
    config = SweepConfig(base="tiny", grid=(("seed", (0, 1)),))
    with pytest.raises(ValueError, match="exploded"):
        run_sweep(config, tmp_path / "s", progress=False, log=lambda _m: None)
    state = json.loads((tmp_path / "s" / "state" / "host-0-of-1.json").read_text())
    assert [v["status"] for v in state["runs"].values()] == ["failed", "pending"]


def test_a_sweep_written_before_a_new_config_field_still_resumes(tmp_path, monkeypatch):
    from flame_jax.flame import _sweep

    monkeypatch.setattr(_sweep, "_execute", lambda *a, **k: pytest.fail("nothing should run"))
    config = SweepConfig(base="tiny", grid=(("seed", (0,)),))
    out = tmp_path / "s"
    run_sweep(config, out, max_runs=0, progress=False, log=lambda _m: None)
    record = json.loads((out / "sweep.json").read_text())
    del record["base"]["threshold"]  # an older version had no such field: its default applies
    (out / "sweep.json").write_text(json.dumps(record))
    run_sweep(config, out, max_runs=0, progress=False, log=lambda _m: None)
    record["base"]["eval_rounds"] = 7  # a different base is another sweep
    (out / "sweep.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="holds another sweep"):
        run_sweep(config, out, max_runs=0, progress=False, log=lambda _m: None)
