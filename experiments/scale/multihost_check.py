"""Multi-host smoke test: 3 sharded training steps of a tiny LoRA decoder on every process.

    python experiments/scale/multihost_check.py OUT [--mesh data=1,fsdp=2,tp=2]

Run it once per process (srun, ``gcloud ... --worker=all``, or by hand with
``FLAME_JAX_COORDINATOR`` / ``FLAME_JAX_NUM_PROCESSES`` / ``FLAME_JAX_PROCESS_ID``): it joins the
``jax.distributed`` run the environment describes, trains on a global mesh (default: the 2x2
``fsdp`` x ``tp`` mesh of the test; ``--mesh data=-1`` uses every device of every host), each
process loading only its own rows of every batch, checkpoints into OUT/checkpoints (OUT must be
shared by all hosts), and prints and writes ``OUT/result.<process>.json``: the loss of every
step and a checksum of the trained adapters. Every process must print the same numbers, and they
must equal a single-process run of the same mesh shape. ``tests/train/multihost_test.py`` runs it
as two CPU processes on one machine.
"""

import json
import sys
from pathlib import Path

GLOBAL_BATCH = 8
LENGTH = 12
STEPS = 3


def train(out: Path, devices=None, axes: str = "data=1,fsdp=2,tp=2") -> dict:
    """Trains the LoRA adapters for ``STEPS`` steps on the mesh ``axes``; the result record."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from flame_jax.flame._loop import LoopConfig, run_loop
    from flame_jax.policy import Decoder, DecoderConfig, LoraConfig, add_lora
    from flame_jax.train import (
        MeshConfig,
        OptimizerConfig,
        make_global_batch,
        make_mesh,
        process_rows,
    )

    mesh = make_mesh(MeshConfig.parse(axes), devices)
    cfg = DecoderConfig.tiny(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
        num_kv_heads=2, head_dim=8,
    )  # fmt: skip
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    add_lora(model, LoraConfig(rank=2, alpha=4.0), rngs=nnx.Rngs(1))
    lora = nnx.state(model, nnx.LoRAParam)
    keys = iter(jax.random.split(jax.random.key(2), len(jax.tree.leaves(lora))))
    nnx.update(model, jax.tree.map(lambda x: 0.3 * jax.random.normal(next(keys), x.shape), lora))
    # 8 rows per 4 devices, so that every data / fsdp shard of a large mesh gets rows.
    global_batch = GLOBAL_BATCH * max(1, mesh.devices.size // 4)
    rows = process_rows(global_batch, mesh)

    def loss_fn(module, batch):
        tokens = batch["tokens"]
        mask = jnp.ones(tokens.shape, bool)
        positions = jnp.broadcast_to(jnp.arange(LENGTH)[None], tokens.shape)
        hidden, _ = module(module.embed(tokens), positions, kv_mask=mask)
        logits = module.logits(hidden[:, :-1])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
        return jnp.mean(ce), {"ce": jnp.mean(ce)}

    def batch_fn(step, module):
        # Every process loads only its own rows of the step's global batch.
        full = np.random.default_rng([3, step]).integers(0, 64, (global_batch, LENGTH))
        local = {"tokens": full[rows].astype(np.int32)}
        return make_global_batch(local, mesh, global_batch), {}

    config = LoopConfig(
        steps=STEPS, batch_size=global_batch, checkpoint_every=2,
        optimizer=OptimizerConfig(learning_rate=1e-2),
    )  # fmt: skip
    logged = run_loop(
        model, wrt=nnx.LoRAParam, loss_fn=loss_fn, batch_fn=batch_fn, config=config, out=out,
        record={"test": "multihost"}, progress=False, mesh=mesh,
    )  # fmt: skip
    lora = nnx.state(model, nnx.LoRAParam)
    checksum = jax.jit(lambda t: sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(t)))(lora)
    spec = model.layers[0].self_attn.q_proj.kernel[...].sharding.spec
    return {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "global_batch": global_batch,
        "rows": rows.tolist(),
        "loss": [r["loss"] for r in logged],
        "checksum": float(checksum),
        "q_spec": str(spec),
    }


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder, shared by every host")
    parser.add_argument("--mesh", default="data=1,fsdp=2,tp=2", help="mesh axes (-1: the rest)")
    args = parser.parse_args(argv)
    from flame_jax.train import initialize_distributed

    initialize_distributed(timeout_s=120)
    import jax

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    result = train(out, axes=args.mesh)
    path = out / f"result.{jax.process_index()}.json"
    path.write_text(json.dumps(result))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
