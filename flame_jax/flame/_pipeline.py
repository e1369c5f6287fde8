"""The FLAME pipeline as resumable stages over one run folder, driven by a frozen ``FlameConfig``.

Stages (each skipped when its output exists, each training stage resumed from its last Orbax
checkpoint):

1. ``data``: the dataset (the built-in synthetic cohort, or a dataset folder) and its splits;
2. ``baselines``: LR, GAMENet-style and SafeDrug-style recommenders fitted on train only
   (``flame_jax.baselines``), their test metrics and embedding exports;
3. ``knowledge``: the fusion tables (``knowledge.npz``, :mod:`flame_jax.flame._knowledge`);
4. ``tokenizer``: the offline BPE tokenizer over the vocabulary's names and the prompt words;
5. ``cls``: pi_cls trained on every (train visit, drug); p(Yes) of every visit; the error profile
   of its train predictions;
6. ``sft``: pi_list fine-tuned on seeded edit tasks that follow that profile;
7. ``grpo``: step-wise GRPO from the SFT policy, once per lambda (DDI weight) of the sweep;
8. ``eval``: the comparison table on the test split (bootstrap std), the trade-off plot.

Run folder: ``config.yaml`` (the resolved config), ``baselines/<model>/``, ``knowledge.npz``,
``tokenizer/``, ``cls/``, ``sft/``, ``grpo/lambda_<x>/`` (each: ``checkpoints/``,
``metrics.jsonl``, ``curves.png``, ``policy.npz``; with per-task adapters, the same in
``grpo/lambda_<x>/add/`` and ``.../remove/``), ``eval/`` (``metrics.json``, ``table.md``,
``metrics.png``, ``tradeoff.png``).

Choices where the original is inconsistent (spec §10), consistent here: the refusal term is a
potential (telescopes); P0 is ``p_yes > 0.5``; the edit-task generator is seeded and smoothed;
add and remove run independently on P0; greedy decoding with an explicit token cap; one BOS
convention in every stage; the KL reference is the SFT policy (adapters off).
"""

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from flame_jax.baselines import BaselineConfig
from flame_jax.data import SyntheticConfig, drug_vocabulary
from flame_jax.flame._loop import LoopConfig
from flame_jax.flame._policy import PolicyConfig
from flame_jax.flame._prompts import PromptConfig
from flame_jax.policy import LoraConfig
from flame_jax.rl import AdvantageConfig, LossConfig, ShapingConfig
from flame_jax.train import MeshConfig, OptimizerConfig

__all__ = [
    "STAGES",
    "BaselineStage",
    "FlameConfig",
    "GrpoStage",
    "run_pipeline",
    "save_tradeoff_plot",
]

STAGES = ("baselines", "knowledge", "tokenizer", "cls", "sft", "grpo", "eval")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaselineStage:
    """Epochs per baseline (0 skips it) and their width; GAMENet and LR are required."""

    lr_epochs: int = 8
    gamenet_epochs: int = 8
    safedrug_epochs: int = 4
    dim: int = 16
    batch_size: int = 32

    def __post_init__(self):
        for name in ("lr_epochs", "gamenet_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"BaselineStage.{name} must be >= 1, got {getattr(self, name)}")
        if self.safedrug_epochs < 0 or self.dim < 1 or self.batch_size < 1:
            raise ValueError(
                "BaselineStage: safedrug_epochs must be >= 0 and dim, batch_size >= 1, got "
                f"{self.safedrug_epochs}, {self.dim}, {self.batch_size}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class GrpoStage:
    """Step-wise GRPO settings.

    Attributes:
        loop: steps, prompts per step (``batch_size``), optimizer.
        group_size: G, completions per prompt.
        temperature: sampling temperature of the rollouts.
        tasks: synthetic edit tasks to draw the prompts from (x2: add and remove).
        prompts: "synthetic": P0 from seeded errors following pi_cls's profile (the original);
            "cls": P0 = pi_cls's own predictions on the train visits it did not train on
            (``FlameConfig.list_holdout``; the test-time input distribution; ``tasks`` is then
            unused).
        remove_prompts: "all": every "remove" prompt of ``prompts`` (the original);
            "interacting": only those whose P0 holds an interacting pair (the "add" prompts stay
            all). Elsewhere a removal can only cost accuracy, and those prompts' uniformly
            negative removals taught a model trained from scratch to stop editing altogether,
            "add" included (measured on the demo); the interacting ones are where lambda acts.
        adapters: "shared": one set of adapters trained on both tasks' prompts (the original:
            one pi_list); "per_task": one set per task, each trained by its own GRPO run (same
            loop settings) on its task's prompts only, and each used for its task's edits.
            With one shared set, the prompts where any edit lowers the reward ("remove" under
            lambda = 0) taught the demo's model trained from scratch to stop editing in the
            other task too (measured); the tasks are separate episodes with separate prompts
            (spec 5.1), so separate adapters change no reward or advantage.
        lora: the adapters trained by GRPO (the reference policy is the model without them).
        lambdas: the DDI weights of the sweep (one run each; the first is the table's
            "pi_list after GRPO").
        jaccard_weight, refusal_weight, refusal, gamma: reward shaping
            (``flame_jax.rl.ShapingConfig``; lambda is its ``ddi_weight``).
        estimator, step_mode, step_weight, mixing: advantages (``flame_jax.rl.AdvantageConfig``;
            ``step_weight`` 0 is outcome-only GRPO).
        kl_coef, epsilon_low, epsilon_high, aggregation: the loss (``flame_jax.rl.LossConfig``).
    """

    loop: LoopConfig = dataclasses.field(
        default_factory=lambda: LoopConfig(
            steps=100,
            batch_size=8,
            checkpoint_every=25,
            optimizer=OptimizerConfig(
                learning_rate=1e-3, schedule="cosine", warmup_steps=5, total_steps=100
            ),
        )
    )
    group_size: int = 4
    temperature: float = 1.0
    tasks: int = 400
    prompts: str = "cls"
    remove_prompts: str = "all"
    adapters: str = "shared"
    lora: LoraConfig = dataclasses.field(default_factory=lambda: LoraConfig(rank=8, alpha=16.0))
    lambdas: tuple[float, ...] = (0.0, 3.0)
    jaccard_weight: float = 1.0
    refusal_weight: float = 0.2
    refusal: str = "potential"
    gamma: float = 1.0
    estimator: str = "grpo"
    step_mode: str = "marginal"
    step_weight: float = 0.5
    mixing: str = "convex"
    kl_coef: float = 0.04
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    aggregation: str = "sequence_mean_token_mean"

    def shaping(self, ddi_weight: float) -> ShapingConfig:
        """The reward shaping with DDI weight ``ddi_weight`` (lambda)."""
        return ShapingConfig(jaccard_weight=self.jaccard_weight, ddi_weight=float(ddi_weight),
                             refusal_weight=self.refusal_weight, gamma=self.gamma,
                             refusal=self.refusal)  # fmt: skip

    def advantage(self) -> AdvantageConfig:
        """The advantage config."""
        return AdvantageConfig(estimator=self.estimator, step_mode=self.step_mode,
                               step_weight=self.step_weight, mixing=self.mixing)  # fmt: skip

    def loss(self) -> LossConfig:
        """The loss config."""
        return LossConfig(kl_coef=self.kl_coef, epsilon_low=self.epsilon_low,
                          epsilon_high=self.epsilon_high, aggregation=self.aggregation)  # fmt: skip

    def __post_init__(self):
        if self.group_size < 2:
            raise ValueError(f"GrpoStage.group_size must be >= 2, got {self.group_size}")
        if not self.temperature > 0:
            raise ValueError(f"GrpoStage.temperature must be > 0, got {self.temperature}")
        if self.tasks < 1 or not self.lambdas or any(x < 0 for x in self.lambdas):
            raise ValueError(
                f"GrpoStage: tasks must be >= 1 and lambdas non-empty and >= 0, got "
                f"{self.tasks}, {self.lambdas}"
            )
        object.__setattr__(self, "lambdas", tuple(float(x) for x in self.lambdas))
        if self.prompts not in ("synthetic", "cls"):
            raise ValueError(
                f"GrpoStage.prompts must be 'synthetic' or 'cls', got {self.prompts!r}"
            )
        if self.remove_prompts not in ("all", "interacting"):
            raise ValueError(
                "GrpoStage.remove_prompts must be 'all' or 'interacting', got "
                f"{self.remove_prompts!r}"
            )
        if self.adapters not in ("shared", "per_task"):
            raise ValueError(
                f"GrpoStage.adapters must be 'shared' or 'per_task', got {self.adapters!r}"
            )
        try:
            self.shaping(0.0), self.advantage(), self.loss()
        except ValueError as e:
            raise ValueError(f"GrpoStage: {e}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlameConfig:
    """Everything a FLAME run depends on (the run is a pure function of it).

    Attributes:
        seed: root seed.
        data: a dataset folder (``flame-jax data synth/prepare`` output); None generates the
            built-in synthetic cohort from ``synthetic``.
        truth: folder with the planted ``rules.json`` for the oracle row (synthetic only).
        synthetic: the cohort when ``data`` is None.
        baselines: baseline training.
        prompt: prompt rendering.
        policy: the model (a decoder trained from scratch, tokenizer built offline).
        evidence: fuse each drug slot of a visit's prompt with the GAMENet-style baseline's
            logit of that drug for that visit (``knowledge_tables(evidence=True)``), besides the
            drug vector; off: drug slots carry the drug vector only (the paper's fusion).
        train_mode: "full" trains all weights in pi_cls and SFT (a model from scratch has no
            pretrained base to adapt); "lora" trains LoRA adapters and the projectors, as the
            paper does with a pretrained LLM.
        stage_lora: adapters of pi_cls and SFT in "lora" mode.
        cls: pi_cls training; ``batch_size`` counts visits (each with every drug).
        threshold: P0 = drugs with p_yes > threshold.
        list_holdout: fraction of the train patients that pi_cls does not train on; pi_list's SFT
            error profile and tasks and its GRPO prompts are built on them, so that pi_list learns
            to repair pi_cls's errors on visits pi_cls has not seen -- the errors it makes at test
            time (on its own train visits pi_cls is far more accurate, and edits learned there
            do not transfer). 0 uses all train visits for every stage (the original).
        sft: pi_list SFT training.
        sft_tasks: synthetic edit tasks for SFT (x2 examples: add and remove).
        constrain_edits: list-editing generation (GRPO rollouts and evaluation) may only write
            whole drug names, one per line, and EOS (``flame_jax.flame.edit_grammar``), and
            only drugs its task can act on: an add line names one of the prompt's candidates (a
            drug outside P0 when none are listed), a remove line a drug of P0
            (``flame_jax.flame.edit_bans``); off: any token (the original). A model trained from
            scratch otherwise spends its GRPO samples on free text that names no drug (measured:
            about one invalid line per completion after SFT) and on no-op lines (a third of the
            add samples named a drug already in P0).
        sft_prompts: "synthetic": SFT on ``sft_tasks`` seeded error injections that follow
            pi_cls's error profile (the original); "cls": SFT on pi_cls's real predictions for
            the held-out train visits (``list_holdout``), the targets being its real misses
            (among the candidates) and extras. A model trained from scratch learns from the
            injected errors (drawn by drug frequency, not by pi_cls's doubt) edits that do not
            transfer to pi_cls's real mistakes (docs/flame.md).
        grpo: step-wise GRPO.
        eval_rounds: bootstrap rounds of the table.
        eval_batch: generation batch of the evaluation.
        mesh: run the training stages sharded on a ``data`` x ``fsdp`` x ``tp`` device mesh
            (``flame_jax.train.MeshConfig``); None: one device. Not part of a stage's
            checkpoint record, so a run may resume on another mesh shape.
    """

    seed: int = 0
    data: str | None = None
    truth: str | None = None
    synthetic: SyntheticConfig = dataclasses.field(default_factory=lambda: SyntheticConfig())
    baselines: BaselineStage = dataclasses.field(default_factory=lambda: BaselineStage())
    prompt: PromptConfig = dataclasses.field(
        default_factory=lambda: PromptConfig(
            history=False, max_codes=4, code_names=False, candidates=3, interaction_notes=True
        )
    )
    policy: PolicyConfig = dataclasses.field(default_factory=lambda: PolicyConfig())
    evidence: bool = True
    train_mode: str = "full"
    stage_lora: LoraConfig = dataclasses.field(
        default_factory=lambda: LoraConfig(rank=8, alpha=16.0, targets=("q", "v"))
    )
    cls: LoopConfig = dataclasses.field(
        default_factory=lambda: LoopConfig(
            steps=150,
            batch_size=16,
            optimizer=OptimizerConfig(
                learning_rate=3e-3, schedule="cosine", warmup_steps=15, total_steps=150
            ),
        )
    )
    threshold: float = 0.5
    list_holdout: float = 0.4
    sft: LoopConfig = dataclasses.field(
        default_factory=lambda: LoopConfig(
            steps=60,
            batch_size=32,
            optimizer=OptimizerConfig(
                learning_rate=2e-3, schedule="cosine", warmup_steps=6, total_steps=60
            ),
        )
    )
    sft_tasks: int = 2000
    sft_prompts: str = "cls"
    constrain_edits: bool = True
    grpo: GrpoStage = dataclasses.field(default_factory=lambda: GrpoStage())
    eval_rounds: int = 10
    eval_batch: int = 64
    mesh: MeshConfig | None = None

    def __post_init__(self):
        if self.train_mode not in ("full", "lora"):
            raise ValueError(
                f"FlameConfig.train_mode must be 'full' or 'lora', got {self.train_mode!r}"
            )
        if not 0 < self.threshold < 1:
            raise ValueError(f"FlameConfig.threshold must be in (0, 1), got {self.threshold}")
        if self.sft_prompts not in ("synthetic", "cls"):
            raise ValueError(
                f"FlameConfig.sft_prompts must be 'synthetic' or 'cls', got {self.sft_prompts!r}"
            )
        if not 0 <= self.list_holdout < 1:
            raise ValueError(f"FlameConfig.list_holdout must be in [0, 1), got {self.list_holdout}")
        for stage in ("cls", "sft"):
            if getattr(self, stage).micro_batches != 1:
                raise ValueError(
                    f"FlameConfig.{stage}.micro_batches must be 1: only the GRPO stage "
                    f"accumulates over micro-batches, got {getattr(self, stage).micro_batches}"
                )
        if self.sft_tasks < 1 or self.eval_rounds < 1 or self.eval_batch < 1:
            raise ValueError(
                "FlameConfig: sft_tasks, eval_rounds and eval_batch must be >= 1, got "
                f"{self.sft_tasks}, {self.eval_rounds}, {self.eval_batch}"
            )
        if not self.policy.fusion and self.evidence:
            object.__setattr__(self, "evidence", False)
        if not self.policy.fusion and self.prompt.entity_slots:
            object.__setattr__(
                self,
                "prompt",
                dataclasses.replace(self.prompt, entity_slots=False, code_names=True),
            )

    @classmethod
    def demo(cls, **overrides: Any) -> "FlameConfig":
        """The default demo: a 400-patient cohort and the tiny model (CPU, minutes).

        Against the defaults: the cohort has the curated class-level interactions
        (``class_ddi_density=1``; pi_cls then proposes interacting drugs, about a third of its
        best add candidates interact with its list) and keeps interacting pairs more often
        (``p_avoid=0.3``); GRPO trains per-task adapters with no KL term and a learning rate of
        5e-3, its updates over 4 micro-batches of 2 prompt groups (the same gradient; a median
        GRPO step of 0.48 s against 0.73 s in one piece, measured). The GRPO settings were
        measured against their alternatives (docs/flame.md): with one shared adapter, or
        a KL coefficient of 0.01 or 0.04, or 1e-3, the greedy edits of the lambda = 0 policy did
        not change in 100 steps.
        """
        loop = GrpoStage().loop
        kwargs: dict[str, Any] = {
            "synthetic": SyntheticConfig(
                patients=400,
                drugs=24,
                diag_codes=60,
                proc_codes=24,
                max_visits=4,
                p_avoid=0.3,
                class_ddi_density=1.0,
            ),
            "grpo": GrpoStage(
                adapters="per_task",
                kl_coef=0.0,
                loop=dataclasses.replace(
                    loop,
                    optimizer=dataclasses.replace(loop.optimizer, learning_rate=5e-3),
                    micro_batches=4,
                ),
            ),
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def tiny(cls, **overrides: Any) -> "FlameConfig":
        """A few steps of every stage on ``SyntheticConfig.tiny()`` (tests)."""
        opt = OptimizerConfig(learning_rate=3e-3, total_steps=4)
        kwargs: dict[str, Any] = {
            "synthetic": SyntheticConfig.tiny(patients=40),
            "baselines": BaselineStage(lr_epochs=1, gamenet_epochs=1, safedrug_epochs=1, dim=8),
            "policy": PolicyConfig(
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                num_kv_heads=1,
                projector_hidden=16,
            ),
            "cls": LoopConfig(steps=3, batch_size=4, optimizer=opt, checkpoint_every=2),
            "sft": LoopConfig(steps=3, batch_size=4, optimizer=opt, checkpoint_every=2),
            "sft_tasks": 16,
            "grpo": GrpoStage(
                loop=LoopConfig(steps=3, batch_size=2, optimizer=opt, checkpoint_every=2),
                group_size=2,
                tasks=8,
                lora=LoraConfig(rank=2, alpha=4.0),
                lambdas=(0.0, 1.0),
            ),
            "eval_rounds": 2,
            "eval_batch": 16,
        }
        kwargs.update(overrides)
        return cls(**kwargs)


# ------------------------------------------------------------------------------------------------


class _Run:
    """The run's loaded pieces, built lazily stage by stage."""

    def __init__(self, config: FlameConfig, out: Path, progress: bool, log: Callable):
        self.config, self.out, self.progress, self.log = config, out, progress, log
        self.rules = None
        if config.data is None:
            from flame_jax.data import generate_cohort

            cohort = generate_cohort(config.synthetic)
            self.dataset, self.rules = cohort.dataset, cohort.rules
        else:
            from flame_jax.data import load_dataset, load_rules

            self.dataset = load_dataset(config.data)
            if config.truth is not None:
                self.rules = load_rules(Path(config.truth) / "rules.json")
        from flame_jax.flame._prompts import previous_visit_rows

        self.previous = previous_visit_rows(self.dataset)
        self.truth = self.dataset.visits.med.multi_hot(self.dataset.num_meds)
        self.reports: dict[str, Any] = {}
        self.generators: dict[tuple[int, int], Any] = {}

    # -- pieces ---------------------------------------------------------------------------------
    @property
    def mesh(self):
        """The device mesh of ``config.mesh`` (None: one device), built once."""
        if self.config.mesh is None:
            return None
        if getattr(self, "_mesh", None) is None:
            from flame_jax.train import make_mesh

            self._mesh = make_mesh(self.config.mesh)
        return self._mesh

    def tables(self) -> dict[str, np.ndarray] | None:
        from flame_jax.flame._knowledge import load_tables

        return load_tables(self.out / "knowledge.npz") if self.config.policy.fusion else None

    def encoder(self):
        from flame_jax.flame._encode import PromptEncoder
        from flame_jax.policy import load_tokenizer

        return PromptEncoder(load_tokenizer(self.out / "tokenizer"))

    def vocabulary(self):
        # Edit lines name drugs by title or synonym, never by code.
        return drug_vocabulary(self.dataset.med_vocab, codes=False)

    def policy(self, encoder, tables, load: Path | None):
        from flame_jax.flame._policy import build_policy, load_policy

        p = build_policy(self.config.policy, encoder.tokenizer, tables, seed=self.config.seed)
        return load_policy(p, load) if load is not None else p


def train_parts(run: _Run) -> tuple[np.ndarray, np.ndarray]:
    """``(cls_rows, list_rows)``: the train visits of pi_cls and those of pi_list's stages.

    ``list_holdout`` of the train patients (seeded, whole patients) go to pi_list; with
    ``list_holdout == 0`` both parts are the whole train split.
    """
    train = run.dataset.split_rows("train")
    frac = run.config.list_holdout
    if frac == 0:
        return train, train
    patients = np.unique(run.dataset.visits.patient_id[train])
    rng = np.random.default_rng([run.config.seed, 11])
    k = min(max(round(frac * len(patients)), 1), len(patients) - 1)
    held = rng.choice(patients, size=k, replace=False)
    in_list = np.isin(run.dataset.visits.patient_id[train], held)
    return train[~in_list], train[in_list]


def _rounded(x: float) -> str:
    return f"{x:g}".replace(".", "p")


def grpo_dir(out: Path, lam: float) -> Path:
    """The run's GRPO folder of DDI weight ``lam``."""
    return out / "grpo" / f"lambda_{_rounded(lam)}"


EDIT_TASKS = ("add", "remove")


def grpo_policies(out: Path, grpo: GrpoStage, lam: float) -> dict[str, Path]:
    """The trained pi_list of each edit task for DDI weight ``lam``: ``{"add": path, "remove":
    path}`` (one path twice with ``grpo.adapters == "shared"``, ``<grpo_dir>/<task>/policy.npz``
    with "per_task")."""
    folder = grpo_dir(Path(out), lam)
    if grpo.adapters == "per_task":
        return {t: folder / t / "policy.npz" for t in EDIT_TASKS}
    return dict.fromkeys(EDIT_TASKS, folder / "policy.npz")


def _stage_baselines(run: _Run) -> None:
    from flame_jax._io import write_json_atomic
    from flame_jax.baselines import (
        evaluate_trained,
        export_embeddings,
        load_run,
        train_baseline,
    )

    c = run.config.baselines
    epochs = {"lr": c.lr_epochs, "gamenet": c.gamenet_epochs, "safedrug": c.safedrug_epochs}
    for model, n in epochs.items():
        if n == 0:
            continue
        folder = run.out / "baselines" / model
        if (folder / "embeddings.npz").is_file() and (folder / "test_metrics.json").is_file():
            continue
        run.log(f"  baseline {model}: {n} epochs (train split only)")
        cfg = BaselineConfig.tiny(
            model, dim=c.dim, epochs=n, patience=n, batch_size=c.batch_size, seed=run.config.seed
        )
        resume = (folder / "checkpoints").is_dir()
        train_baseline(
            run.dataset, cfg, folder, resume=resume, overwrite=not resume, progress=run.progress
        )
        trained = load_run(folder, dataset=run.dataset)
        report = evaluate_trained(
            trained,
            split="test",
            rounds=run.config.eval_rounds,
            seed=run.config.seed,
            name=model,
        )
        export_embeddings(trained, folder / "embeddings.npz")
        write_json_atomic(folder / "test_metrics.json", report.to_json())


def _stage_knowledge(run: _Run) -> None:
    from flame_jax.baselines import load_embeddings
    from flame_jax.flame._knowledge import knowledge_tables, save_tables

    path = run.out / "knowledge.npz"
    if path.is_file() or not run.config.policy.fusion:
        return
    emb = {
        m: load_embeddings(run.out / "baselines" / m / "embeddings.npz")
        for m in ("lr", "gamenet", "safedrug")
        if (run.out / "baselines" / m / "embeddings.npz").is_file()
    }
    drugs = tuple(emb[m] for m in ("gamenet", "safedrug") if m in emb)
    tables = knowledge_tables(
        run.dataset,
        patient=emb["gamenet"],
        codes=emb["lr"],
        drugs=drugs,
        evidence=run.config.evidence,
    )
    save_tables(tables, path)


def _stage_tokenizer(run: _Run) -> None:
    from flame_jax.flame._prompts import render_cls_prompt, render_list_prompt
    from flame_jax.policy import ENTITY_TOKENS, build_tiny_tokenizer

    path = run.out / "tokenizer"
    if path.is_dir():
        return
    if run.config.policy.pretrained is not None:
        _pretrained_tokenizer(run.config.policy.pretrained, path)
        return
    ds = run.dataset
    words = list(ds.med_vocab.titles) + list(ds.diag_vocab.titles) + list(ds.proc_vocab.titles)
    words += [s for syn in (ds.med_vocab.synonyms or ()) for s in syn]
    full = PromptConfig(candidates=1, interaction_notes=True)
    samples = [render_cls_prompt(ds, 0, 0).text] + [
        render_list_prompt(ds, 0, [0], task, config=full, candidates=[1]).text
        for task in ("add", "remove")
    ]
    words += ["(interacts", "with", "interacts"]
    for text in samples:
        for token in ENTITY_TOKENS:
            text = text.replace(token, " ")
        words += [w for w in text.replace("[", " ").replace("]", " ").split() if w.strip()]
    words += ["Yes", "No", "Yes.", "No."]
    build_tiny_tokenizer(sorted(set(words)), path)


def _pretrained_tokenizer(source: str, path: Path) -> None:
    """The pretrained model's tokenizer with the slot tokens added (and a pad token if none)."""
    from flame_jax._io import atomic_directory
    from flame_jax.flame._encode import SLOT_TOKENS
    from flame_jax.policy import load_tokenizer

    tok = load_tokenizer(source)
    missing = [t for t in SLOT_TOKENS.values() if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    with atomic_directory(path) as tmp:
        tok.save_pretrained(tmp)


def _save_curves(folder: Path, keys: tuple[str, ...], title: str) -> None:
    from flame_jax.train import read_metrics, save_training_curves

    rows = read_metrics(folder / "metrics.jsonl")
    if rows:
        save_training_curves(rows, keys, folder / "curves.png", title=title)


def _trainable(mode: str):
    from flax import nnx

    if mode == "full":
        return nnx.Param
    return nnx.Any(nnx.LoRAParam, nnx.PathContains("projectors"))


def _train(
    run: _Run,
    policy,
    folder: Path,
    *,
    loop: LoopConfig,
    curves: tuple[str, ...],
    stop_after: int | None,
    desc: str,
    **loop_args: Any,
) -> bool:
    """Runs (or resumes) one training stage; when it reaches ``loop.steps``, plots its curves and
    writes ``policy.npz`` (LoRA merged). Returns whether it finished."""
    from flame_jax.flame._loop import run_loop
    from flame_jax.flame._policy import save_policy
    from flame_jax.policy import has_lora, merge_lora

    run_loop(policy, config=loop, out=folder, stop_after=stop_after, progress=run.progress,
             desc=desc, mesh=run.mesh, **loop_args)  # fmt: skip
    if stop_after is not None and stop_after < loop.steps:
        return False
    _save_curves(folder, curves, desc)
    if has_lora(policy.decoder):
        merge_lora(policy.decoder)
    save_policy(policy, folder / "policy.npz")
    return True


def _record(run: _Run, stage: str, extra: Any) -> dict[str, Any]:
    from flame_jax._records import record_to_plain

    return json.loads(
        json.dumps({"stage": stage, "seed": run.config.seed, "config": record_to_plain(extra)})
    )


def _stage_cls(run: _Run, *, stop_after: int | None = None) -> None:
    from flax import nnx

    from flame_jax._io import write_json_atomic, write_npz_atomic
    from flame_jax.flame._cls import cls_batch, cls_data, cls_loss, score_visits
    from flame_jax.flame._edit_tasks import error_profile
    from flame_jax.flame._policy import to_knowledge_tables
    from flame_jax.policy import add_lora

    c, folder = run.config, run.out / "cls"
    if (folder / "scores.npz").is_file():
        return
    enc, tables = run.encoder(), run.tables()
    policy = run.policy(enc, tables, None)
    if c.train_mode == "lora":
        add_lora(policy.decoder, c.stage_lora, rngs=nnx.Rngs(c.seed + 1))
    data = cls_data(run.dataset, enc, config=c.prompt, previous=run.previous, evidence=c.evidence)
    kt = to_knowledge_tables(tables)
    train, list_rows = train_parts(run)

    def batch_fn(step, _policy):
        rng = np.random.default_rng([c.seed, 1, step])
        rows = rng.choice(train, size=c.cls.batch_size, replace=len(train) < c.cls.batch_size)
        b = cls_batch(data, rows, kt)
        tokens = int(data.prefixes.mask[rows].sum() + len(rows) * data.suffix[1].sum())
        return b, {"tokens": tokens}

    record = _record(run, "cls", (c.cls, c.prompt, c.policy, c.train_mode, c.list_holdout))
    finished = _train(
        run, policy, folder, loop=c.cls, stop_after=stop_after, desc="pi_cls",
        curves=("loss", "accuracy", "grad_norm", "lr", "tokens_per_s"),
        wrt=_trainable(c.train_mode), loss_fn=cls_loss(enc.yes_id, enc.no_id),
        batch_fn=batch_fn, record=record,
    )  # fmt: skip
    if not finished:
        return
    p_yes = score_visits(
        policy, data, np.arange(len(run.dataset.visits)), kt, yes_id=enc.yes_id, no_id=enc.no_id
    )
    pred = p_yes > c.threshold
    prof = error_profile(pred[list_rows], run.truth[list_rows])
    write_json_atomic(folder / "error_profile.json", prof.to_json())
    write_npz_atomic(folder / "scores.npz", {"p_yes": p_yes.astype(np.float32)})


def _p0(run: _Run) -> tuple[np.ndarray, np.ndarray]:
    with np.load(run.out / "cls" / "scores.npz") as z:
        p_yes = z["p_yes"]
    return p_yes, p_yes > run.config.threshold


def _tasks(run: _Run, samples: int, seed_offset: int):
    from flame_jax.flame._edit_tasks import error_profile, synthesize_edit_tasks

    _, pred = _p0(run)
    _, train = train_parts(run)
    prof = error_profile(pred[train], run.truth[train])
    sets = [np.flatnonzero(run.truth[r]) for r in train]
    tasks = synthesize_edit_tasks(
        prof, sets, train, samples=samples, seed=run.config.seed + seed_offset
    )
    return _candidates(run, tasks)


def _candidates(run: _Run, tasks):
    """``tasks`` with pi_cls's best-scored drugs outside P0 as "add" candidates (if configured)."""
    from flame_jax.flame._edit_tasks import with_candidates

    p_yes, _ = _p0(run)
    return with_candidates(tasks, p_yes, run.config.prompt.candidates)


def _cls_tasks(run: _Run, rows: np.ndarray):
    """Edit tasks whose P0 is pi_cls's prediction for each visit of ``rows``."""
    from flame_jax.flame._edit_tasks import EditTask

    _, pred = _p0(run)

    def ids(x):
        return tuple(int(d) for d in np.flatnonzero(x))

    return _candidates(run, [
        EditTask(row=int(r), pre_list=ids(pred[r]), add=ids(run.truth[r] & ~pred[r]),
                 remove=ids(pred[r] & ~run.truth[r]))
        for r in rows
    ])  # fmt: skip


def _target_bucket(run: _Run, enc) -> int:
    """The completion length of every list stage: the longest name per line for the largest
    visit plus one line, and EOS (one compile per shape across stages)."""
    from flame_jax.flame._encode import bucket

    most = int(run.dataset.visits.med.lengths().max())
    per_line = max(len(enc.text_ids(n + "\n")) for n in run.dataset.med_vocab.titles)
    return bucket(per_line * (most + 1) + 1, 8)


def _list_examples(run: _Run, enc, tasks):
    """Tokenised list-editing examples of ``tasks``, targets padded to the run's length bucket."""
    from flame_jax.flame._sft import list_examples

    target_length = _target_bucket(run, enc)
    c = run.config
    return list_examples(
        run.dataset,
        enc,
        tasks,
        config=c.prompt,
        previous=run.previous,
        target_length=target_length,
        evidence=c.evidence,
    )


def _stage_sft(run: _Run, *, stop_after: int | None = None) -> None:
    from flax import nnx

    from flame_jax.flame._policy import to_knowledge_tables
    from flame_jax.flame._sft import sft_batch, sft_loss
    from flame_jax.policy import add_lora

    c, folder = run.config, run.out / "sft"
    if (folder / "policy.npz").is_file():
        return
    enc, tables = run.encoder(), run.tables()
    policy = run.policy(enc, tables, run.out / "cls" / "policy.npz")
    if c.train_mode == "lora":
        add_lora(policy.decoder, c.stage_lora, rngs=nnx.Rngs(c.seed + 2))
    if c.sft_prompts == "cls":
        tasks = _cls_tasks(run, train_parts(run)[1])
    else:
        tasks = _tasks(run, c.sft_tasks, 100)
    ex = _list_examples(run, enc, tasks)
    kt = to_knowledge_tables(tables)

    def batch_fn(step, _policy):
        rng = np.random.default_rng([c.seed, 2, step])
        idx = rng.choice(len(ex.rows), size=c.sft.batch_size, replace=False)
        tokens = int(ex.prompts.mask[idx].sum() + ex.target_mask[idx].sum())
        return sft_batch(ex, idx, kt), {"tokens": tokens}

    record = _record(
        run,
        "sft",
        (c.sft, c.sft_tasks, c.sft_prompts, c.prompt, c.train_mode, c.list_holdout),
    )
    _train(
        run, policy, folder, loop=c.sft, stop_after=stop_after, desc="pi_list SFT",
        curves=("loss", "grad_norm", "lr", "tokens_per_s"),
        wrt=_trainable(c.train_mode), loss_fn=sft_loss, batch_fn=batch_fn, record=record,
    )  # fmt: skip


def _stage_grpo(run: _Run, lam: float, *, stop_after: int | None = None) -> None:
    from flame_jax.flame._sft import select_examples

    g = run.config.grpo
    if all(p.is_file() for p in grpo_policies(run.out, g, lam).values()):
        return
    enc = run.encoder()
    if g.prompts == "cls":
        tasks = _cls_tasks(run, train_parts(run)[1])
    else:
        tasks = _tasks(run, g.tasks, 200)
    ex = _list_examples(run, enc, tasks)
    if g.remove_prompts == "interacting":
        ex = select_examples(ex, _keep_interacting_removes(ex, run.dataset.ddi))
        run.log(f"GRPO prompts: {ex.tasks.count('add')} add, {ex.tasks.count('remove')} remove "
                "(P0 with an interacting pair)")  # fmt: skip
    folder = grpo_dir(run.out, lam)
    if g.adapters == "shared":
        _grpo_run(run, lam, enc, ex, folder, "", stop_after=stop_after)
        return
    for k, task in enumerate(EDIT_TASKS):
        idx = np.flatnonzero(np.asarray(ex.tasks) == task)
        if idx.size == 0:
            raise ValueError(f"GRPO with per-task adapters: no {task!r} prompts to train on")
        _grpo_run(run, lam, enc, select_examples(ex, idx), folder / task, task,
                  stop_after=stop_after, seed_offset=k)  # fmt: skip


def _grpo_run(
    run: _Run, lam: float, enc, ex, folder: Path, task: str, *, stop_after, seed_offset: int = 0
) -> None:
    """One GRPO training of fresh adapters on the SFT policy over the prompts ``ex``."""
    from flax import nnx

    from flame_jax.flame._grpo import grpo_loss_fn, grpo_micro_batching, make_rollout
    from flame_jax.flame._policy import to_knowledge_tables
    from flame_jax.policy import add_lora

    c, g = run.config, run.config.grpo
    if (folder / "policy.npz").is_file():
        return
    tables = run.tables()
    policy = run.policy(enc, tables, run.out / "sft" / "policy.npz")
    add_lora(policy.decoder, g.lora, rngs=nnx.Rngs(c.seed + 3))
    batch_fn = make_rollout(
        ex,
        run.truth,
        enc,
        run.vocabulary(),
        to_knowledge_tables(tables),
        group_size=g.group_size,
        prompts_per_step=g.loop.batch_size,
        temperature=g.temperature,
        seed=c.seed + 7 + seed_offset,
        vocab_size=policy.decoder.config.vocab_size,
        grammar=_grammar(run, enc, policy.decoder.config.vocab_size),
        bans=_bans(run, enc, ex, policy.decoder.config.vocab_size),
    )
    loss_fn = grpo_loss_fn(
        run.dataset.ddi.astype(bool), shaping=g.shaping(lam), advantage=g.advantage(), loss=g.loss()
    )
    name = f"grpo lambda={lam}" + (f" {task}" if task else "")
    record = _record(run, name, (g, c.prompt, c.list_holdout, c.constrain_edits))
    curves = ("reward", "reward_jaccard", "reward_ddi", "reward_refusal", "kl", "clip_fraction",
              "advantage_std", "completion_length", "tokens_per_s")  # fmt: skip
    _train(
        run, policy, folder, loop=g.loop, stop_after=stop_after,
        desc=f"step-wise GRPO, lambda={lam:g}" + (f", {task}" if task else ""), curves=curves,
        wrt=nnx.LoRAParam, loss_fn=loss_fn, batch_fn=batch_fn, record=record,
        micro_batching=grpo_micro_batching(g.loss()),
    )  # fmt: skip


def _keep_interacting_removes(ex, ddi: np.ndarray) -> np.ndarray:
    """Indices of the examples to keep: every "add", and the "remove" examples whose P0 holds an
    interacting pair."""
    from flame_jax.metrics import ddi_pair_counts

    p0 = np.zeros((len(ex.initial), len(ddi)), bool)
    for i, drugs in enumerate(ex.initial):
        p0[i, list(drugs)] = True
    interacting = np.asarray(ddi_pair_counts(p0, ddi)[0]) > 0
    return np.flatnonzero((np.asarray(ex.tasks) == "add") | interacting)


def _grammar(run: _Run, enc, vocab_size: int):
    """The grammar of constrained list-editing generation (None when off)."""
    from flame_jax.flame._grpo import edit_grammar

    return edit_grammar(enc, run.vocabulary(), vocab_size) if run.config.constrain_edits else None


def _bans(run: _Run, enc, ex, vocab_size: int):
    """Per-example bans of constrained generation: the drugs each edit can act on (None when
    off)."""
    from flame_jax.flame._grpo import edit_bans

    if not run.config.constrain_edits:
        return None
    return edit_bans(enc, run.vocabulary(), ex, vocab_size)


def _edit_final(run: _Run, policies: Mapping[str, Path], enc, tables, rows, p0) -> np.ndarray:
    """The final sets ``(P0 | Add) - Remove`` of ``rows``, each task's greedy edits made by its
    policy of ``policies`` (``{"add": path, "remove": path}``; one load when both are the same)."""
    from flame_jax.flame._edit_tasks import EditTask
    from flame_jax.flame._evaluate import final_sets, greedy_edits, greedy_generator
    from flame_jax.flame._policy import to_knowledge_tables
    from flame_jax.flame._sft import select_examples

    c = run.config
    tasks = _candidates(run, [
        EditTask(row=int(r), pre_list=tuple(int(d) for d in np.flatnonzero(p)), add=(), remove=())
        for r, p in zip(rows, p0, strict=True)
    ])  # fmt: skip
    ex = _list_examples(run, enc, tasks)
    key = (ex.prompts.tokens.shape[1], ex.target_mask.shape[1])
    if key not in run.generators:
        run.generators[key] = greedy_generator(enc, ex, batch_size=c.eval_batch)
    kind = np.asarray(ex.tasks)
    groups = (
        [(policies["add"], np.arange(len(kind)))]
        if policies["add"] == policies["remove"]
        else [(policies[t], np.flatnonzero(kind == t)) for t in EDIT_TASKS]
    )
    states: list = [None] * len(kind)
    grammar = None
    for path, idx in groups:
        policy = run.policy(enc, tables, path)
        if run.mesh is not None:  # generation follows the weights' shardings
            from flame_jax.train import shard_module

            shard_module(policy, run.mesh)
        part = ex if len(idx) == len(kind) else select_examples(ex, idx)
        vocab_size = policy.decoder.config.vocab_size
        grammar = grammar or _grammar(run, enc, vocab_size)
        done = greedy_edits(
            policy,
            part,
            enc,
            run.vocabulary(),
            to_knowledge_tables(tables),
            batch_size=c.eval_batch,
            generate=run.generators[key],
            grammar=grammar,
            bans=_bans(run, enc, part, vocab_size),
        )
        for i, state in zip(idx.tolist(), done, strict=True):
            states[i] = state
    added, removed = states[0::2], states[1::2]
    return final_sets([t.pre_list for t in tasks], added, removed, run.dataset.num_meds)


def _stage_eval(run: _Run) -> tuple[str, dict[str, Any]]:
    import jax

    from flame_jax._io import write_bytes_atomic, write_json_atomic
    from flame_jax.data import most_frequent_recommend, oracle_recommend
    from flame_jax.metrics import METRIC_COLUMNS, MetricsReport, evaluate_sets, format_table
    from flame_jax.plots import save_metrics_plot

    c, ds = run.config, run.dataset
    folder = run.out / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    rows = ds.split_rows("test")
    truth = run.truth[rows]
    patient = ds.visits.patient_id[rows]
    key = jax.random.key(c.seed)
    enc, tables = run.encoder(), run.tables()
    p_yes, pred = _p0(run)
    p_yes, p0 = p_yes[rows], pred[rows]

    def report(name, i, sets, scores=None):
        del i  # one key for every row: a paired bootstrap (the same resampled patients)
        return evaluate_sets(
            name,
            sets,
            truth,
            patient,
            key=key,
            scores=scores,
            ddi=ds.ddi,
            rounds=c.eval_rounds,
        )

    reports = []
    mf, mf_scores = most_frequent_recommend(ds, rows)
    reports.append(report("most-frequent", 0, mf, mf_scores))
    for model in ("lr", "gamenet", "safedrug"):
        path = run.out / "baselines" / model / "test_metrics.json"
        if path.is_file():
            d = json.loads(path.read_text())
            reports.append(
                MetricsReport(
                    name=model,
                    mean=d["mean"],
                    std=d["std"],
                    visits=d["visits"],
                    patients=d["patients"],
                    rounds=d["rounds"],
                )
            )
    reports.append(report("pi_cls alone", 1, p0, p_yes))
    sft_path = run.out / "sft" / "policy.npz"
    sft = _edit_final(run, dict.fromkeys(EDIT_TASKS, sft_path), enc, tables, rows, p0)
    reports.append(report("pi_list after SFT", 2, sft))
    tradeoff = []
    for k, lam in enumerate(c.grpo.lambdas):
        sets = _edit_final(run, grpo_policies(run.out, c.grpo, lam), enc, tables, rows, p0)
        r = report(f"pi_list after GRPO (lambda={lam:g})", 3 + k, sets)
        reports.append(r)
        tradeoff.append((lam, r))
    if run.rules is not None:
        o, o_scores = oracle_recommend(run.rules, ds, rows)
        reports.append(report("oracle (planted)", 99, o, o_scores))
    table = format_table(reports)
    summary = {
        "split": "test",
        "rounds": c.eval_rounds,
        "reports": [r.to_json() for r in reports],
        "tradeoff": [
            {"lambda": lam, "jaccard": r.mean["jaccard"], "ddi_rate": r.mean["ddi_rate"]}
            for lam, r in tradeoff
        ],
    }
    write_json_atomic(folder / "metrics.json", summary)
    write_bytes_atomic(folder / "table.md", (table + "\n").encode())
    save_metrics_plot(
        reports, folder / "metrics.png", columns=METRIC_COLUMNS, title=f"{ds.name}, test split"
    )
    save_tradeoff_plot(tradeoff, folder / "tradeoff.png")
    return table, summary


def save_tradeoff_plot(points, path: Path) -> Path:
    """Jaccard against DDI rate over the lambda sweep (the paper's figure 5), with bootstrap std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flame_jax.plots import save_figure

    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    xs = [r.mean["ddi_rate"] for _, r in points]
    ys = [r.mean["jaccard"] for _, r in points]
    ax.errorbar(
        xs,
        ys,
        xerr=[r.std["ddi_rate"] for _, r in points],
        yerr=[r.std["jaccard"] for _, r in points],
        marker="o",
        capsize=3,
    )
    for (lam, _), x, y in zip(points, xs, ys, strict=True):
        ax.annotate(f"λ={lam:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("DDI rate (test)")
    ax.set_ylabel("Jaccard (test)")
    ax.set_title("pi_list after step-wise GRPO: safety-accuracy trade-off", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def run_pipeline(
    config: FlameConfig,
    out: str | Path,
    *,
    stages: tuple[str, ...] = STAGES,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[str | None, dict[str, Any]]:
    """Runs (or resumes) the FLAME stages ``stages`` in order in the run folder ``out``.

    A folder holding another run's ``config.yaml`` is refused (use a new folder).

    Returns:
        ``(table, summary)`` from the eval stage (``(None, {...})`` when it was not run);
        ``summary["seconds"]`` has each stage's wall time.

    Raises:
        ValueError: unknown stage, or ``out`` belongs to a run with another config.
    """
    from flame_jax.config import dump_config, load_config

    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"unknown stages {bad}; choose from {STAGES}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.yaml"
    if cfg_path.is_file():
        # The mesh only places the computation: a run may resume on another mesh shape.
        saved = dataclasses.replace(load_config(FlameConfig, cfg_path), mesh=None)
        if saved != dataclasses.replace(config, mesh=None):
            raise ValueError(
                f"{out}: holds a run with another config ({cfg_path}); "
                "use a new folder or --overwrite"
            )
    else:
        dump_config(config, cfg_path)
    t0 = time.perf_counter()
    run = _Run(config, out, progress, log)
    seconds: dict[str, float] = {"data": time.perf_counter() - t0}
    table, summary = None, {}
    actions = {
        "baselines": _stage_baselines,
        "knowledge": _stage_knowledge,
        "tokenizer": _stage_tokenizer,
        "cls": _stage_cls,
        "sft": _stage_sft,
        "grpo": lambda r: [_stage_grpo(r, lam) for lam in config.grpo.lambdas],
    }
    for stage in stages:
        t = time.perf_counter()
        log(f"[flame] stage {stage}")
        if stage == "eval":
            table, summary = _stage_eval(run)
        else:
            actions[stage](run)
        seconds[stage] = time.perf_counter() - t
    summary = {**summary, "seconds": seconds}
    return table, summary
