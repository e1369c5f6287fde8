"""Constants shared by the FLAME stage tests."""

from flame_jax.flame import PolicyConfig

# A 16-wide, 2-layer decoder: every test shape stays tiny.
POLICY = PolicyConfig(
    hidden_size=16, intermediate_size=32, num_heads=2, num_kv_heads=1, projector_hidden=8
)
