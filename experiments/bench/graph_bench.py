"""Benchmark: molecular-encoder (GIN) throughput in molecules per second, eager vs jit vs buckets.

Workload: a stream of ``--batches`` (32) batches of drugs drawn (seeded, with replacement) from the
synthetic cohort's vocabulary (``--drugs`` drugs, their SMILES include salts and bare ions); each
batch has between ``--min-drugs`` and ``--max-drugs`` drugs, so its exact shape varies from batch to
batch. The encoder is ``flame_jax.graph.GINEncoder(dim=--dim, layers=--layers)``. A molecule is one
SMILES (one graph); throughput = real molecules / wall seconds. Cases, all in the same run:

* ``parse``: host side, RDKit parsing + atom/bond feature vectors of every molecule, uncached;
* ``featurize``: host side, ``molecule_batch`` of every batch (parse cache cleared first, so each
  distinct SMILES is parsed once, then cached) with joining and padding;
* ``eager``: the module called op by op on the ``jit_buckets`` batches; ``seconds`` is the median
  of ``--repeats`` later passes (JAX's per-primitive caches warm), ``cold_seconds`` the first.
  **The reference**: every other case reports ``speedup_vs_eager`` against it, and
  ``max_abs_diff_vs_eager`` of its embeddings;
* ``jit_fixed``: one jitted forward, every batch padded to one shape (the stream's largest bucket);
  compilation excluded (``compile_seconds``), median of ``--repeats`` passes: the steady state;
* ``jit_buckets``: a fresh jitted forward over batches padded to power-of-two buckets (the
  ``molecule_batch`` default, and the drug axis padded with SMILES-less drugs to the padded graph
  count, since ``num_drugs`` is static): ``seconds`` includes its compiles (one per bucket:
  ``compiles``), ``steady_seconds`` the median of ``--repeats`` later passes;
* ``jit_exact``: a fresh jitted forward over batches padded minimally (exact node, edge and graph
  counts + 1): it recompiles for nearly every batch (``compiles``); ``steady_seconds`` as above.

One JSON line per case, also written to ``experiments/bench/results/graph.json``.

Usage: ``.venv/bin/python experiments/bench/graph_bench.py [--batches 32] [--dim 64] [--layers 3]``
"""

import argparse
import json
import pathlib
import platform
import statistics
import time

import jax
import numpy as np
from flax import nnx

from flame_jax.data import SyntheticConfig, bucket_size, generate_cohort
from flame_jax.graph import GINEncoder, molecule_batch
from flame_jax.graph._featurize import _graph_arrays


def make_stream(vocab, batches, min_drugs, max_drugs, seed):
    rng = np.random.default_rng(seed)
    stream = []
    for _ in range(batches):
        n = int(rng.integers(min_drugs, max_drugs + 1))
        stream.append([vocab.smiles[i] for i in rng.integers(0, len(vocab.smiles), n)])
    return stream


def pad_drugs(drugs):
    """The drug axis padded with SMILES-less drugs to the batch's padded graph count (a power of
    two, tied to its size class), since ``num_drugs`` is static: one bucket, one compile."""
    graphs = molecule_batch(drugs).graph_mask.shape[0]
    return drugs + [()] * (max(graphs, bucket_size(len(drugs))) - len(drugs))


def exact_sizes(drugs):
    batch = molecule_batch(drugs)
    g, real = batch.graphs, int(batch.graph_mask.sum())
    nodes = int(g.n_node[:real].sum())
    edges = int(g.n_edge[:real].sum())
    return {"n_node": nodes + 1, "n_edge": edges, "n_graph": real + 1}


def run_stream(forward, batches, stream):
    """Wall seconds of encoding every batch, and the embeddings of each batch's real drugs."""
    start = time.perf_counter()
    outs = [jax.block_until_ready(forward(b)) for b in batches]
    seconds = time.perf_counter() - start
    return seconds, [o[: len(d)] for o, d in zip(outs, stream, strict=True)]


def median_stream(forward, batches, stream, repeats):
    """Median wall seconds over ``repeats`` passes of the stream (warm caches)."""
    return statistics.median(run_stream(forward, batches, stream)[0] for _ in range(repeats))


def max_diff(outs, reference):
    return max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(outs, reference, strict=True)
    )


def fresh_jit(graphdef, state):
    traces = []

    @jax.jit
    def forward(state, batch):
        traces.append(1)
        return nnx.merge(graphdef, state)(batch)

    return (lambda batch: forward(state, batch)), traces


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drugs", type=int, default=60)
    parser.add_argument("--batches", type=int, default=32)
    parser.add_argument("--min-drugs", type=int, default=16)
    parser.add_argument("--max-drugs", type=int, default=128)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=str(pathlib.Path(__file__).parent / "results" / "graph.json")
    )
    args = parser.parse_args()

    vocab = generate_cohort(SyntheticConfig.tiny(drugs=args.drugs)).dataset.med_vocab
    stream = make_stream(vocab, args.batches, args.min_drugs, args.max_drugs, args.seed)
    molecules = sum(len(s) for drugs in stream for s in drugs)
    encoder = GINEncoder(dim=args.dim, layers=args.layers, rngs=nnx.Rngs(args.seed))
    graphdef, state = nnx.split(encoder)
    common = {
        "bench": "graph_gin_encoder",
        "shapes": {
            "batches": args.batches,
            "drugs_per_batch": [args.min_drugs, args.max_drugs],
            "molecules": molecules,
            "dim": args.dim,
            "layers": args.layers,
            "vocab_drugs": len(vocab.smiles),
        },
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "machine": platform.machine(),
    }
    lines = []

    start = time.perf_counter()
    for drugs in stream:
        for smiles_list in drugs:
            for smiles in smiles_list:
                _graph_arrays.__wrapped__(smiles)  # uncached: RDKit parse + feature vectors
    parse_s = time.perf_counter() - start
    lines.append(dict(common, case="parse", seconds=parse_s, molecules_per_s=molecules / parse_s))

    _graph_arrays.cache_clear()
    start = time.perf_counter()
    jax.block_until_ready([molecule_batch(drugs) for drugs in stream])
    featurize_s = time.perf_counter() - start
    bucketed = [molecule_batch(pad_drugs(drugs)) for drugs in stream]
    lines.append(
        dict(common, case="featurize", seconds=featurize_s, molecules_per_s=molecules / featurize_s)
    )
    buckets = sorted(
        {
            (b.graphs.nodes.shape[0], b.graphs.edges.shape[0], b.graph_mask.shape[0], b.num_drugs)
            for b in bucketed
        }
    )

    cold_s, _ = run_stream(encoder, bucketed, stream)
    _, eager_out = run_stream(encoder, bucketed, stream)
    eager_s = median_stream(encoder, bucketed, stream, args.repeats)
    lines.append(
        dict(
            common,
            case="eager",
            seconds=eager_s,
            cold_seconds=cold_s,
            molecules_per_s=molecules / eager_s,
            reference=True,
        )
    )

    def report(case, seconds, outs, **extra):
        lines.append(
            dict(
                common,
                case=case,
                seconds=seconds,
                molecules_per_s=molecules / seconds,
                speedup_vs_eager=eager_s / seconds,
                max_abs_diff_vs_eager=max_diff(outs, eager_out),
                **extra,
            )
        )

    largest = {
        "n_node": max(b.graphs.nodes.shape[0] for b in bucketed),
        "n_edge": max(b.graphs.edges.shape[0] for b in bucketed),
        "n_graph": max(b.graph_mask.shape[0] for b in bucketed),
    }
    # num_drugs is static, so one shape needs one drug count as well: pad the drug axis too.
    most = max(len(d) for d in stream)
    fixed = [molecule_batch(d + [()] * (most - len(d)), **largest) for d in stream]
    forward, traces = fresh_jit(graphdef, state)
    start = time.perf_counter()
    jax.block_until_ready(forward(fixed[0]))
    compile_s = time.perf_counter() - start
    passes = [run_stream(forward, fixed, stream) for _ in range(args.repeats)]
    fixed_s = statistics.median(p[0] for p in passes)
    fixed_out = passes[0][1]
    report("jit_fixed", fixed_s, fixed_out, compile_seconds=compile_s, compiles=len(traces))

    forward, traces = fresh_jit(graphdef, state)
    first_s, outs = run_stream(forward, bucketed, stream)
    steady_s = median_stream(forward, bucketed, stream, args.repeats)
    report(
        "jit_buckets",
        first_s,
        outs,
        steady_seconds=steady_s,
        steady_speedup_vs_eager=eager_s / steady_s,
        compiles=len(traces),
        buckets_node_edge_graph_drug=[list(b) for b in buckets],
    )

    exact = [molecule_batch(drugs, **exact_sizes(drugs)) for drugs in stream]
    forward, traces = fresh_jit(graphdef, state)
    first_s, outs = run_stream(forward, exact, stream)
    steady_s = median_stream(forward, exact, stream, args.repeats)
    report(
        "jit_exact",
        first_s,
        outs,
        steady_seconds=steady_s,
        steady_speedup_vs_eager=eager_s / steady_s,
        compiles=len(traces),
    )

    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for line in lines:
            text = json.dumps(line, sort_keys=True)
            print(text)
            f.write(text + "\n")


if __name__ == "__main__":
    main()
