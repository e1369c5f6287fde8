"""The FLAME stages end to end on tiny shapes: CLI, resumable stages, exact GRPO resume."""

import dataclasses
import pathlib
import shutil

import numpy as np
import pytest
import yaml

from flame_jax.cli.main import main
from flame_jax.config import dump_config, load_config
from flame_jax.flame import FlameConfig, LoopConfig, PolicyConfig
from flame_jax.flame._pipeline import _Run, _stage_grpo, grpo_dir
from flame_jax.train import read_metrics

pytestmark = pytest.mark.slow  # the whole FLAME pipeline, stage by stage (not in test-fast)

# No knowledge fusion here (no baselines to fit): the stages and their plumbing are the subject.
CONFIG = FlameConfig.tiny(
    policy=PolicyConfig(
        hidden_size=16, intermediate_size=32, num_heads=2, num_kv_heads=1, fusion=False
    ),
)
STAGES = ("tokenizer", "cls", "sft", "grpo", "eval")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("flame")
    cfg = dump_config(CONFIG, root / "flame.yaml")
    out = root / "run"
    for stage in STAGES:
        assert main(["flame", stage, "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    # Tests below add stages to the run (run_demo adds the baselines and re-evaluates), so the
    # determinism test compares against this copy of the run as the stages wrote it.
    shutil.copytree(out, root / "as_written")
    return out


def test_config_round_trips(tmp_path):
    for config in (CONFIG, FlameConfig.demo(), FlameConfig()):
        assert load_config(FlameConfig, dump_config(config, tmp_path / "c.yaml")) == config
    with pytest.raises(ValueError, match="train_mode"):
        FlameConfig(train_mode="half")
    assert FlameConfig.demo().grpo.loop.micro_batches == 4
    with pytest.raises(ValueError, match=r"FlameConfig.sft.micro_batches must be 1: only the GRPO"):
        FlameConfig(sft=LoopConfig(batch_size=4, micro_batches=2))


def test_stages_write_their_outputs(run_dir, capsys):
    for path in ("config.yaml", "cls/policy.npz", "cls/scores.npz", "cls/error_profile.json",
                 "cls/curves.png", "sft/policy.npz", "eval/table.md", "eval/tradeoff.png",
                 "eval/metrics.json"):  # fmt: skip
        assert (run_dir / path).is_file(), path
    for lam in CONFIG.grpo.lambdas:
        rows = read_metrics(grpo_dir(run_dir, lam) / "metrics.jsonl")
        assert [r["step"] for r in rows] == [1, 2, 3]
        for key in ("reward", "reward_jaccard", "reward_ddi", "reward_refusal", "kl",
                    "clip_fraction", "advantage_std", "tokens_per_s"):  # fmt: skip
            assert np.isfinite(rows[-1][key]), key
    table = (run_dir / "eval" / "table.md").read_text()
    for name in ("most-frequent", "pi_cls alone", "pi_list after SFT",
                 "pi_list after GRPO (lambda=0)", "pi_list after GRPO (lambda=1)",
                 "oracle (planted)"):  # fmt: skip
        assert name in table
    # finished stages are skipped: a second run changes nothing and prints the same table
    assert main(["flame", "eval", "--out", str(run_dir), "--config",
                 str(run_dir / "config.yaml"), "--quiet"]) == 0  # fmt: skip
    assert (run_dir / "eval" / "table.md").read_text() in capsys.readouterr().out
    # a run folder refuses another config
    other = tmp_path_yaml = run_dir.parent / "other.yaml"
    dump_config(dataclasses.replace(CONFIG, seed=5), tmp_path_yaml)
    with pytest.raises(SystemExit) if False else pytest.raises(ValueError, match="another config"):
        from flame_jax.flame import run_pipeline

        run_pipeline(load_config(FlameConfig, other), run_dir, stages=("eval",), progress=False)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == CONFIG.seed


def test_run_demo_resumes_a_run_and_reports_its_checks(run_dir, monkeypatch):
    from flame_jax.flame import demo_checks, run_demo

    monkeypatch.setattr(FlameConfig, "demo", classmethod(lambda cls: CONFIG))
    lines = []
    table, summary = run_demo(run_dir, overwrite=False, progress=False, log=lines.append)
    assert "| pi_cls alone |" in table and "| pi_list after GRPO (lambda=1) |" in table
    assert summary["checks"] == demo_checks(summary)
    assert set(summary["checks"]) == {"grpo_beats_cls", "lambda_lowers_ddi"}
    assert any("beats pi_cls alone on Jaccard (test):" in line for line in lines)
    assert (run_dir / "baselines" / "lr" / "test_metrics.json").is_file()


def test_grpo_resume_is_exact(run_dir, tmp_path):
    """Stopped after step 3 (checkpoint at 2), resumed: steps 3-4 equal an uninterrupted run."""
    lam = CONFIG.grpo.lambdas[-1]
    config = dataclasses.replace(
        CONFIG,
        grpo=dataclasses.replace(
            CONFIG.grpo, loop=dataclasses.replace(CONFIG.grpo.loop, steps=4, checkpoint_every=2)
        ),
    )
    outs = []
    for name in ("straight", "resumed"):
        out = tmp_path / name
        out.mkdir()
        for part in ("tokenizer", "cls", "sft"):
            shutil.copytree(run_dir / part, out / part)
        run = _Run(config, out, False, lambda s: None)
        if name == "resumed":
            _stage_grpo(run, lam, stop_after=3)  # "killed" after logging step 3
            assert [r["step"] for r in read_metrics(grpo_dir(out, lam) / "metrics.jsonl")] == [
                1, 2, 3]  # fmt: skip
        _stage_grpo(run, lam)
        outs.append(read_metrics(grpo_dir(out, lam) / "metrics.jsonl"))
    straight, resumed = outs
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    timing = {"seconds", "tokens_per_s"}
    for a, b in zip(straight, resumed, strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }
    assert (grpo_dir(tmp_path / "resumed", lam) / "policy.npz").is_file()


def test_experiment_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "experiments" / "flame"
    configs = {
        p.stem: load_config(FlameConfig, p)
        for p in sorted(root.glob("*.yaml"))
        if not p.stem.startswith("sweep_")  # sweep files: tests/flame/sweep_test.py
    }
    assert set(configs) >= {"paper", "ablation_outcome_only", "ablation_no_fusion", "lambda_sweep"}
    assert configs["ablation_outcome_only"].grpo.step_weight == 0.0
    assert not configs["ablation_no_fusion"].policy.fusion
    assert not configs["ablation_no_fusion"].prompt.entity_slots
    paper = configs["paper"]
    assert paper.grpo.group_size == 8 and paper.grpo.lora.rank == 32
    assert paper.grpo.loop.optimizer.learning_rate == 1e-5
    # the paper's setting keeps the original's choices where the demo departs from them
    assert paper.prompt.candidates == 0 and not paper.prompt.interaction_notes
    assert paper.list_holdout == 0 and paper.sft_prompts == "synthetic"
    assert not paper.constrain_edits and paper.grpo.prompts == "synthetic"
    assert len(configs["lambda_sweep"].grpo.lambdas) >= 2
    # the CPU ablations differ from the demo only in what they vary
    demo = FlameConfig.demo()
    for name in ("ablation_outcome_only", "ablation_no_fusion", "lambda_sweep"):
        c = configs[name]
        assert c.synthetic == demo.synthetic, name
        same = dataclasses.replace(
            c.grpo, lambdas=demo.grpo.lambdas, step_weight=demo.grpo.step_weight
        )
        assert same == demo.grpo, name


def test_interacting_remove_prompts_keep_every_add_and_the_unsafe_removes():
    from flame_jax.flame import ListExamples, PaddedPrompts, select_examples
    from flame_jax.flame._pipeline import _keep_interacting_removes

    rng = np.random.default_rng(3)
    m, n = 9, 40
    ddi = np.zeros((m, m), bool)
    ddi[1, 4] = ddi[4, 1] = ddi[2, 7] = ddi[7, 2] = True
    tasks = tuple(rng.choice(["add", "remove"], size=n).tolist())
    initial = tuple(
        tuple(sorted(rng.choice(m, size=rng.integers(0, 5), replace=False).tolist()))
        for _ in range(n)
    )
    cands = tuple((0, 3) if t == "add" else () for t in tasks)
    prompts = PaddedPrompts(*(rng.integers(0, 9, (n, 6)) for _ in range(4)))
    targets = rng.integers(0, 9, (n, 3))
    ex = ListExamples(prompts, targets, targets > 4, np.arange(n) * 10, tasks, initial, cands)
    keep = _keep_interacting_removes(ex, ddi)
    want = [i for i in range(n) if tasks[i] == "add" or {1, 4} <= set(initial[i])
            or {2, 7} <= set(initial[i])]  # fmt: skip
    assert keep.tolist() == want and any(tasks[i] == "remove" for i in want)
    sub = select_examples(ex, keep)
    assert sub.tasks == tuple(tasks[i] for i in want) and sub.rows.tolist() == [
        10 * i for i in want
    ]
    assert sub.initial == tuple(initial[i] for i in want)
    assert sub.candidates == tuple(cands[i] for i in want)
    for a, b in zip(sub.prompts, ex.prompts, strict=True):
        np.testing.assert_array_equal(a, b[keep])
    np.testing.assert_array_equal(sub.target_mask, ex.target_mask[keep])
    with pytest.raises(ValueError, match="select_examples"):
        select_examples(ex, np.array([], np.int64))
    with pytest.raises(ValueError, match="remove_prompts"):
        FlameConfig.demo(grpo=dataclasses.replace(CONFIG.grpo, remove_prompts="some"))


def test_per_task_adapters_train_and_edit_each_task_with_its_own_policy(run_dir, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    """ "per_task": one GRPO run per task on that task's prompts only, and each task's edits at
    evaluation made by its own policy; the final sets are (P0 | Add_add) - Remove_remove."""
    import flame_jax.flame._evaluate as evaluate
    import flame_jax.flame._grpo as grpo
    from flame_jax.flame._pipeline import EDIT_TASKS, _edit_final, _p0, grpo_policies
    from flame_jax.flame._sweep import rollout_statistics

    config = dataclasses.replace(CONFIG, grpo=dataclasses.replace(CONFIG.grpo, adapters="per_task"))
    lam = config.grpo.lambdas[-1]
    for part in ("tokenizer", "cls", "sft"):
        shutil.copytree(run_dir / part, tmp_path / part)
    run = _Run(config, tmp_path, False, lambda s: None)

    seen = []
    make_rollout = grpo.make_rollout

    def spy_rollout(ex, *args, **kwargs):
        seen.append(set(ex.tasks))
        return make_rollout(ex, *args, **kwargs)

    monkeypatch.setattr(grpo, "make_rollout", spy_rollout)
    _stage_grpo(run, lam)
    assert seen == [{"add"}, {"remove"}]
    paths = grpo_policies(tmp_path, config.grpo, lam)
    assert paths == {t: grpo_dir(tmp_path, lam) / t / "policy.npz" for t in EDIT_TASKS}
    for task in EDIT_TASKS:
        assert paths[task].is_file()
        rows = read_metrics(paths[task].parent / "metrics.jsonl")
        assert [r["step"] for r in rows] == [1, 2, 3]
    add_w, rem_w = (dict(np.load(paths[t])) for t in EDIT_TASKS)
    assert any(not np.array_equal(add_w[k], rem_w[k]) for k in add_w)  # two trainings
    _stage_grpo(run, lam)  # finished: skipped
    assert len(seen) == 2
    shared = grpo_policies(tmp_path, CONFIG.grpo, lam)
    assert shared == dict.fromkeys(EDIT_TASKS, grpo_dir(tmp_path, lam) / "policy.npz")

    # evaluation: the add examples go to the add policy, the remove examples to the remove one
    loaded, calls = [], []
    policy_fn, greedy = run.policy, evaluate.greedy_edits
    monkeypatch.setattr(run, "policy", lambda e, t, p: loaded.append(p) or policy_fn(e, t, p))

    def spy_edits(policy, ex, *args, **kwargs):
        states = greedy(policy, ex, *args, **kwargs)
        calls.append((loaded[-1], ex.tasks, ex.rows.tolist(), states))
        return states

    monkeypatch.setattr(evaluate, "greedy_edits", spy_edits)
    rows = run.dataset.split_rows("test")
    p0 = _p0(run)[1][rows]
    final = _edit_final(run, paths, run.encoder(), run.tables(), rows, p0)
    assert [c[0] for c in calls] == [paths["add"], paths["remove"]]
    assert set(calls[0][1]) == {"add"} and set(calls[1][1]) == {"remove"}
    assert calls[0][2] == calls[1][2] == rows.tolist()
    want = evaluate.final_sets([np.flatnonzero(p).tolist() for p in p0], calls[0][3], calls[1][3],
                               run.dataset.num_meds)  # fmt: skip
    np.testing.assert_array_equal(final, want)

    # the sweep's rollout statistics read both tasks' policies
    stats = rollout_statistics(
        dataclasses.replace(config, grpo=dataclasses.replace(config.grpo, lambdas=(lam,))),
        tmp_path,
        prompts=2,
    )
    assert len(stats) == 1 and all(np.isfinite(v) for k, v in stats[0].items())
    with pytest.raises(ValueError, match="adapters"):
        FlameConfig.demo(grpo=dataclasses.replace(CONFIG.grpo, adapters="both"))


# Files whose bytes carry wall-clock time by design: logged throughput and durations, the plots of
# them, and Orbax's checkpoint metadata (timestamps, random file names).
_TIMED = ("metrics.jsonl", "curves.png")


def test_same_machine_same_seed_gives_identical_bytes(run_dir, tmp_path):
    """The determinism the README promises: the same stages with the same seed, in a fresh process
    with another hash seed, write byte-identical results (scores, policies, the table, metrics,
    plots of results); only timings and checkpoint metadata differ, and the logged metrics differ
    in their timing fields alone."""
    import os
    import subprocess
    import sys

    out = tmp_path / "again"
    code = (
        "import sys; from flame_jax.cli.main import main\n"
        f"for s in {STAGES!r}:\n"
        "    argv = ['flame', s, '--config', sys.argv[1], '--out', sys.argv[2], '--quiet']\n"
        "    assert main(argv) == 0\n"
    )
    seed = "54321" if os.environ.get("PYTHONHASHSEED") == "12345" else "12345"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    cfg = run_dir.parent / "flame.yaml"
    done = subprocess.run([sys.executable, "-c", code, str(cfg), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    run_dir = run_dir.parent / "as_written"
    results = [p.relative_to(out) for p in sorted(out.rglob("*")) if p.is_file()
               and "checkpoints" not in p.parts]  # fmt: skip
    for path in ("eval/table.md", "eval/metrics.json", "eval/metrics.png", "eval/tradeoff.png",
                 "cls/scores.npz", "cls/policy.npz", "sft/policy.npz"):  # fmt: skip
        assert pathlib.Path(path) in results, path
    assert sum(p.name == "policy.npz" for p in results) == 2 + len(CONFIG.grpo.lambdas)
    timing = {"seconds", "tokens_per_s"}
    for rel in results:
        if rel.name == "metrics.jsonl":
            a, b = (read_metrics(root / rel) for root in (run_dir, out))
            assert [{k: v for k, v in r.items() if k not in timing} for r in a] == [
                {k: v for k, v in r.items() if k not in timing} for r in b
            ], rel
        elif rel.name not in _TIMED:
            assert (run_dir / rel).read_bytes() == (out / rel).read_bytes(), rel
