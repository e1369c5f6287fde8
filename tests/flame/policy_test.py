"""Policy weights: save/load round trip, vocabulary growth, a pretrained folder as the start."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flame_jax.flame import (
    PolicyConfig,
    build_policy,
    load_policy,
    resize_vocabulary,
    save_policy,
)
from flame_jax.flame._pipeline import _pretrained_tokenizer
from flame_jax.policy import Decoder, DecoderConfig, load_tokenizer, write_tiny_model
from tests.flame.helpers import POLICY


def _logits(decoder, tokens):
    n = tokens.shape[1]
    h, _ = decoder(decoder.embed(tokens), jnp.arange(n)[None], kv_mask=jnp.ones((1, n), bool))
    return np.asarray(decoder.logits(h), np.float64)


def test_save_load_round_trip(encoder, tables, tmp_path):
    a = build_policy(POLICY, encoder.tokenizer, tables, seed=0)
    b = build_policy(POLICY, encoder.tokenizer, tables, seed=1)
    load_policy(b, save_policy(a, tmp_path / "p.npz"))
    for x, y in zip(nnx.to_flat_state(nnx.state(a)), nnx.to_flat_state(nnx.state(b)), strict=True):
        np.testing.assert_array_equal(np.asarray(x[1][...]), np.asarray(y[1][...]))
    wide = build_policy(
        PolicyConfig(hidden_size=32, intermediate_size=32, num_heads=2, num_kv_heads=1),
        encoder.tokenizer,
        tables,
        seed=0,
    )
    with pytest.raises(ValueError, match="another config"):
        load_policy(wide, tmp_path / "p.npz")


@pytest.mark.parametrize("tied", [True, False])
def test_resize_keeps_old_logits(tied):
    dec = Decoder(DecoderConfig.tiny(vocab_size=64, num_layers=1, tie_embeddings=tied),
                  rngs=nnx.Rngs(0))  # fmt: skip
    tokens = jnp.array([[1, 5, 9, 63]])
    before = _logits(dec, tokens)
    big = resize_vocabulary(dec, 128)
    after = _logits(big, tokens)
    assert after.shape[-1] == 128
    np.testing.assert_allclose(after[..., :64], before, rtol=1e-5, atol=1e-5)
    emb = np.asarray(big.embed_tokens.embedding[...], np.float64)
    np.testing.assert_allclose(emb[100], emb[:64].mean(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="smaller"):
        resize_vocabulary(dec, 32)


def test_pretrained_folder_as_start(dataset, tables, tmp_path):
    src = write_tiny_model(tmp_path / "hf", list(dataset.med_vocab.titles),
                           config=DecoderConfig.tiny(num_layers=1))  # fmt: skip
    _pretrained_tokenizer(str(src), tmp_path / "tok")
    tok = load_tokenizer(tmp_path / "tok")
    policy = build_policy(PolicyConfig(pretrained=str(src), projector_hidden=8), tok, tables,
                          seed=0)  # fmt: skip
    from flame_jax.policy import from_pretrained

    ref, _ = from_pretrained(src)
    tokens = jnp.array([[1, 7, 8]])
    np.testing.assert_allclose(_logits(policy.decoder, tokens), _logits(ref, tokens), rtol=1e-6)
    assert policy.projectors.drug is not None
