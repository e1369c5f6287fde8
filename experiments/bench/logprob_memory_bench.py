"""Benchmark: peak temporary memory of chunked vs naive per-token log-probs at vocabulary 128k.

Both paths compute log softmax(h @ W.T)[y] for ``tokens`` rows of final hidden states ``h``
([tokens, dim]) and an unembedding ``W`` ([vocab, dim]):

* ``naive``: full float32 logits [tokens, vocab], then ``jax.nn.logsumexp`` and a gather;
* ``chunked``: ``flame_jax.policy._scoring.chunked_token_logprobs`` (online log-sum-exp over
  vocabulary chunks, chunked custom VJP).

Memory is XLA's own account of the compiled program: ``jax.jit(f).lower(shapes).compile()
.memory_analysis().temp_size_in_bytes`` (temporaries, excluding arguments and outputs), for the
forward pass and for the gradient with respect to ``h`` (the LoRA case: the unembedding is
frozen) and with respect to both ``h`` and ``W``. Nothing is allocated for the large shapes;
a small case is also executed and the two paths are compared numerically
(``max_abs_diff`` of values and gradients).

Target: chunked / naive <= 1/4. One JSON line per case, also written to
``experiments/bench/results/logprob_memory.json``.

Usage: ``.venv/bin/python experiments/bench/logprob_memory_bench.py [--vocab 128256]
[--tokens 2048] [--dim 2048] [--chunk 4096]``
"""

import argparse
import json
import pathlib
import platform

import jax
import jax.numpy as jnp
import numpy as np

from flame_jax.policy._scoring import chunked_token_logprobs, naive_token_logprobs


def temp_bytes(fn, *shapes):
    return int(jax.jit(fn).lower(*shapes).compile().memory_analysis().temp_size_in_bytes)


def measure(tokens, dim, vocab, chunk, dtype):
    h = jax.ShapeDtypeStruct((tokens, dim), dtype)
    w = jax.ShapeDtypeStruct((vocab, dim), dtype)
    y = jax.ShapeDtypeStruct((tokens,), jnp.int32)
    paths = {
        "naive": naive_token_logprobs,
        "chunked": lambda h, w, y: chunked_token_logprobs(h, w, y, chunk_size=chunk),
    }
    out = {}
    for name, fn in paths.items():

        def loss(h, w, y, fn=fn):
            return fn(h, w, y).sum()

        out[name] = {
            "forward": temp_bytes(fn, h, w, y),
            "grad_h": temp_bytes(jax.grad(loss), h, w, y),
            "grad_h_w": temp_bytes(jax.grad(loss, argnums=(0, 1)), h, w, y),
        }
    return out


def check_small(seed=0):
    rng = np.random.default_rng(seed)
    h = jnp.asarray(rng.normal(size=(64, 32)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5000, 32)) * 0.3, jnp.float32)
    y = jnp.asarray(rng.integers(0, 5000, 64))
    chunked = lambda h, w: chunked_token_logprobs(h, w, y, chunk_size=512)
    naive = lambda h, w: naive_token_logprobs(h, w, y)
    diff = float(jnp.abs(jax.jit(chunked)(h, w) - jax.jit(naive)(h, w)).max())
    g1 = jax.jit(jax.grad(lambda h, w: chunked(h, w).sum(), (0, 1)))(h, w)
    g2 = jax.jit(jax.grad(lambda h, w: naive(h, w).sum(), (0, 1)))(h, w)
    gdiff = max(float(jnp.abs(a - b).max()) for a, b in zip(g1, g2, strict=True))
    return diff, gdiff


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--out", default="experiments/bench/results/logprob_memory.json")
    args = parser.parse_args()
    diff, gdiff = check_small()
    lines = []
    for dtype in args.dtypes:
        for tokens in args.tokens:
            m = measure(tokens, args.dim, args.vocab, args.chunk, jnp.dtype(dtype))
            line = {
                "bench": "logprob_memory",
                "tokens": tokens,
                "dim": args.dim,
                "vocab": args.vocab,
                "chunk": args.chunk,
                "dtype": dtype,
                "logits_f32_bytes": tokens * args.vocab * 4,
            }
            for part in ("forward", "grad_h", "grad_h_w"):
                naive, chunked = m["naive"][part], m["chunked"][part]
                line[f"{part}_naive_mib"] = round(naive / 2**20, 1)
                line[f"{part}_chunked_mib"] = round(chunked / 2**20, 1)
                line[f"{part}_ratio"] = round(chunked / naive, 4)
            line["small_check_max_abs_diff"] = diff
            line["small_check_grad_max_abs_diff"] = gdiff
            line["backend"] = jax.default_backend()
            line["machine"] = platform.machine()
            print(json.dumps(line), flush=True)
            lines.append(line)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))


if __name__ == "__main__":
    main()
