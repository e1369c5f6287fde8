"""History batches and the models' invariance to padding."""

import jax
import numpy as np
import pytest
from flax import nnx

from flame_jax.baselines import BaselineConfig, build_model, graph_context, pad_histories


def test_histories_match_a_loop(tiny_dataset):
    ds = tiny_dataset
    rows = np.array([0, 1, 5, 17, len(ds.visits) - 1])
    b = pad_histories(ds, rows, batch_size=8)
    v = ds.visits
    for k, r in enumerate(rows):
        hist = [i for i in range(r + 1) if v.patient_id[i] == v.patient_id[r]]
        assert b.length[k] == len(hist)
        for t, i in enumerate(hist):
            assert sorted(b.diag[k, t][b.diag_mask[k, t]]) == sorted(v.diag[i])
            assert sorted(b.proc[k, t][b.proc_mask[k, t]]) == sorted(v.proc[i])
            want_past = v.med.multi_hot(ds.num_meds, np.array([i]))[0] if t < len(hist) - 1 else 0
            np.testing.assert_array_equal(b.past_meds[k, t], want_past)
        assert not b.visit_mask[k, len(hist) :].any()
        np.testing.assert_array_equal(b.meds[k], v.med.multi_hot(ds.num_meds, np.array([r]))[0])
    assert not b.mask[len(rows) :].any() and (b.row[len(rows) :] == -1).all()


@pytest.mark.parametrize("model", ["lr", "gamenet"])
def test_padding_changes_nothing(tiny_dataset, model):
    ds = tiny_dataset
    config = BaselineConfig.tiny(model, dim=8)
    m = build_model(config, len(ds.diag_vocab), len(ds.proc_vocab), ds.num_meds,
                    key=jax.random.key(0))  # fmt: skip
    ctx = graph_context(ds, molecules=False)
    graphdef, state = nnx.split(m)
    forward = jax.jit(lambda state, batch: nnx.merge(graphdef, state)(batch, ctx))
    rows = np.arange(12)
    small = forward(state, pad_histories(ds, rows))
    big = forward(state, pad_histories(ds, rows, batch_size=32, history_length=8, code_length=64))
    np.testing.assert_allclose(big.logits[:12], small.logits[:12], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(big.patient[:12], small.patient[:12], rtol=1e-5, atol=1e-5)
