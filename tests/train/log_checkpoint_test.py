"""Metric logs and step checkpoints: round trips, resume truncation, torn lines, mismatches."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flame_jax.train import Checkpointer, MetricsLog, read_metrics, save_training_curves


def test_log_resume_drops_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog.open(path)
    for step in range(1, 6):
        log.write(step, {"loss": np.float32(1.0 / step), "lr": jnp.asarray(0.1), "tag": "x"})
    with path.open("a") as f:
        f.write('{"step": 6, "loss": 0.1')  # a kill mid-write
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]
    log = MetricsLog.open(path, resume_step=3)
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]
    row = log.write(4, {"loss": float("nan")})
    assert row == {"step": 4, "loss": None}
    assert read_metrics(path)[-1] == row
    MetricsLog.open(path)  # a fresh run replaces the log
    assert read_metrics(path) == []


def test_log_rejects_non_scalars_and_corrupt_files(tmp_path):
    log = MetricsLog.open(tmp_path / "m.jsonl")
    with pytest.raises(ValueError, match="'v' is not a scalar"):
        log.write(1, {"v": np.ones(2)})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(bad)


def test_training_curves_png(tmp_path):
    rows = [{"step": s, "loss": 1 / s, "kl": None} for s in range(1, 5)]
    path = save_training_curves(rows, ["loss", "kl", "absent"], tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="none of the metrics"):
        save_training_curves(rows, ["absent"], tmp_path / "d.png")


def _state(seed):
    params = {"w": jax.random.normal(jax.random.key(seed), (3, 2)), "b": jnp.zeros(2)}
    opt = optax.adam(0.1)
    return {
        "params": params,
        "opt": opt.init(params),
        "key": jax.random.key_data(jax.random.key(seed)),
        "step": jnp.int32(seed),
    }


def test_checkpoint_round_trip_and_latest(tmp_path):
    with Checkpointer(tmp_path / "ckpt", keep=2) as ckpt:
        assert ckpt.latest_step() is None
        with pytest.raises(FileNotFoundError, match="no checkpoint"):
            ckpt.restore(_state(0))
        for step in (1, 2, 3):
            ckpt.save(step, _state(step), {"batches_seen": step * 4})
        assert ckpt.latest_step() == 3
        step, state, record = ckpt.restore(_state(0))
        assert step == 3 and record == {"batches_seen": 12}
        jax.tree.map(np.testing.assert_array_equal, state, jax.tree.map(np.asarray, _state(3)))
        key = jax.random.wrap_key_data(jnp.asarray(state["key"]))
        assert jax.random.normal(key) == jax.random.normal(jax.random.key(3))
        step, state, _ = ckpt.restore(_state(0), step=2)
        assert int(state["step"]) == 2
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["2", "3"]


def test_checkpoint_mismatch_is_a_clear_error(tmp_path):
    with Checkpointer(tmp_path / "c") as ckpt:
        ckpt.save(1, {"w": jnp.zeros((3, 2))}, {})
        with pytest.raises(ValueError, match="does not match|shape"):
            ckpt.restore({"w": jnp.zeros((4, 2))})
