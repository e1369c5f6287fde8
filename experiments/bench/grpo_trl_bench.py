"""Benchmark: one full GRPO step of flame_jax vs Hugging Face TRL's ``GRPOTrainer`` (CPU, same run).

Both sides train the SAME Llama-layout model: ``write_tiny_model`` writes one Hugging Face folder
(tokenizer + float32 safetensors); flame_jax reads it with ``from_pretrained`` and TRL with
``LlamaForCausalLM`` from the same path (TRL loads its reference model from that path too). Before
any timing the script checks that the two sides agree (see "Checks" below).

One GRPO step, identical on both sides:

* ``P`` prompts per step (the same texts and token ids; every prompt is exactly ``prompt_len``
  single-token words, so no padding), each sampled ``G`` times at temperature 1 (no top-k / top-p)
  with exactly ``completion_len`` new tokens: EOS can never be drawn (flame_jax bans it, TRL gets
  ``min_new_tokens = completion_len``, whose logits processor bans it until the cap);
* reward: the fraction of completion tokens whose id is divisible by 3, computed from the
  tokens (TRL: a Python reward function on ``completion_ids``; flame_jax: a jnp function inside
  the scoring program); group-normalised advantages (unbiased std);
* beta = 0.04 > 0 with the k3 estimator, so the reference policy's log-probs are computed every
  step (a frozen copy of the initial weights on both sides: full fine-tuning, no LoRA);
* loss: clipped ratio (eps 0.2), sequence-mean-token-mean aggregation (TRL ``loss_type="grpo"``);
* update: gradient clipping at global norm 1 then AdamW (lr 1e-5, betas 0.9/0.999, eps 1e-8, no
  weight decay, constant schedule); one optimizer step per rollout batch (``num_iterations=1``).

Phases timed (wall clock, per step, the median over ``--steps`` steps after ``--warmup`` warm-up
steps, which are excluded; flame_jax's compile time is reported separately):

* flame_jax ``rollout``: ``make_generator`` (jitted KV-cache sampler) with the current weights,
  the copy of tokens and log-probs to the host and ``tokenizer.batch_decode`` of the completions
  (TRL decodes them too; FLAME parses them); ``scoring``: one jitted program computing the
  rewards, the group advantages and the reference log-probs (``completion_logprobs`` over the frozen
  copy); ``update``: one jitted program (donating the weights and optimizer state) with the policy
  log-probs, the GRPO loss (``make_grpo_loss``; old log-probs = the sampler's), its gradient and
  the optax update. The gradient is accumulated over ``--micro-batches`` micro-batches of whole
  prompt groups (``flame_jax.train.accumulate_gradients``, as ``LoopConfig.micro_batches`` does in
  FLAME; the same gradient, checked against TRL's below); TRL computes it in one piece, its
  default. Every phase ends with ``block_until_ready``. ``jax_fused_step_s`` times the
  same step laid out as FLAME runs it (``flame_jax/flame/_grpo.py``): rollout, then one jitted
  program doing scoring and update together (the reference log-probs inside the micro-batched
  loss).
* TRL: ``trainer.train()`` runs ``warmup + steps`` steps; its methods are wrapped on the instance.
  The two sides are interleaved: after each TRL step (outside its timed window) a callback runs
  one flame_jax split step and one fused step on the same prompts, so that all three see the same
  machine load (this machine is shared; load drifts within seconds).
  ``step`` = ``on_step_begin`` to ``on_step_end`` callbacks (one optimizer step; the data-loader
  fetch before it and the logging after it are left out, which only favours TRL);
  ``rollout`` = ``GRPOTrainer._generate`` (prompt tokenisation, ``model.generate``, decoding);
  ``scoring`` = ``GRPOTrainer._generate_and_score_completions`` minus ``_generate`` (padding,
  reference log-probs, reward function, advantages, metrics); ``update`` = ``step`` minus
  ``_generate_and_score_completions`` (``compute_loss`` forward, backward, gradient clipping,
  ``optimizer.step``, scheduler, ``zero_grad``), of which ``loss_forward`` = ``compute_loss`` and
  ``optimizer`` = ``on_pre_optimizer_step`` to ``on_optimizer_step``.

Threads: the process is pinned to ``--threads`` CPUs (``os.sched_setaffinity``, before jax and torch
are imported, so XLA's CPU thread pool has that many threads) and torch gets
``torch.set_num_threads(--threads)``. The default is 1: this machine's 2 cores are shared, and
torch's spinning intra-op threads collapse under load (see ``decode_bench.py``). The ratio moves
with the load: TRL's rollout (Python per token) slows down more than flame_jax's compiled
programs when the CPU is contended, so run the script several times and compare medians.

Checks (before timing; the script stops when one fails):

* log-probs of P x G random completions of the first prompts: flame_jax ``completion_logprobs``
  vs TRL's ``_get_per_token_logps_and_entropies`` on the policy and on the reference model (max
  abs diff);
* one GRPO loss and its gradient on the same batch (the same tokens, random advantages, perturbed
  reference log-probs): TRL's ``compute_loss`` + ``backward`` vs flame_jax's loss and gradient,
  accumulated over the micro-batches as in the timed update (loss and global gradient norm,
  relative difference).

Cases (``--cases``): ``tiny`` is FLAME's demo model (``DecoderConfig.tiny``: 2 layers, width 64,
111k parameters) with the demo's GRPO batch (8 prompts x group 4), prompts of 32 tokens and
completions of 64; ``tiny_b8`` the same with 2 prompts x 4; ``small`` a 4-layer, width-256 model
(4.7M parameters) at the demo's batch.

Output: one JSON line per case, written to ``experiments/bench/results/grpo_trl.json``
(``--append`` adds to it); ``jax_micro_batches`` records the micro-batches. ``speedup`` = TRL
step / flame_jax step (phase sum); ``speedup_fused``
uses the fused step; ``*_split`` are the phase fractions. ``--xnn-dot`` adds
``--xla_cpu_experimental_xnn_fusion_type=dot`` to ``XLA_FLAGS`` (XLA's CPU backend then runs matmuls
with XNNPACK); the flags are recorded in ``xla_flags``. ``--malloc-reuse`` sets glibc's
``M_ARENA_MAX`` 1, ``M_MMAP_MAX`` 0 and ``M_TRIM_THRESHOLD`` 1 GiB for the whole process (both
sides) before jax and torch are imported, so that freed memory is reused instead of unmapped and
faulted in again (see ``malloc_reuse``); recorded in ``malloc_reuse``.

Usage: ``.venv/bin/python experiments/bench/grpo_trl_bench.py [--cases tiny tiny_b8 small]
[--steps 5] [--warmup 2] [--threads 1] [--micro-batches K] [--xnn-dot] [--malloc-reuse]
[--append]`` (needs ``trl``
and a CPU ``torch``: the ``bench`` extra).
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from typing import Any

# name: (DecoderConfig overrides, extra tokenizer words, P prompts, G group, prompt len, new tokens)
CASES = {
    # The model of FLAME's demo (DecoderConfig.tiny: 2 layers, width 64) at the demo's vocabulary,
    # with the demo's GRPO batch (8 prompts x group 4).
    "tiny": ({}, 0, 8, 4, 32, 64),
    # The same model with a quarter of the batch (2 prompts x group 4): less compute per step.
    "tiny_b8": ({}, 0, 2, 4, 32, 64),
    # A larger toy: 4 layers, width 256, GQA 8/4 heads, ~7k vocabulary (4.7M parameters).
    "small": (
        {
            "hidden_size": 256,
            "intermediate_size": 688,
            "num_layers": 4,
            "num_heads": 8,
            "num_kv_heads": 4,
            "head_dim": 32,
        },
        1500,
        8,
        4,
        32,
        64,
    ),
}
# flame_jax's micro-batches per update by default (``--micro-batches``): 2 prompt groups each,
# which keeps the update's temporaries under glibc's mmap threshold (see ``accumulate_gradients``);
# the 2-prompt case runs in one piece.
MICRO_BATCHES = {"tiny": 4, "tiny_b8": 1, "small": 4}
BETA = 0.04
EPSILON = 0.2
DIVISOR = 3  # reward: fraction of completion tokens whose id is divisible by 3


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def malloc_reuse() -> None:
    """Make glibc keep freed memory for reuse (before jax / torch import; the whole process).

    XLA:CPU allocates each program's temporaries as one buffer per execution. The update
    program's buffer is 51 MiB on ``tiny``, above glibc's largest mmap threshold (32 MiB), so
    every call maps fresh pages and faults each one in (about 13,000 minor faults, 15-20 ms of
    its 70 ms). One arena, no mmap and no trimming serve it from memory already touched.
    """
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 30)):
        if libc.mallopt(param, value) != 1:
            raise RuntimeError(f"mallopt({param}, {value}) failed")


def pin_threads(threads: int) -> list[int]:
    """Restrict this process to ``threads`` of its allowed CPUs (before jax / torch import)."""
    allowed = sorted(os.sched_getaffinity(0))
    if not 1 <= threads <= len(allowed):
        raise SystemExit(f"--threads must be in [1, {len(allowed)}], got {threads}")
    cpus = allowed[:threads]
    os.sched_setaffinity(0, cpus)
    return cpus


def synthetic_words(n: int, seed: int) -> list[str]:
    """``n`` distinct lowercase pseudo-words (to grow the tokenizer's vocabulary)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(letters, int(rng.integers(4, 9)))))
    return sorted(out)


def make_prompts(tokenizer, count: int, length: int, seed: int) -> tuple[list[str], Any]:
    """``count`` prompt texts of exactly ``length`` tokens each (single-token " word" pieces)."""
    import numpy as np

    vocab = tokenizer.get_vocab()
    pieces = sorted(w for w in vocab if w.startswith("Ġ") and w[1:].isalpha())
    single = [w[1:] for w in pieces if len(tokenizer(" " + w[1:])["input_ids"]) == 1]
    if len(single) < 16:
        raise RuntimeError(f"tokenizer has only {len(single)} single-token words")
    rng = np.random.default_rng(seed)
    texts = [
        "".join(" " + single[i] for i in rng.integers(0, len(single), length)) for _ in range(count)
    ]
    ids = [tokenizer(t)["input_ids"] for t in texts]
    bad = [len(x) for x in ids if len(x) != length]
    if bad:
        raise RuntimeError(f"prompts do not tokenise to {length} tokens: {bad[:4]}")
    return texts, np.asarray(ids, np.int32)


def reward_from_ids(ids) -> float:
    """TRL-side reward of one completion (a list of ids)."""
    return sum(1 for t in ids if t % DIVISOR == 0) / max(len(ids), 1)


def trl_reward(prompts, completions, completion_ids, **kwargs):
    """The reward function handed to ``GRPOTrainer``."""
    return [reward_from_ids(ids) for ids in completion_ids]


class JaxGrpo:
    """flame_jax's GRPO step, split into rollout / scoring / update programs (+ a fused step)."""

    def __init__(self, path, tokenizer, *, prompts, group, completion_len, lr, seed, micro=1):
        import jax
        import jax.numpy as jnp
        import numpy as np
        import optax
        from flax import nnx

        from flame_jax.policy import SamplingConfig, from_pretrained, make_generator
        from flame_jax.policy._scoring import completion_logprobs
        from flame_jax.rl import LossConfig, group_advantages, make_grpo_loss
        from flame_jax.train import (
            OptimizerConfig,
            accumulate_gradients,
            make_optimizer,
            split_microbatches,
        )

        self.np, self.jax = np, jax
        self.tokenizer = tokenizer
        self.model, self.config = from_pretrained(path)
        p, g, c = prompts, group, completion_len
        self.shape = (p, g, c)
        self.generate = make_generator(
            SamplingConfig(
                max_new_tokens=c,
                temperature=1.0,
                eos_ids=(),
                pad_id=self.config.pad_token_id,
                min_batch_bucket=p * g,
                min_length_bucket=8,
            )
        )
        banned = np.zeros(self.config.vocab_size, bool)
        banned[list(self.config.eos_token_ids)] = True
        self.banned = jnp.asarray(banned)
        self.key = jax.random.key(seed)
        self.graphdef, self.params, self.rest = nnx.split(self.model, nnx.Param, ...)
        self.ref_params = jax.tree.map(jnp.copy, self.params)
        self.tx = make_optimizer(
            OptimizerConfig(learning_rate=lr, schedule="constant", weight_decay=0.0, clip_norm=1.0)
        )
        self.opt_state = self.tx.init(self.params)
        grpo = make_grpo_loss(
            LossConfig(
                epsilon_low=EPSILON,
                epsilon_high=EPSILON,
                kl_coef=BETA,
                kl_estimator="k3",
                aggregation="sequence_mean_token_mean",
            )
        )
        graphdef = self.graphdef

        def logprobs(params, rest, ptok, pmask, ctok, cmask):
            model = nnx.merge(graphdef, params, rest)
            return completion_logprobs(model, ptok, pmask, ctok, cmask).reshape(-1, g, c)

        def rewards_advantages(ctok, cmask):
            hit = (ctok % DIVISOR == 0) & cmask
            rewards = hit.sum(-1) / jnp.maximum(cmask.sum(-1), 1)
            rewards = rewards.astype(jnp.float32).reshape(p, g)
            return rewards, group_advantages(rewards)

        def score(ref_params, rest, ptok, pmask, ctok, cmask):
            ref_logp = logprobs(ref_params, rest, ptok, pmask, ctok, cmask)
            rewards, adv = rewards_advantages(ctok, cmask)
            return ref_logp, rewards, adv

        def loss_fn(params, rest, ptok, pmask, ctok, cmask, old_logp, ref_logp, adv):
            logp = logprobs(params, rest, ptok, pmask, ctok, cmask)
            adv_tokens = jnp.broadcast_to(adv[..., None], logp.shape)
            return grpo(logp, adv_tokens, cmask.reshape(logp.shape), old_logp, ref_logp)

        def grad(loss, params, rows, per_prompt):
            """(loss, grads) of ``loss(params, *rows, *per_prompt)``: rows are per completion,
            ``per_prompt`` per prompt. With micro > 1, accumulated over micro-batches of whole
            groups; equal weights are exact for the sequence-mean aggregation over micro-batches
            of equally many completions."""
            if micro == 1:
                (value, _aux), grads = jax.value_and_grad(loss, has_aux=True)(
                    params, *rows, *per_prompt
                )
                return value, grads
            stacked = (
                split_microbatches(rows, micro, group=g),
                split_microbatches(per_prompt, micro),
            )
            value, _aux, grads = accumulate_gradients(
                lambda prm, mb: loss(prm, *mb[0], *mb[1]), params, stacked
            )
            return value, grads

        def loss_and_grad(params, rest, ptok, pmask, ctok, cmask, old_logp, ref_logp, adv):
            return grad(
                lambda prm, *batch: loss_fn(prm, rest, *batch),
                params,
                (ptok, pmask, ctok, cmask),
                (old_logp, ref_logp, adv),
            )

        def update(params, opt_state, rest, ptok, pmask, ctok, cmask, old_logp, ref_logp, adv):
            loss, grads = loss_and_grad(
                params, rest, ptok, pmask, ctok, cmask, old_logp, ref_logp, adv
            )
            updates, opt_state = self.tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        def fused(params, opt_state, ref_params, rest, ptok, pmask, ctok, cmask, old_logp):
            _, adv = rewards_advantages(ctok, cmask)

            def fused_loss(prm, ptok, pmask, ctok, cmask, old_logp, adv):
                # As in FLAME's GRPO step: the reference log-probs inside the loss, so that
                # micro-batching cuts them too.
                ref_logp = jax.lax.stop_gradient(
                    logprobs(ref_params, rest, ptok, pmask, ctok, cmask)
                )
                return loss_fn(prm, rest, ptok, pmask, ctok, cmask, old_logp, ref_logp, adv)

            loss, grads = grad(fused_loss, params, (ptok, pmask, ctok, cmask), (old_logp, adv))
            updates, opt_state = self.tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.logprobs = jax.jit(logprobs)
        self.loss_and_grad = jax.jit(loss_and_grad)
        self.score = jax.jit(score)
        self.update = jax.jit(update, donate_argnums=(0, 1))
        self.fused = jax.jit(fused, donate_argnums=(0, 1))

    def rollout(self, step, ptok, pmask):
        """Sample G completions per prompt with the current weights; host copy + decode."""
        from flax import nnx

        nnx.update(self.model, self.params)
        key = self.jax.random.fold_in(self.key, step)
        gen = self.generate(self.model, ptok, pmask, key=key, banned=self.banned)
        tokens = self.np.asarray(gen.tokens)
        logp = self.np.asarray(gen.logprobs)
        texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        return tokens, logp, gen.mask, texts

    def step(self, step, ptok, pmask, *, fused=False):
        """One GRPO step; returns the seconds of (rollout, scoring, update) or (rollout, fused)."""
        jnp = self.jax.numpy
        t0 = time.perf_counter()
        tokens, logp, cmask, _ = self.rollout(step, ptok, pmask)
        ctok = jnp.asarray(tokens)
        old_logp = jnp.asarray(logp).reshape(self.shape)
        t1 = time.perf_counter()
        if fused:
            self.params, self.opt_state, loss = self.fused(
                self.params,
                self.opt_state,
                self.ref_params,
                self.rest,
                ptok,
                pmask,
                ctok,
                cmask,
                old_logp,
            )
            loss.block_until_ready()
            return t1 - t0, time.perf_counter() - t1
        ref_logp, _, adv = self.score(self.ref_params, self.rest, ptok, pmask, ctok, cmask)
        self.jax.block_until_ready((ref_logp, adv))
        t2 = time.perf_counter()
        self.params, self.opt_state, loss = self.update(
            self.params,
            self.opt_state,
            self.rest,
            ptok,
            pmask,
            ctok,
            cmask,
            old_logp,
            ref_logp,
            adv,
        )
        loss.block_until_ready()
        return t1 - t0, t2 - t1, time.perf_counter() - t2


class TrlTimer:
    """Per-step phase times of a ``GRPOTrainer``, by wrapping its methods on the instance.

    ``after_step(index)`` runs after each step's timed window (``on_step_end``).
    """

    def __init__(self, trainer, after_step=None):
        from transformers import TrainerCallback

        self.steps: list[dict[str, float]] = []
        self.current: dict[str, float] = {}
        timer = self

        def wrap(name, key):
            original = getattr(trainer, name)

            def timed(*args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    timer.current[key] = timer.current.get(key, 0.0) + time.perf_counter() - t0

            setattr(trainer, name, timed)

        wrap("_generate", "generate")
        wrap("_generate_and_score_completions", "generate_and_score")
        wrap("compute_loss", "loss_forward")

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer.current = {"begin": time.perf_counter()}

            def on_pre_optimizer_step(self, args, state, control, **kwargs):
                timer.current["opt_begin"] = time.perf_counter()

            def on_optimizer_step(self, args, state, control, **kwargs):
                timer.current["optimizer"] = time.perf_counter() - timer.current.pop("opt_begin")

            def on_step_end(self, args, state, control, **kwargs):
                c = timer.current
                step = time.perf_counter() - c.pop("begin")
                timer.steps.append(
                    {
                        "step": step,
                        "rollout": c["generate"],
                        "scoring": c["generate_and_score"] - c["generate"],
                        "update": step - c["generate_and_score"],
                        "loss_forward": c["loss_forward"],
                        "optimizer": c["optimizer"],
                    }
                )
                if after_step is not None:
                    after_step(len(timer.steps) - 1)

        trainer.add_callback(Callback())


def make_trainer(path, tokenizer, texts, *, prompts, group, completion_len, lr, steps, seed, out):
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    config = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=prompts * group,
        num_generations=group,
        max_completion_length=completion_len,
        generation_kwargs={"min_new_tokens": completion_len},
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=BETA,
        epsilon=EPSILON,
        loss_type="grpo",
        scale_rewards="group",
        num_iterations=1,
        learning_rate=lr,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        max_steps=steps,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=seed,
        shuffle_dataset=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        model_init_kwargs={"dtype": torch.float32},
    )
    return GRPOTrainer(
        model=str(path),
        reward_funcs=trl_reward,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": texts}),
        processing_class=tokenizer,
    )


def check_agreement(jax_side, trainer, ptok, seed):
    """Log-probs and one loss + gradient agree between the two sides (raises if not)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch

    p, g, c = jax_side.shape
    rng = np.random.default_rng(seed + 1)
    vocab = jax_side.config.vocab_size
    ptok_np = np.repeat(np.asarray(ptok), g, axis=0)
    ctok_np = rng.integers(3, vocab, (p * g, c)).astype(np.int32)
    pmask = jnp.ones(ptok_np.shape, bool)
    cmask = jnp.ones(ctok_np.shape, bool)
    jlogp = np.asarray(
        jax_side.logprobs(
            jax_side.params, jax_side.rest, jnp.asarray(ptok_np), pmask, ctok_np, cmask
        )
    ).reshape(p * g, c)
    ids = torch.as_tensor(np.concatenate([ptok_np, ctok_np], 1), dtype=torch.long)
    attn = torch.ones_like(ids)
    with torch.no_grad():
        tlogp = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attn, c)[0].numpy()
        rlogp = trainer._get_per_token_logps_and_entropies(trainer.ref_model, ids, attn, c)[
            0
        ].numpy()
    logp_diff = float(max(np.abs(jlogp - tlogp).max(), np.abs(jlogp - rlogp).max()))
    if not logp_diff < 1e-3:
        raise RuntimeError(f"log-probs differ between flame_jax and TRL: max abs diff {logp_diff}")

    adv = rng.normal(size=(p, g)).astype(np.float32)
    ref = (jlogp + 0.05 * rng.normal(size=jlogp.shape)).astype(np.float32)
    inputs = {
        "prompt_ids": torch.as_tensor(ptok_np, dtype=torch.long),
        "prompt_mask": torch.ones(ptok_np.shape, dtype=torch.long),
        "completion_ids": torch.as_tensor(ctok_np, dtype=torch.long),
        "completion_mask": torch.ones(ctok_np.shape, dtype=torch.long),
        "advantages": torch.as_tensor(adv.reshape(-1)),
        "ref_per_token_logps": torch.as_tensor(ref),
        "num_items_in_batch": torch.tensor(float(p * g * c)),
    }
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    trainer.model.zero_grad()
    tloss = trainer.compute_loss(trainer.model, inputs)
    tloss.backward()
    tnorm = float(torch.sqrt(sum((q.grad.double() ** 2).sum() for q in trainer.model.parameters())))
    trainer.model.zero_grad()
    for store in trainer._metrics.values():
        store.clear()
    jloss, grads = jax_side.loss_and_grad(
        jax_side.params,
        jax_side.rest,
        jnp.asarray(ptok_np),
        pmask,
        ctok_np,
        cmask,
        None,
        jnp.asarray(ref).reshape(p, g, c),
        jnp.asarray(adv),
    )
    jnorm = float(optax.tree.norm(jax.tree.map(lambda x: x.astype(jnp.float64), grads)))
    loss_rel = abs(float(jloss) - float(tloss)) / max(abs(float(tloss)), 1e-6)
    grad_rel = abs(jnorm - tnorm) / max(tnorm, 1e-12)
    if not (loss_rel < 1e-3 and grad_rel < 1e-3):
        raise RuntimeError(
            f"GRPO loss / gradient differ: loss {float(jloss)} vs TRL {float(tloss)}, "
            f"grad norm {jnorm} vs TRL {tnorm}"
        )
    return {
        "logp_max_abs_diff": logp_diff,
        "loss_rel_diff": loss_rel,
        "grad_norm_rel_diff": grad_rel,
    }


def run_case(name, args, threads):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers
    import trl

    from flame_jax.policy import DecoderConfig, load_tokenizer, write_tiny_model

    overrides, extra_words, p, g, lp, lc = CASES[name]
    load_start = os.getloadavg()[0]
    steps, warmup = args.steps, args.warmup
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        words = synthetic_words(extra_words, args.seed) if extra_words else ["aspirin"]
        path = write_tiny_model(
            tmp / "model", words, config=DecoderConfig.tiny(**overrides), seed=args.seed
        )
        tokenizer = load_tokenizer(path)
        texts, ids = make_prompts(tokenizer, p * (warmup + steps), lp, args.seed)
        batches = [
            jnp.asarray(np.repeat(ids[s * p : (s + 1) * p], g, axis=0))
            for s in range(warmup + steps)
        ]
        pmask = jnp.ones(batches[0].shape, bool)

        micro = MICRO_BATCHES[name] if args.micro_batches is None else args.micro_batches
        jax_side = JaxGrpo(
            path, tokenizer, prompts=p, group=g, completion_len=lc, lr=args.lr, seed=args.seed,
            micro=micro,
        )  # fmt: skip
        trainer = make_trainer(
            path, tokenizer, texts, prompts=p, group=g, completion_len=lc, lr=args.lr,
            steps=warmup + steps, seed=args.seed, out=tmp / "trl",
        )  # fmt: skip
        checks = check_agreement(jax_side, trainer, ids[:p], args.seed)

        # Interleaved: after each TRL step, one flame_jax split step and one fused step (separate
        # weights) on the same prompts, so that both sides run under the same machine load.
        fused_side = JaxGrpo(
            path, tokenizer, prompts=p, group=g, completion_len=lc, lr=args.lr, seed=args.seed,
            micro=micro,
        )  # fmt: skip
        jax_all, fused_all = [], []

        def jax_steps(s):
            jax_all.append(jax_side.step(s, batches[s], pmask))
            fused_all.append(fused_side.step(s, batches[s], pmask, fused=True))

        timer = TrlTimer(trainer, after_step=jax_steps)
        trainer.train()
        jax_first, jax_times = jax_all[0], jax_all[warmup:]
        fused_first, fused_times = fused_all[0], [sum(t) for t in fused_all[warmup:]]
        trl_steps = timer.steps[warmup:]
        if len(trl_steps) != steps:
            raise RuntimeError(f"TRL ran {len(timer.steps)} steps, expected {warmup + steps}")

    med = statistics.median
    jax_phase = {
        k: med(t[i] for t in jax_times) for i, k in enumerate(("rollout", "scoring", "update"))
    }
    jax_step = med(sum(t) for t in jax_times)
    trl_phase = {k: med(s[k] for s in trl_steps) for k in ("rollout", "scoring", "update")}
    trl_step = med(s["step"] for s in trl_steps)
    tokens = p * g * lc

    def split(phase, total):
        return {k: round(v / total, 3) for k, v in phase.items()}

    return {
        "bench": "grpo_trl",
        "case": name,
        "prompts": p,
        "group": g,
        "prompt_len": lp,
        "completion_len": lc,
        "hidden": jax_side.config.hidden_size,
        "layers": jax_side.config.num_layers,
        "heads": f"{jax_side.config.num_heads}/{jax_side.config.num_kv_heads}",
        "vocab": jax_side.config.vocab_size,
        "params": int(sum(x.size for x in jax.tree.leaves(jax_side.ref_params))),
        "beta": BETA,
        "lr": args.lr,
        "finetune": "full",
        "jax_micro_batches": micro,
        "jax_step_s": round(jax_step, 4),
        "jax_rollout_s": round(jax_phase["rollout"], 4),
        "jax_scoring_s": round(jax_phase["scoring"], 4),
        "jax_update_s": round(jax_phase["update"], 4),
        "jax_split": split(jax_phase, sum(jax_phase.values())),
        "jax_fused_step_s": round(med(fused_times), 4),
        "jax_compile_s": round(sum(jax_first) - jax_step, 2),
        "jax_fused_compile_s": round(sum(fused_first) - med(fused_times), 2),
        "trl_step_s": round(trl_step, 4),
        "trl_rollout_s": round(trl_phase["rollout"], 4),
        "trl_scoring_s": round(trl_phase["scoring"], 4),
        "trl_update_s": round(trl_phase["update"], 4),
        "trl_loss_forward_s": round(med(s["loss_forward"] for s in trl_steps), 4),
        "trl_optimizer_s": round(med(s["optimizer"] for s in trl_steps), 4),
        "trl_split": split(trl_phase, trl_step),
        "speedup": round(trl_step / jax_step, 2),
        "speedup_fused": round(trl_step / med(fused_times), 2),
        "speedup_rollout": round(trl_phase["rollout"] / jax_phase["rollout"], 2),
        "speedup_scoring": round(trl_phase["scoring"] / jax_phase["scoring"], 2),
        "speedup_update": round(trl_phase["update"] / jax_phase["update"], 2),
        "jax_tokens_per_s": round(tokens / jax_step, 1),
        "trl_tokens_per_s": round(tokens / trl_step, 1),
        **checks,
        "steps": steps,
        "warmup": warmup,
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "malloc_reuse": bool(args.malloc_reuse),
        "load_average_1min_start": round(load_start, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": platform.machine(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["tiny"], choices=list(CASES))
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="CPUs for both sides")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="experiments/bench/results/grpo_trl.json")
    parser.add_argument("--append", action="store_true", help="append to --out")
    parser.add_argument(
        "--micro-batches",
        type=int,
        default=None,
        help="flame_jax's update over this many micro-batches of whole groups (1: one piece; "
        "default: the case's, MICRO_BATCHES)",
    )
    parser.add_argument(
        "--malloc-reuse",
        action="store_true",
        help="glibc: one arena, no mmap, no trimming (both sides; see malloc_reuse)",
    )
    parser.add_argument(
        "--xnn-dot",
        action="store_true",
        help="add --xla_cpu_experimental_xnn_fusion_type=dot to XLA_FLAGS (XNNPACK matmuls)",
    )
    args = parser.parse_args()
    if args.xnn_dot:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_experimental_xnn_fusion_type=dot".strip()
    if args.steps < 1 or args.warmup < 1:
        raise SystemExit("--steps and --warmup must be >= 1")
    for name in args.cases:
        k = args.micro_batches
        if k is not None and (k < 1 or CASES[name][2] % k):
            raise SystemExit(
                f"--micro-batches must divide case {name}'s {CASES[name][2]} prompts, got {k}"
            )
    cpus = pin_threads(args.threads)
    if "jax" in sys.modules or "torch" in sys.modules:
        raise RuntimeError("jax / torch imported before the thread pinning")
    if args.malloc_reuse:
        malloc_reuse()
    import torch

    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    from flame_jax._io import write_bytes_atomic

    lines = []
    for name in args.cases:
        line = run_case(name, args, len(cpus))
        print(json.dumps(line), flush=True)
        lines.append(line)
    out = pathlib.Path(args.out)
    previous = out.read_text() if args.append and out.is_file() else ""
    text = previous + "".join(json.dumps(x) + "\n" for x in lines)
    write_bytes_atomic(out, text.encode())


if __name__ == "__main__":
    main()
