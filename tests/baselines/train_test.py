"""Training: loss decreases, exact resume, embeddings without leakage, the CLI end to end."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flame_jax.baselines import (
    BaselineConfig,
    assert_train_only,
    export_embeddings,
    init_model,
    iterate_history_batches,
    latest_epoch,
    load_embeddings,
    load_run,
    make_optimizer,
    make_train_step,
    restore_checkpoint,
    train_baseline,
)
from flame_jax.cli.main import main
from flame_jax.data import RaggedIds


@pytest.mark.parametrize("model", ["lr", "gamenet", "safedrug"])
def test_loss_decreases(tiny_dataset, model):
    ds = tiny_dataset
    # Without DDI control: the controller switches between loss terms, so its total may rise.
    config = BaselineConfig.tiny(model, dim=8, substructures=8, dropout=0.0, ddi_control=False)
    m, ctx = init_model(ds, config, key=jax.random.key(0))
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    opt = make_optimizer(config)
    opt_state = opt.init(params)
    step = make_train_step(graphdef, config, opt)
    batch = next(iterate_history_batches(ds, ds.split_rows("train"), 16, seed=0))
    batch = jax.tree.map(jnp.asarray, batch)
    losses = []
    for i in range(8):
        params, opt_state, loss, beta = step(params, rest, opt_state, batch, ctx,
                                             jax.random.key(i))  # fmt: skip
        losses.append(float(loss))
        assert 0.0 <= float(beta) <= 1.0
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]


@pytest.fixture(scope="module")
def straight(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "straight"
    config = BaselineConfig.tiny("lr", epochs=3, patience=3)
    return train_baseline(tiny_dataset, config, out, progress=False)


def _leaves(run, ds, which="last"):
    config = BaselineConfig.tiny("lr", epochs=3, patience=3)
    m, _ = init_model(ds, config, key=jax.random.key(1))
    _, params, _ = nnx.split(m, nnx.Param, ...)
    params, opt_state, progress = restore_checkpoint(
        run / "checkpoints" / which, params, make_optimizer(config).init(params)
    )
    return [np.asarray(x) for x in jax.tree.leaves((params, opt_state))], progress


def test_run_files_and_resume_is_exact(tiny_dataset, straight, tmp_path):
    ds = tiny_dataset
    run = straight.run
    for name in ("config.yaml", "run.json", "metrics.jsonl", "curves.png"):
        assert (run / name).is_file()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    assert latest_epoch(run / "checkpoints" / "last") == 3
    assert latest_epoch(run / "checkpoints" / "best") == straight.best_epoch
    # One epoch, then resume to three: the same bits as three epochs straight.
    out = tmp_path / "resumed"
    train_baseline(ds, BaselineConfig.tiny("lr", epochs=1, patience=3), out, progress=False)
    with pytest.raises(FileExistsError):
        train_baseline(ds, BaselineConfig.tiny("lr", epochs=1), out, progress=False)
    with pytest.raises(ValueError, match="learning_rate"):
        train_baseline(ds, BaselineConfig.tiny("lr", epochs=3, learning_rate=0.1), out,
                       resume=True, progress=False)  # fmt: skip
    resumed = train_baseline(
        ds, BaselineConfig.tiny("lr", epochs=3, patience=3), out, resume=True, progress=False
    )
    a, pa = _leaves(run, ds)
    b, pb = _leaves(out, ds)
    assert pa == pb
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert resumed.history == [
        {**h, "seconds": r["seconds"]} for h, r in zip(straight.history, resumed.history,
                                                       strict=True)
    ]  # fmt: skip


def test_embeddings_shapes_and_no_test_leakage(tiny_dataset, straight, tmp_path):
    ds = tiny_dataset
    trained = load_run(straight.run, dataset=ds)
    path = export_embeddings(trained, tmp_path / "embeddings.npz")
    e = load_embeddings(path)
    n, m = len(ds.visits), ds.num_meds
    assert e["patient"].shape == (n, len(ds.diag_vocab) + len(ds.proc_vocab))
    assert e["scores"].shape == (n, m) and e["drug"].shape == (m, e["patient"].shape[1])
    np.testing.assert_array_equal(e["visit_id"], ds.visits.visit_id)
    assert set(e["split"].tolist()) == {"train", "val", "test"}
    assert json.loads(path.with_suffix(".json").read_text())["fit_split"] == "train"
    with pytest.raises(AssertionError, match="outside the train split"):
        assert_train_only(ds, ds.split_rows("test"))
    # Scramble the test split (codes and labels): the fitted model must not change at all.
    test = set(ds.split_rows("test").tolist())
    rng = np.random.default_rng(0)
    meds = [sorted(rng.choice(m, 3, replace=False)) if i in test else list(x)
            for i, x in enumerate(ds.visits.med.to_lists())]  # fmt: skip
    diag = [[0, 1] if i in test else list(x) for i, x in enumerate(ds.visits.diag.to_lists())]
    visits = dataclasses.replace(
        ds.visits, med=RaggedIds.from_lists(meds), diag=RaggedIds.from_lists(diag)
    )
    scrambled = dataclasses.replace(ds, visits=visits)
    config = BaselineConfig.tiny("lr", epochs=3, patience=3)
    other = train_baseline(scrambled, config, tmp_path / "scrambled", progress=False)
    a, _ = _leaves(straight.run, ds)
    b, _ = _leaves(other.run, ds)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_cli_train_eval_export(tiny_dir, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["baseline", "train", "--model", "lr", "--data", str(tiny_dir), "--out", str(run),
            "--epochs", "1", "--quiet"]  # fmt: skip
    config = tmp_path / "c.yaml"
    config.write_text("dim: 8\nbatch_size: 32\n")
    assert main([*argv, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "trained lr for 1 epochs" in out and "embeddings.npz" in out
    assert main(argv) == 2  # the run exists and neither --overwrite nor --resume was given
    assert "not empty" in capsys.readouterr().err
    assert main(["baseline", "eval", "--run", str(run), "--rounds", "3", "--reference"]) == 0
    out = capsys.readouterr().out
    assert "| most-frequent |" in out and "| lr |" in out
    report = json.loads((run / "eval_test.json").read_text())["reports"][1]
    assert report["rounds"] == 3 and 0.0 <= report["mean"]["jaccard"] <= 1.0
    assert main(["baseline", "export", "--run", str(run), "--out", str(tmp_path / "e.npz")]) == 0
    assert load_embeddings(tmp_path / "e.npz")["drug"].shape[0] == 24
    bad = tmp_path / "bad.yaml"
    bad.write_text("dimension: 8\n")
    assert main([*argv[:-1], "--config", str(bad), "--overwrite"]) == 2
    assert "dimension" in capsys.readouterr().err
