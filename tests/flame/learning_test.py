"""Learning tests: the real GRPO trainer reaches a planted optimum, and a broken gradient does not.

Every task is an "add" edit in ``flame_jax.rl``'s episode format with a planted truth Y and a
handful of candidates. The trainer is the pipeline's own (``_stage_grpo``): prompts tokenised
by the tiny tokenizer, completions drawn by ``make_rollout`` (the KV-cache sampler with the edit
grammar and the per-prompt bans: constrained decoding), parsed into set trajectories, rewarded
by the potential shaping (Jaccard, DDI with weight lambda, refusal), advantages from
``make_advantage_fn`` (``step_weight`` 0: outcome-only GRPO), the clipped GRPO loss with the KL
to the adapter-free reference (``grpo_loss_fn``), LoRA adapters trained by ``run_loop``'s AdamW
with micro-batches (``grpo_micro_batching``).

Progress is the policy's exact expected reward: every completion the constrained sampler can
draw (at most ``max_tokens`` tokens) is enumerated, scored by the constrained log-probs the loss
uses, and rewarded by the same parser and shaping. The optimum is the best completion's reward
(a deterministic policy reaches it), computed the same way and checked against the planted
value.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flame_jax.flame._grpo as grpo_module
from flame_jax.flame import (
    LoopConfig,
    PolicyConfig,
    PromptEncoder,
    build_policy,
    constrained_support,
    edit_bans,
    edit_grammar,
    grpo_loss_fn,
    grpo_micro_batching,
    make_rollout,
    run_loop,
    to_knowledge_tables,
)
from flame_jax.flame._encode import pad_prompts
from flame_jax.flame._grpo import banned_tokens
from flame_jax.flame._prompts import Prompt
from flame_jax.flame._sft import ListExamples
from flame_jax.policy import (
    LoraConfig,
    add_lora,
    build_tiny_tokenizer,
    completion_logprobs,
    load_tokenizer,
)
from flame_jax.rl import (
    AdvantageConfig,
    DrugVocabulary,
    LossConfig,
    ShapingConfig,
    make_advantage_fn,
    make_reward_fn,
    pad_episodes,
    parse_episode,
    segment_tokens,
)
from flame_jax.train import OptimizerConfig

pytestmark = pytest.mark.slow  # dozens of short trainings (about 2 CPU-minutes; not in test-fast)

DRUGS = ("aspirin", "warfarin", "heparin", "insulin", "metformin", "digoxin", "lisinopril")
CONTEXT = ("fever", "cough")
DDI_PAIRS = ((1, 5),)  # warfarin - digoxin: one DDI matrix for every task (one compilation)
POLICY = PolicyConfig(
    hidden_size=16,
    intermediate_size=32,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    fusion=False,
)


@dataclasses.dataclass(frozen=True)
class Task:
    """Add prompts with planted truths: ``prompts[k]`` lists ``candidates[k]`` over P0
    ``initial[k]``; the truth is ``truth[k]``."""

    name: str
    prompts: tuple[str, ...]
    initial: tuple[tuple[int, ...], ...]
    candidates: tuple[tuple[int, ...], ...]
    truth: tuple[tuple[int, ...], ...]
    max_tokens: int


def _prompt(context: str, initial, candidates, *, cue: bool = False) -> str:
    """An add prompt; ``cue`` repeats the context word right before the answer."""
    names = lambda ids: " ".join(DRUGS[i] for i in ids)
    ask = f"Add for {context}:\n" if cue else "Add:\n"
    return (f"The patient is admitted with {context}. Initial medication list: {names(initial)}\n"
            f"Candidate drugs: {names(candidates)}\n{ask}")  # fmt: skip


def bandit() -> Task:
    """One prompt, 3 candidates; only aspirin (0) is in the truth."""
    p0, cands = (4, 5), (0, 1, 2)
    return Task("bandit", (_prompt("fever", p0, cands),), (p0,), (cands,), ((0, 4, 5),), 2)


def contextual() -> Task:
    """Two prompts that differ in one word; the right candidate is aspirin (0) after "fever"
    and warfarin (1) after "cough"."""
    p0, cands = (4, 5), (0, 1, 2)
    return Task(
        "contextual",
        tuple(_prompt(c, p0, cands, cue=True) for c in CONTEXT),
        (p0, p0),
        (cands, cands),
        ((0, 4, 5), (1, 4, 5)),
        2,
    )


def credit() -> Task:
    """Up to four lines over two right candidates, aspirin (0) and heparin (2), and two wrong
    ones, warfarin (1) and insulin (3): each line is a decision with its own consequence
    (+Jaccard, -Jaccard, or a no-op when the drug is already written)."""
    p0, cands = (4, 5), (0, 2, 1, 3)
    return Task("credit", (_prompt("fever", p0, cands),), (p0,), (cands,), ((0, 2, 4, 5),), 8)


def interacting() -> Task:
    """Aspirin (0) and warfarin (1) are both in the truth and raise the Jaccard equally, but
    warfarin interacts with digoxin (5) of P0."""
    p0, cands = (4, 5), (0, 1, 2)
    return Task("lambda", (_prompt("fever", p0, cands),), (p0,), (cands,), ((0, 1, 4, 5),), 2)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    words = [*DRUGS, *CONTEXT, "Yes", "No", "Candidate drugs:", "Add:"]
    path = build_tiny_tokenizer(words, tmp_path_factory.mktemp("tok") / "tok")
    enc = PromptEncoder(load_tokenizer(path))
    assert all(len(enc.text_ids(d)) == 1 for d in DRUGS)  # one token per name
    return enc


@dataclasses.dataclass
class Setup:
    """Everything one training run needs, built from a task (host side)."""

    task: Task
    encoder: PromptEncoder
    examples: ListExamples
    truth: np.ndarray
    ddi: np.ndarray
    vocabulary: DrugVocabulary
    vocab_size: int


def setup(task: Task, encoder: PromptEncoder, vocab_size: int) -> Setup:
    n, m = len(task.prompts), len(DRUGS)
    encoded = [encoder.encode(Prompt(text, ())) for text in task.prompts]
    prompts = pad_prompts(
        encoded, length=max(len(e.tokens) for e in encoded), pad_id=encoder.pad_id
    )
    examples = ListExamples(
        prompts=prompts,
        targets=np.zeros((n, task.max_tokens), np.int32),
        target_mask=np.ones((n, task.max_tokens), bool),
        rows=np.arange(n),
        tasks=("add",) * n,
        initial=task.initial,
        candidates=task.candidates,
    )
    truth = np.zeros((n, m), bool)
    for k, y in enumerate(task.truth):
        truth[k, list(y)] = True
    ddi = np.zeros((m, m), bool)
    for a, b in DDI_PAIRS:
        ddi[a, b] = ddi[b, a] = True
    return Setup(task, encoder, examples, truth, ddi, DrugVocabulary(names=DRUGS), vocab_size)


def completions(s: Setup, k: int) -> list[list[int]]:
    """Every completion constrained decoding can draw for prompt ``k`` (EOS-ended or cut at
    ``max_tokens``), from the pipeline's grammar and bans."""
    grammar = edit_grammar(s.encoder, s.vocabulary, s.vocab_size)
    banned = (
        banned_tokens(s.encoder, s.vocab_size)
        | edit_bans(s.encoder, s.vocabulary, s.examples, s.vocab_size)[k]
    )
    out = []

    def walk(prefix, prev):
        allowed = grammar.allowed[grammar.token_class[prev]] & ~banned
        for t in np.flatnonzero(allowed):
            seq = [*prefix, int(t)]
            if t == s.encoder.eos_id or len(seq) == s.task.max_tokens:
                out.append(seq)
            else:
                walk(seq, t)

    walk([], int(s.examples.prompts.tokens[k, -1]))
    return out


def make_evaluator(s: Setup, shaping: ShapingConfig):
    """``(expected, optimum, completions)``: ``expected(policy)`` is the policy's exact expected
    reward averaged over the prompts, ``optimum`` the best completion's reward likewise, and
    ``completions[k]`` is ``(texts, rewards, probs)`` of prompt ``k``, ``probs(policy)``
    giving their probabilities."""
    reward_fn = jax.jit(make_reward_fn(shaping))
    rows, seqs_all = [], []  # per prompt: (tokens, mask, rewards), completions
    for k in range(len(s.task.prompts)):
        seqs = completions(s, k)
        seqs_all.append(seqs)
        lc = s.task.max_tokens
        toks = np.full((len(seqs), lc), s.encoder.pad_id, np.int32)
        for i, q in enumerate(seqs):
            toks[i, : len(q)] = q
        lengths = np.array([len(q) for q in seqs])
        eps = [parse_episode(s.encoder.decode(q), task="add", initial=s.task.initial[k],
                             vocabulary=s.vocabulary) for q in seqs]  # fmt: skip
        arrays = pad_episodes([eps], max_steps=lc)
        init = np.zeros((1, len(DRUGS)), bool)
        init[0, list(s.task.initial[k])] = True
        r = reward_fn(jnp.asarray(init), jnp.asarray(s.truth[k : k + 1]), jnp.asarray(s.ddi),
                      *(jnp.asarray(a) for a in arrays))  # fmt: skip
        rows.append((toks, np.arange(lc)[None] < lengths[:, None], np.asarray(r.outcome[0])))
    grammar = edit_grammar(s.encoder, s.vocabulary, s.vocab_size)
    bans = edit_bans(s.encoder, s.vocabulary, s.examples, s.vocab_size)
    banned = banned_tokens(s.encoder, s.vocab_size)
    p = s.examples.prompts

    @functools.partial(jax.jit, static_argnums=(0, 2))
    def logprob(graphdef, state, k, comp, cmask):
        policy = nnx.merge(graphdef, state)
        n = comp.shape[0]
        tokens = jnp.broadcast_to(jnp.asarray(p.tokens[k]), (n, p.tokens.shape[1]))
        mask = jnp.broadcast_to(jnp.asarray(p.mask[k]), (n, p.tokens.shape[1]))
        row = jnp.broadcast_to(jnp.asarray(bans[k] | banned), (n, s.vocab_size))
        allowed = constrained_support(tokens[:, -1], comp, jnp.asarray(grammar.token_class),
                                      jnp.asarray(grammar.allowed), row)  # fmt: skip
        lp = completion_logprobs(policy.decoder, tokens, mask, comp, cmask, allowed=allowed)
        return jnp.sum(jnp.where(cmask, lp, 0.0), axis=-1)

    optimum = float(np.mean([r.max() for _, _, r in rows]))

    def probs(policy, k: int) -> np.ndarray:
        graphdef, state = nnx.split(policy)
        toks, cmask, _ = rows[k]
        prob = np.exp(np.asarray(logprob(graphdef, state, k, toks, cmask), np.float64))
        assert abs(prob.sum() - 1.0) < 1e-4, prob.sum()  # the enumeration is complete
        return prob

    def expected(policy) -> float:
        return float(np.mean([probs(policy, k) @ r for k, (_, _, r) in enumerate(rows)]))

    listing = [
        ([s.encoder.decode(q) for q in texts], r, functools.partial(probs, k=k))
        for k, (texts, (_, _, r)) in enumerate(zip(seqs_all, rows, strict=True))
    ]
    return expected, optimum, listing


@functools.cache
def evaluator(task: Task, encoder: PromptEncoder, ddi_weight: float = 0.0):
    """:func:`make_evaluator` of a task, built (and its programs traced) once per module."""
    s = setup(task, encoder, POLICY.decoder_config(encoder.tokenizer).vocab_size)
    return make_evaluator(s, ShapingConfig(ddi_weight=ddi_weight))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
    """One GRPO training: the pipeline's defaults except where a learning test needs speed."""

    steps: int = 40
    step_weight: float = 0.0
    ddi_weight: float = 0.0
    group_size: int = 8
    learning_rate: float = 3e-2
    micro_batches: int = 1
    lora_rank: int | None = 4
    temperature: float = 1.0
    kl_coef: float = 0.04
    embedding_scale: float = 1.0


class _Reached(Exception):
    """Raised by the rollout once the expected reward reaches ``train``'s ``stop_at``."""


def train(task: Task, encoder: PromptEncoder, run: Run, *, seed: int, out,
          stop_at: float | None = None):  # fmt: skip
    """Trains a fresh tiny policy's LoRA adapters with the pipeline's GRPO stage pieces.

    ``stop_at``: stop as soon as the expected reward reaches it (steps to a target need no more).

    Returns:
        ``[steps + 1]`` exact expected rewards (before each update and after the last; fewer
        when stopped at ``stop_at``) and the trained policy.
    """
    policy = build_policy(POLICY, encoder.tokenizer, None, seed=seed)
    wrt = nnx.Param
    emb = policy.decoder.embed_tokens.embedding
    emb[...] = emb[...] * run.embedding_scale
    if run.lora_rank is not None:
        add_lora(policy.decoder, LoraConfig(rank=run.lora_rank, alpha=2.0 * run.lora_rank),
                 rngs=nnx.Rngs(seed + 1))  # fmt: skip
        wrt = nnx.LoRAParam
    size = policy.decoder.config.vocab_size
    s = setup(task, encoder, size)
    shaping = ShapingConfig(ddi_weight=run.ddi_weight)
    loss = LossConfig(kl_coef=run.kl_coef)
    expected, _, _ = evaluator(task, encoder, run.ddi_weight)
    prompts = len(task.prompts)
    rollout = make_rollout(
        s.examples,
        s.truth,
        encoder,
        s.vocabulary,
        to_knowledge_tables(None),
        group_size=run.group_size,
        prompts_per_step=prompts,
        temperature=run.temperature,
        seed=seed + 2,
        vocab_size=size,
        grammar=edit_grammar(encoder, s.vocabulary, size),
        bans=edit_bans(encoder, s.vocabulary, s.examples, size),
    )
    curve = []

    def batch_fn(step, module):
        curve.append(expected(module))
        if stop_at is not None and curve[-1] >= stop_at:
            raise _Reached
        return rollout(step, module)

    advantage = AdvantageConfig(step_weight=run.step_weight)
    loss_fn = grpo_loss_fn(s.ddi, shaping=shaping, advantage=advantage, loss=loss)
    # One update more than the run, stopped before it: no checkpoint is ever written.
    config = LoopConfig(
        steps=run.steps + 1,
        batch_size=prompts,
        checkpoint_every=10**6,
        micro_batches=run.micro_batches,
        optimizer=OptimizerConfig(learning_rate=run.learning_rate),
    )
    try:
        run_loop(policy, wrt=wrt, loss_fn=loss_fn, batch_fn=batch_fn, config=config,
                 out=out, record={}, resume=False, progress=False, stop_after=run.steps,
                 micro_batching=grpo_micro_batching(loss))  # fmt: skip
        curve.append(expected(policy))
    except _Reached:
        pass
    return np.asarray(curve), policy


def steps_to(curve: np.ndarray, target: float) -> int | None:
    """The first number of updates after which the expected reward is >= target (None: never)."""
    hit = np.flatnonzero(curve >= target)
    return int(hit[0]) if hit.size else None


FRACTION = 0.9  # the target: this fraction of the optimal expected reward
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """Every seed's run builds the same programs (new closures, same HLO); a persistent
    compilation cache compiles each once, which keeps each test within its time budget."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")  # fmt: skip
    saved = {name: getattr(jax.config, name) for name in names}
    jax.config.update(names[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(names[1], 0.0)
    jax.config.update(names[2], -1)
    cc.reset_cache()  # the cache is switched on or off at the process's first compilation
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    cc.reset_cache()


def learn(task, encoder, run, tmp_path, seeds=SEEDS) -> list[int | None]:
    """Steps to the target of one training per seed (each stops at the target)."""
    _, optimum, _ = evaluator(task, encoder, run.ddi_weight)
    target = FRACTION * optimum
    return [steps_to(train(task, encoder, run, seed=seed, out=tmp_path / f"seed{seed}",
                           stop_at=target)[0], target) for seed in seeds]  # fmt: skip


def flipped_advantages(config):
    """Break: the advantages' sign flipped (a reward read as a cost)."""
    fn = make_advantage_fn(config)

    def advantage_fn(*args):
        return jax.tree.map(jnp.negative, fn(*args))

    return advantage_fn


def detached_logprobs(*args, **kwargs):
    """Break: the policy's log-probs detached (e.g. scored from the sampler's old log-probs),
    so no gradient reaches the weights."""
    return jax.lax.stop_gradient(completion_logprobs(*args, **kwargs))


def reversed_steps(texts, spans, *, max_tokens, max_steps):
    """Break: each completion's token -> step map read back to front (line t's tokens get the
    last-but-t line's advantage)."""
    ids = segment_tokens(texts, spans, max_tokens=max_tokens, max_steps=max_steps)
    last = ids.max(axis=1, keepdims=True)
    return np.where(ids >= 0, last - ids, -1).astype(np.int32)


BREAKS = {
    "sign_flipped": ("make_advantage_fn", flipped_advantages),
    "detached": ("completion_logprobs", detached_logprobs),
    "reversed_steps": ("segment_tokens", reversed_steps),
}


FAST = Run(steps=15, lora_rank=None, learning_rate=3e-2)
MODES = {"outcome_only": 0.0, "step_wise": 0.5}


def test_planted_optima_are_exact(encoder):
    """The enumeration covers every completion constrained decoding can draw, and the shaped
    rewards are the planted ones: +1/3 for the right add, -1/6 for a wrong one (bandit);
    +1/4 for either true add, -1/10 for the false one, and -lambda/3 for the interacting one;
    +1/4 per right add and -1/10 or less per wrong one, repeats no-ops (credit)."""
    _, optimum, [(texts, rewards, _)] = evaluator(bandit(), encoder)
    got = dict(zip(texts, rewards, strict=True))
    assert len(texts) == 7  # EOS; each of 3 names then EOS or a newline
    np.testing.assert_allclose([got[""], got["aspirin"], got["warfarin\n"], got["heparin"]],
                               [0.0, 1 / 3, -1 / 6, -1 / 6], atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(optimum, 1 / 3, atol=1e-6)
    for lam in (0.0, 1.5):
        _, optimum, [(texts, rewards, _)] = evaluator(interacting(), encoder, lam)
        got = dict(zip(texts, rewards, strict=True))
        np.testing.assert_allclose([got["aspirin"], got["warfarin"], got["heparin"]],
                                   [0.25, 0.25 - lam / 3, -0.1], atol=1e-6)  # fmt: skip
        np.testing.assert_allclose(optimum, 0.25, atol=1e-6)
    _, optimum, [(texts, rewards, _)] = evaluator(credit(), encoder)
    got = dict(zip(texts, rewards, strict=True))
    assert len(texts) == 1 + 2 * (4 + 4**2 + 4**3 + 4**4)  # EOS; k names, then EOS or newline
    lines = ["aspirin", "warfarin", "aspirin\nheparin", "aspirin\naspirin\nheparin",
             "aspirin\nwarfarin", "aspirin\nwarfarin\nheparin\ninsulin"]  # fmt: skip
    want = [1 / 4, -1 / 10, 1 / 2, 1 / 2, 1 / 10, 1 / 6]
    np.testing.assert_allclose([got[t] for t in lines], want, atol=1e-6)
    np.testing.assert_allclose(optimum, 1 / 2, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_bandit_reaches_the_optimum(encoder, tmp_path, mode):
    """Bandit (one prompt, 3 candidates, aspirin always right; optimum E[R] = 1/3): every seed
    reaches 90% of the optimal expected reward within 15 updates (measured: 4-8)."""
    steps = learn(bandit(), encoder, dataclasses.replace(FAST, step_weight=MODES[mode]),
                  tmp_path)  # fmt: skip
    assert all(s is not None and s <= 15 for s in steps), steps


CONTEXTUAL = Run(steps=40, lora_rank=None, learning_rate=3e-2, group_size=16, micro_batches=2)


@pytest.mark.parametrize("mode", MODES)
def test_contextual_bandit_reaches_the_optimum(encoder, tmp_path, mode):
    """Contextual bandit (two prompts differing in one word, "fever" -> aspirin, "cough" ->
    warfarin; optimum E[R] = 1/3 only by reading the word), groups of 16, 2 micro-batches of
    one prompt group each: at least 2 of 3 seeds reach 90% of the optimum within 40 updates
    (measured: all 3 in both modes; over seeds 0-15, 14 of 16 outcome-only and 15 of 16
    step-wise runs). Groups of 16 replace the pipeline's 8 because with 8, 4 of 16 runs (seeds
    0-7, both modes) stall in the context-blind policy (always one drug, E[R] = 1/12), where
    95% of the groups have equal rewards and GRPO's advantages are exactly zero; the failures
    left with 16 are slow runs whose groups do vary (see the log)."""
    steps = learn(contextual(), encoder, dataclasses.replace(CONTEXTUAL, step_weight=MODES[mode]),
                  tmp_path)  # fmt: skip
    assert sum(s is not None and s <= CONTEXTUAL.steps for s in steps) >= 2, steps


CREDIT = Run(steps=25, lora_rank=None, learning_rate=2e-2)
CREDIT_SEEDS = tuple(range(8))


@pytest.fixture(scope="module")
def credit_outcome_only(encoder, tmp_path_factory) -> list[int | None]:
    """Outcome-only GRPO's steps to the credit task's target per seed, shared by the
    credit-assignment test and its break (with w = 0 every token gets A_i: the token -> step
    map is not read)."""
    return learn(credit(), encoder, CREDIT, tmp_path_factory.mktemp("outcome"), CREDIT_SEEDS)


def credit_assignment_holds(outcome, step) -> bool:
    """The credit-assignment claim: every run reaches the target within the budget, step-wise
    GRPO's median number of updates is smaller than outcome-only's, and step-wise is no slower
    on at least 7 of the 8 seeds (the seed fixes the initial policy and the sampling keys of
    both modes, so the comparison is paired)."""
    reached = all(s is not None and s <= CREDIT.steps for s in (*outcome, *step))
    if not reached:
        return False
    no_slower = sum(s <= o for o, s in zip(outcome, step, strict=True))
    return np.median(step) < np.median(outcome) and no_slower >= 7


def test_credit_assignment(encoder, tmp_path, credit_outcome_only):
    """Up to four lines, each naming one of two right candidates (+1/4 each, a repeat is a
    no-op) or two wrong ones (-1/10 or less); optimum E[R] = 1/2. Outcome-only GRPO credits
    every line of "aspirin, warfarin, heparin" alike; step-wise GRPO credits the warfarin line
    with its own negative step reward. Over 8 seeds at lr 2e-2 every run reaches 90% of the
    optimum within 25 updates, and step-wise needs fewer: measured medians 12.5 vs 15.5,
    no slower on 8 of 8 seeds (on the held-out seeds 8-15: 13 vs 13.5, 7 of 8; at lr 1e-2:
    23 vs 26 and 23.5 vs 25). The gain is real but modest (10-20% fewer updates at every lr
    tried, 1e-2 to 5e-2): this tiny policy cannot tell its lines apart, so one shared
    line distribution is learned and the outcome advantage confounds lines only through
    noise (see experiments/flame/learning_tests_log.md)."""
    step = learn(credit(), encoder, dataclasses.replace(CREDIT, step_weight=0.5), tmp_path,
                 CREDIT_SEEDS)  # fmt: skip
    assert credit_assignment_holds(credit_outcome_only, step), (credit_outcome_only, step)


def test_lambda_skips_the_interacting_candidate(encoder, tmp_path):
    """Aspirin and warfarin both raise the Jaccard by 1/4; warfarin interacts with digoxin of
    P0. At lambda = 1.5 (warfarin's reward -1/4) every seed reaches 90% of the optimum 1/4
    within 20 updates and ends with P(a warfarin line) < 5%; at lambda = 0 either add is
    optimal, and every seed reaches the target as well."""
    _, optimum, [(texts, _, probs)] = evaluator(interacting(), encoder, 1.5)
    warfarin = np.array([t.startswith("warfarin") for t in texts])
    for lam in (1.5, 0.0):
        run = dataclasses.replace(FAST, steps=20, step_weight=0.5, ddi_weight=lam)
        for seed in SEEDS:
            curve, policy = train(interacting(), encoder, run, seed=seed,
                                  out=tmp_path / f"{lam}-{seed}")  # fmt: skip
            assert steps_to(curve, FRACTION * optimum) is not None, (lam, seed, curve)
            if lam > 0:
                assert probs(policy) @ warfarin < 0.05, (seed, probs(policy) @ warfarin)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("broken", ["sign_flipped", "detached"])
def test_a_broken_gradient_fails_the_bandit(encoder, tmp_path, monkeypatch, mode, broken):
    """With the advantages' sign flipped or the policy's log-probs detached, no seed reaches
    the bandit's target within the budget of the bandit test (the flipped sign drives the
    expected reward down, the detached log-probs leave the policy where it started)."""
    name, fn = BREAKS[broken]
    monkeypatch.setattr(grpo_module, name, fn)
    run = dataclasses.replace(FAST, step_weight=MODES[mode])
    _, optimum, _ = evaluator(bandit(), encoder)
    for seed in SEEDS:
        curve, _ = train(bandit(), encoder, run, seed=seed, out=tmp_path / str(seed))
        assert steps_to(curve, FRACTION * optimum) is None, (seed, curve)
        if broken == "sign_flipped":
            assert curve[-1] < curve[0] - 0.1, curve
        else:
            np.testing.assert_allclose(curve, curve[0], atol=1e-6)


def test_a_wrong_token_to_step_map_fails_credit_assignment(
    encoder, tmp_path, monkeypatch, credit_outcome_only
):
    """With each completion's token -> step map read back to front, step-wise GRPO credits
    line t with the step reward of the last-but-t line, and the credit-assignment claim fails
    (measured step-wise steps to target 22, 17, 14, 22, 15, 19, 23, 23: median 20.5, against
    outcome-only's 15.5 and the unbroken 12.5)."""
    monkeypatch.setattr(grpo_module, *BREAKS["reversed_steps"])
    step = learn(credit(), encoder, dataclasses.replace(CREDIT, step_weight=0.5), tmp_path,
                 CREDIT_SEEDS)  # fmt: skip
    assert not credit_assignment_holds(credit_outcome_only, step), (credit_outcome_only, step)
