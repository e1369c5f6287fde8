"""Benchmark: greedy decode throughput of flame_jax's jitted KV-cache generator vs HF ``generate``.

Both sides decode with the SAME weights: a random tiny decoder is written with
``flame_jax.policy.save_pretrained`` and read back by ``transformers.LlamaForCausalLM
.from_pretrained``. Same batch, same left-padded prompts (lengths drawn in [prompt/2, prompt]),
same number of new tokens (EOS disabled on both sides: HF gets ``min_new_tokens = max_new_tokens``),
greedy, on CPU, in the same process. Reported per case (one JSON line each, all written to
``experiments/bench/results/decode.json``):

* ``jax_tokens_per_s``: batch * new / median wall time of ``generate`` after compilation (the
  call includes the host-side bucketing and the device-to-host copy of the result);
* ``jax_first_call_s`` and ``jax_compile_s`` (first call minus the median steady call);
* ``hf_tokens_per_s``: the same for ``model.generate(do_sample=False)`` under ``torch.no_grad``;
* ``speedup`` = jax / hf tokens per second; ``tokens_match``: fraction of generated tokens equal
  between the two (float32 round-off can flip a near-tie argmax, then the rest of that row differs);
* torch runs with one intra-op thread by default (``--torch-threads``): on the shared 2-core
  machine its default two spinning threads collapsed under load (19 tokens/s instead of 1,222
  for the tiny case), which would flatter the ratio;
* ``load_average_1min``: the machine's load when the case finished (shared machines are noisy; the
  ratio is what to read, measured in the same run).

Usage: ``.venv/bin/python experiments/bench/decode_bench.py [--repeats 5] [--cases tiny small]``
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

import jax
import numpy as np
import torch
from flax import nnx
from transformers import LlamaForCausalLM

from flame_jax.policy._config import DecoderConfig
from flame_jax.policy._hf import save_pretrained
from flame_jax.policy._model import Decoder
from flame_jax.policy._sampling import SamplingConfig, left_pad, make_generator

CASES = {
    # name: (config overrides, batch, prompt length, new tokens)
    "tiny": ({}, 8, 32, 64),
    "tiny_b1": ({}, 1, 32, 64),
    "small": (
        {
            "hidden_size": 256,
            "intermediate_size": 688,
            "num_layers": 4,
            "num_heads": 8,
            "num_kv_heads": 4,
            "head_dim": 32,
            "vocab_size": 8192,
        },
        8,
        64,
        64,
    ),
}


def random_weights(model: Decoder, seed: int) -> None:
    """O(1) logits, so greedy decoding does not lock onto one token."""
    rng = np.random.default_rng(seed)
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    new = []
    for leaf in leaves:
        if leaf.ndim == 1:
            value = 1.0 + 0.1 * rng.normal(size=leaf.shape)
        else:
            value = rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[-1])
        new.append(np.asarray(value, np.float32))
    nnx.update(model, jax.tree.unflatten(treedef, [jax.numpy.asarray(v) for v in new]))


def run_case(name, overrides, batch, prompt, new, repeats, seed):
    config = DecoderConfig.tiny(**overrides)
    model = Decoder(config, rngs=nnx.Rngs(seed))
    random_weights(model, seed)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(prompt // 2, prompt + 1, batch)
    lengths[0] = prompt
    prompts = [rng.integers(3, config.vocab_size, n).tolist() for n in lengths]
    tokens, mask = left_pad(prompts, pad_id=0)

    generate = make_generator(
        SamplingConfig(max_new_tokens=new, temperature=0, min_length_bucket=8)
    )
    key = jax.random.key(0)

    def jax_call():
        out = generate(model, tokens, mask, key=key)
        return np.asarray(out.tokens)

    t0 = time.perf_counter()
    jax_tokens = jax_call()
    first = time.perf_counter() - t0
    jax_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax_call()
        jax_times.append(time.perf_counter() - t0)
    jax_s = statistics.median(jax_times)

    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, config, pathlib.Path(tmp) / "m")
        hf = LlamaForCausalLM.from_pretrained(pathlib.Path(tmp) / "m", torch_dtype=torch.float32)
    hf.eval()
    input_ids = torch.tensor(tokens, dtype=torch.long)
    attention_mask = torch.tensor(mask, dtype=torch.long)

    def hf_call():
        with torch.no_grad():
            out = hf.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=False,
                max_new_tokens=new,
                min_new_tokens=new,
                pad_token_id=0,
            )
        return out[:, tokens.shape[1] :].numpy()

    hf_tokens = hf_call()  # warm-up
    hf_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        hf_call()
        hf_times.append(time.perf_counter() - t0)
    hf_s = statistics.median(hf_times)
    n_tokens = batch * new
    return {
        "bench": "decode",
        "case": name,
        "batch": batch,
        "prompt": prompt,
        "new_tokens": new,
        "hidden": config.hidden_size,
        "layers": config.num_layers,
        "vocab": config.vocab_size,
        "jax_tokens_per_s": round(n_tokens / jax_s, 1),
        "jax_s": round(jax_s, 4),
        "jax_first_call_s": round(first, 3),
        "jax_compile_s": round(first - jax_s, 3),
        "hf_tokens_per_s": round(n_tokens / hf_s, 1),
        "hf_s": round(hf_s, 4),
        "speedup": round(hf_s / jax_s, 2),
        "tokens_match": float((jax_tokens == hf_tokens).mean()),
        "repeats": repeats,
        "backend": jax.default_backend(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": platform.machine(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="experiments/bench/results/decode.json")
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="torch.set_num_threads (0: torch default)"
    )
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    lines = []
    for name in args.cases:
        overrides, batch, prompt, new = CASES[name]
        line = run_case(name, overrides, batch, prompt, new, args.repeats, args.seed)
        print(json.dumps(line), flush=True)
        lines.append(line)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))


if __name__ == "__main__":
    main()
