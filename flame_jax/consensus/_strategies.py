"""Ensemble selection strategies and their evaluation over a vignette set.

Strategies (consensus_spec §4.1), each choosing ``N`` members per round:

* ``REMOTE``: N distinct members drawn uniformly from the remote pool, per round.
* ``LOCAL``: N distinct members drawn uniformly from the local pool, per round.
* ``RANDOM``: N members drawn uniformly **with replacement** from both pools (as in (C)'s logs;
  a member drawn twice answers and reviews twice, and its identical answers merge into one item).
* ``PERFORMANCE``: the fixed top-N members by mean compound accuracy on the calibration
  history (ties: lower median latency, then name).
* ``CHEMISTRY``: the fixed ensemble that LLM Chemistry recommends from the calibration history
  (a caller-supplied ``chemistry`` function; see :func:`evaluate_strategies`).

The calibration history is made by running the ``calibration_strategies`` on a calibration
vignette set that must be **disjoint** from the evaluation set (checked by vignette id), so the
fixed ensembles never see the evaluation answers.

Metrics per strategy, over all rounds (vignettes x repetitions):

* ``jaccard``: mean Jaccard of the final answer with the gold set; ``match``: the fraction of
  rounds whose answer reaches ``RoundConfig.match_threshold`` (the binary correctness).
* ``compound``: mean compound accuracy 0.75 gen + 0.25 rho of the members' history rows.
* ``generation_s``: mean wall time of the (parallel) generation stage; ``elapsed_s``: of the
  whole round; ``latency_sum_s``: mean sum of the members' own generation times.
* ``failures``: mean generation failures per round; ``review_failures`` likewise.
* ``reviewer_variance`` / ``reviewer_variance_median``: mean / median Vancouver reviewer
  variance v_r (squared [0, 1] grade units) over all reviewers of all rounds.
* ``ece``: expected calibration error of the confidence q (the answer's consensus grade)
  against the binary correctness: with B equal-width bins of [0, 1] (the last one closed),
  ``ECE = sum_b (n_b / n) |mean(correct in b) - mean(q in b)|`` over the n rounds whose
  confidence is defined; ``brier``: mean (q - correct)^2 over the same rounds;
  ``undefined_confidence``: the fraction of rounds without a confidence (no item reviewed).

Intervals: percentile bootstrap over vignettes (a resample draws vignettes with replacement and
keeps all repetitions of each, since repetitions of one vignette are not independent), with
``bootstrap_rounds`` resamples at ``ci_level``.
"""

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from flame_jax.arraytypes import PRNGKeyArray
from flame_jax.consensus._members import Member
from flame_jax.consensus._protocol import RoundConfig, RoundResult, history_rows, run_round
from flame_jax.consensus._vignettes import Vignette
from flame_jax.data import DrugVocabulary

__all__ = [
    "METRICS",
    "STRATEGIES",
    "EvaluationConfig",
    "EvaluationResult",
    "StrategyReport",
    "chemistry_selector",
    "evaluate_strategies",
    "expected_calibration_error",
    "format_paired",
    "format_strategy_table",
    "paired_difference",
    "performance_ensemble",
    "save_evaluation",
]

STRATEGIES = ("REMOTE", "LOCAL", "RANDOM", "CHEMISTRY", "PERFORMANCE")
_FIXED = ("CHEMISTRY", "PERFORMANCE")

METRICS = (
    ("jaccard", "Jaccard"),
    ("match", "match rate"),
    ("compound", "compound acc."),
    ("generation_s", "generation (s)"),
    ("elapsed_s", "round (s)"),
    ("latency_sum_s", "sum of latencies (s)"),
    ("failures", "failures / round"),
    ("review_failures", "review failures / round"),
    ("reviewer_variance", "reviewer var."),
    ("reviewer_variance_median", "reviewer var. (median)"),
    ("ece", "ECE"),
    ("brier", "Brier"),
    ("undefined_confidence", "no confidence"),
)

ChemistryFn = Callable[[Sequence[Mapping[str, Any]], Sequence[str], int], Sequence[str]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluationConfig:
    """How strategies are compared.

    Attributes:
      strategies: which of :data:`STRATEGIES` to evaluate, in table order.
      ensemble_size: N, members per round.
      repetitions: rounds per vignette and strategy (fresh draws for the sampling strategies).
      calibration_strategies: strategies run on the calibration set to build the history.
      calibration_repetitions: their repetitions per calibration vignette.
      bootstrap_rounds, ci_level: the percentile bootstrap over vignettes.
      calibration_bins: B, the ECE's equal-width bins.
      round: the round's settings.
    """

    strategies: tuple[str, ...] = STRATEGIES
    ensemble_size: int = 3
    repetitions: int = 3
    calibration_strategies: tuple[str, ...] = ("REMOTE", "LOCAL", "RANDOM")
    calibration_repetitions: int = 1
    bootstrap_rounds: int = 1000
    ci_level: float = 0.95
    calibration_bins: int = 10
    round: RoundConfig = dataclasses.field(default_factory=RoundConfig)

    def __post_init__(self):
        for field in ("strategies", "calibration_strategies"):
            values = tuple(getattr(self, field))
            object.__setattr__(self, field, values)
            for s in values:
                if s not in STRATEGIES:
                    raise ValueError(
                        f"EvaluationConfig.{field}: unknown strategy {s!r} (known: {STRATEGIES})"
                    )
            if len(set(values)) != len(values):
                raise ValueError(f"EvaluationConfig.{field} lists a strategy twice: {values}")
        if not self.strategies:
            raise ValueError("EvaluationConfig.strategies is empty")
        for s in self.calibration_strategies:
            if s in _FIXED:
                raise ValueError(
                    f"EvaluationConfig.calibration_strategies: {s} needs the history it would "
                    "build; use REMOTE, LOCAL or RANDOM"
                )
        for field in (
            "ensemble_size",
            "repetitions",
            "calibration_repetitions",
            "bootstrap_rounds",
            "calibration_bins",
        ):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"EvaluationConfig.{field} must be an integer >= 1, got {v!r}")
        if not 0 < self.ci_level < 1:
            raise ValueError(f"EvaluationConfig.ci_level must be in (0, 1), got {self.ci_level}")

    @classmethod
    def tiny(cls, **overrides: Any) -> "EvaluationConfig":
        """Two repetitions, 200 bootstrap resamples: for tests and smoke runs."""
        kwargs: dict[str, Any] = {"repetitions": 2, "bootstrap_rounds": 200}
        kwargs.update(overrides)
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StrategyReport:
    """One strategy's metrics: means, bootstrap intervals, and what it ran.

    Attributes:
      name: the strategy.
      rounds: rounds run; vignettes: distinct vignettes.
      mean: metric -> value over all rounds (NaN when undefined, e.g. ECE without confidences).
      low, high: metric -> bootstrap interval bounds.
      ensembles: "a+b+c" -> number of rounds that used that ensemble.
    """

    name: str
    rounds: int
    vignettes: int
    mean: Mapping[str, float]
    low: Mapping[str, float]
    high: Mapping[str, float]
    ensembles: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        def clean(d):
            return {k: (None if not math.isfinite(v) else v) for k, v in d.items()}

        return {
            "name": self.name,
            "rounds": self.rounds,
            "vignettes": self.vignettes,
            "mean": clean(self.mean),
            "low": clean(self.low),
            "high": clean(self.high),
            "ensembles": dict(self.ensembles),
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluationResult:
    """Everything an evaluation produced.

    Attributes:
      reports: one per strategy, in config order.
      rounds: strategy -> its rounds.
      history: performance-history rows (consensus_spec §1.1) of the calibration rounds, then of
        the evaluation rounds.
      fixed_ensembles: strategy -> the member names of a fixed ensemble (PERFORMANCE, CHEMISTRY).
      paired: strategy -> (mean, low, high) of its paired difference in Jaccard against the
        first strategy (:func:`paired_difference`; the first strategy itself is left out).
    """

    reports: tuple[StrategyReport, ...]
    rounds: Mapping[str, tuple[RoundResult, ...]]
    history: tuple[Mapping[str, Any], ...]
    fixed_ensembles: Mapping[str, tuple[str, ...]]
    paired: Mapping[str, tuple[float, float, float]] = dataclasses.field(default_factory=dict)


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, *, bins: int = 10
) -> float:
    """ECE with equal-width bins: sum_b (n_b/n) |acc_b - conf_b| (NaN when n = 0).

    Bin b holds confidences in [b/B, (b+1)/B), the last bin also 1.0. NaN confidences are
    skipped.

    Examples:
      >>> conf, correct = np.array([0.9, 0.9, 0.2, 0.2]), np.array([1, 0, 0, 0])
      >>> round(expected_calibration_error(conf, correct), 6)  # (2/4)|0.5-0.9| + (2/4)|0-0.2|
      0.3
    """
    conf = np.asarray(confidence, np.float64)
    corr = np.asarray(correct, np.float64)
    keep = np.isfinite(conf)
    conf, corr = conf[keep], corr[keep]
    if not conf.size:
        return float("nan")
    which = np.minimum((np.clip(conf, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(corr[sel].mean() - conf[sel].mean())
    return float(total)


def _metrics(rounds: Sequence[RoundResult], history: Sequence[Mapping], bins: int) -> dict:
    conf = np.array([r.confidence for r in rounds])
    corr = np.array([r.correct for r in rounds], np.float64)
    defined = np.isfinite(conf)
    variances = np.array(
        [
            m.reviewer_variance
            for r in rounds
            for m in r.members
            if math.isfinite(m.reviewer_variance)
        ]
    )
    compound = np.array([row["accuracy"] for row in history])
    nan = float("nan")
    return {
        "jaccard": float(np.mean([r.jaccard for r in rounds])),
        "match": float(corr.mean()),
        "compound": float(compound.mean()) if compound.size else nan,
        "generation_s": float(np.mean([r.generation_s for r in rounds])),
        "elapsed_s": float(np.mean([r.elapsed_s for r in rounds])),
        "latency_sum_s": float(np.mean([sum(m.latency_s for m in r.members) for r in rounds])),
        "failures": float(np.mean([r.failures for r in rounds])),
        "review_failures": float(np.mean([r.review_failures for r in rounds])),
        "reviewer_variance": float(variances.mean()) if variances.size else nan,
        "reviewer_variance_median": float(np.median(variances)) if variances.size else nan,
        "ece": expected_calibration_error(conf, corr, bins=bins),
        "brier": float(np.mean((conf[defined] - corr[defined]) ** 2)) if defined.any() else nan,
        "undefined_confidence": float(1.0 - defined.mean()),
    }


def _report(
    name: str,
    rounds: Sequence[RoundResult],
    history: Sequence[Mapping],
    config: EvaluationConfig,
    rng: np.random.Generator,
) -> StrategyReport:
    mean = _metrics(rounds, history, config.calibration_bins)
    by_vignette: dict[str, list[int]] = {}
    for i, r in enumerate(rounds):
        by_vignette.setdefault(r.vignette, []).append(i)
    rows_of: dict[str, list[Mapping]] = {}
    for row in history:
        rows_of.setdefault(row["trial"], []).append(row)
    groups = list(by_vignette.values())
    samples: dict[str, list[float]] = {k: [] for k in mean}
    for _ in range(config.bootstrap_rounds):
        pick = rng.integers(0, len(groups), len(groups))
        sel = [rounds[i] for g in pick for i in groups[g]]
        hist = [row for r in sel for row in rows_of.get(r.trial, ())]
        for k, v in _metrics(sel, hist, config.calibration_bins).items():
            samples[k].append(v)
    alpha = (1 - config.ci_level) / 2
    low, high = {}, {}
    for k, vals in samples.items():
        arr = np.array(vals)
        arr = arr[np.isfinite(arr)]
        low[k] = float(np.quantile(arr, alpha)) if arr.size else float("nan")
        high[k] = float(np.quantile(arr, 1 - alpha)) if arr.size else float("nan")
    ensembles: dict[str, int] = {}
    for r in rounds:
        key = "+".join(m.name for m in r.members)
        ensembles[key] = ensembles.get(key, 0) + 1
    return StrategyReport(
        name=name,
        rounds=len(rounds),
        vignettes=len(groups),
        mean=mean,
        low=low,
        high=high,
        ensembles=dict(sorted(ensembles.items())),
    )


def paired_difference(
    rounds: Sequence[RoundResult],
    reference: Sequence[RoundResult],
    *,
    rng: np.random.Generator,
    resamples: int = 1000,
    ci_level: float = 0.95,
    metric: str = "jaccard",
) -> tuple[float, float, float]:
    """Paired difference of a per-round metric between two strategies run on the same vignettes.

    Each vignette's value is the mean over its repetitions; the difference is the mean over
    vignettes of (strategy - reference), with a percentile bootstrap that resamples vignettes
    (the same draw for both strategies, which is what makes it paired).

    Returns:
      ``(mean, low, high)``.

    Raises:
      ValueError: the two strategies did not run on the same vignettes.
    """

    def per_vignette(rs):
        out: dict[str, list[float]] = {}
        for r in rs:
            out.setdefault(r.vignette, []).append(float(getattr(r, metric)))
        return {k: float(np.mean(v)) for k, v in out.items()}

    a, b = per_vignette(rounds), per_vignette(reference)
    if set(a) != set(b):
        raise ValueError("paired_difference: the strategies ran on different vignettes")
    keys = sorted(a)
    diff = np.array([a[k] - b[k] for k in keys])
    picks = rng.integers(0, len(diff), (resamples, len(diff)))
    boot = diff[picks].mean(axis=1)
    alpha = (1 - ci_level) / 2
    return float(diff.mean()), float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))


def performance_ensemble(
    history: Sequence[Mapping[str, Any]], names: Sequence[str], size: int
) -> tuple[str, ...]:
    """The top-``size`` members by mean compound accuracy in ``history`` (PERFORMANCE).

    Members without a row rank last (accuracy 0); ties go to the lower median latency, then the
    name.

    Examples:
      >>> rows = [{"model": "a", "accuracy": 0.5, "latency": 1.0},
      ...         {"model": "b", "accuracy": 0.9, "latency": 3.0},
      ...         {"model": "c", "accuracy": 0.5, "latency": 0.5}]
      >>> performance_ensemble(rows, ["a", "b", "c", "d"], 3)
      ('b', 'c', 'a')
    """
    if size > len(names):
        raise ValueError(f"PERFORMANCE: ensemble size {size} > {len(names)} members")
    acc: dict[str, list[float]] = {n: [] for n in names}
    lat: dict[str, list[float]] = {n: [] for n in names}
    for row in history:
        if row["model"] in acc:
            acc[row["model"]].append(float(row["accuracy"]))
            lat[row["model"]].append(float(row["latency"]))

    def rank(n: str):
        return (
            -(float(np.mean(acc[n])) if acc[n] else 0.0),
            float(np.median(lat[n])) if lat[n] else math.inf,
            n,
        )

    return tuple(sorted(names, key=rank)[:size])


def _draw(
    strategy: str,
    members: Sequence[Member],
    size: int,
    rng: np.random.Generator,
    fixed: Mapping[str, tuple[int, ...]],
) -> list[Member]:
    if strategy in fixed:
        return [members[i] for i in fixed[strategy]]
    if strategy == "RANDOM":
        return [members[i] for i in rng.integers(0, len(members), size)]
    pool = [m for m in members if m.pool == strategy.lower()]
    if len(pool) < size:
        raise ValueError(
            f"{strategy}: the {strategy.lower()} pool has {len(pool)} members, fewer than the "
            f"ensemble size {size}"
        )
    return [pool[i] for i in rng.choice(len(pool), size, replace=False)]


def _run(
    strategy: str,
    vignettes: Sequence[Vignette],
    members: Sequence[Member],
    vocab: DrugVocabulary,
    config: EvaluationConfig,
    repetitions: int,
    seed: np.random.SeedSequence,
    fixed: Mapping[str, tuple[int, ...]],
    bar,
) -> tuple[list[RoundResult], list[dict]]:
    rounds, rows = [], []
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for rep, rep_seed in enumerate(seed.spawn(repetitions)):
        for v, v_seed in zip(vignettes, rep_seed.spawn(len(vignettes)), strict=True):
            rng = np.random.default_rng(v_seed)
            ensemble = _draw(strategy, members, config.ensemble_size, rng, fixed)
            result = run_round(
                v,
                ensemble,
                vocab,
                seed=int(rng.integers(2**31)),
                config=config.round,
                strategy=strategy,
                trial=f"{v.id} {rep}",
            )
            rounds.append(result)
            rows += history_rows(
                result,
                vocab,
                v.gold,
                match_threshold=config.round.match_threshold,
                created=created,
            )
            bar.update(1)
    return rounds, rows


def evaluate_strategies(
    members: Sequence[Member],
    vignettes: Sequence[Vignette],
    calibration: Sequence[Vignette],
    vocab: DrugVocabulary,
    *,
    key: PRNGKeyArray,
    config: EvaluationConfig = EvaluationConfig(),
    chemistry: ChemistryFn | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Runs every strategy over ``vignettes`` and reports the metrics of the module docstring.

    Args:
      members: the model pool (names must be unique; pools from ``member.pool``).
      vignettes: the evaluation set, with gold sets.
      calibration: the calibration set for PERFORMANCE and CHEMISTRY; disjoint from
        ``vignettes`` by id (may be empty when neither strategy is evaluated).
      vocab: the medication vocabulary.
      key: a JAX PRNG key; every draw and shuffle derives from it (same key, same ensembles).
      config: strategies, ensemble size, repetitions, bootstrap.
      chemistry: ``(history rows, member names, size) -> member names`` of the recommended
        ensemble (needed for CHEMISTRY).
      progress: show a progress bar.

    Returns:
      An :class:`EvaluationResult`.

    Raises:
      ValueError: overlapping sets, duplicate member names, a pool too small for the ensemble
        size, or CHEMISTRY without a ``chemistry`` function.
    """
    import jax
    from tqdm.auto import tqdm

    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"member names must be unique, got {names}")
    if not vignettes:
        raise ValueError("the evaluation vignette set is empty")
    overlap = {v.id for v in vignettes} & {v.id for v in calibration}
    if overlap:
        raise ValueError(
            f"calibration and evaluation vignettes overlap ({len(overlap)} ids, e.g. "
            f"{sorted(overlap)[0]!r}); the calibration set must be disjoint"
        )
    wants_history = any(s in _FIXED for s in config.strategies)
    if wants_history and not calibration:
        raise ValueError("PERFORMANCE and CHEMISTRY need a non-empty calibration vignette set")
    if "CHEMISTRY" in config.strategies and chemistry is None:
        raise ValueError("the CHEMISTRY strategy needs a chemistry function")
    # Check every pool up front rather than failing halfway through.
    probe = np.random.default_rng(0)
    for s in {*config.strategies, *(config.calibration_strategies if wants_history else ())}:
        if s not in _FIXED:
            _draw(s, members, config.ensemble_size, probe, {})

    bits = np.asarray(jax.random.bits(key, (4,), dtype=np.uint32))
    root = np.random.SeedSequence([int(b) for b in bits])
    cal_seed, eval_seed, boot_seed = root.spawn(3)
    n_cal = len(config.calibration_strategies) * config.calibration_repetitions * len(calibration)
    total = len(config.strategies) * config.repetitions * len(vignettes)
    total += n_cal if wants_history else 0
    history: list[dict] = []
    fixed: dict[str, tuple[int, ...]] = {}
    with tqdm(total=total, disable=not progress, desc="consensus rounds", unit="round") as bar:
        if wants_history:
            for s, s_seed in zip(
                config.calibration_strategies,
                cal_seed.spawn(len(config.calibration_strategies)),
                strict=True,
            ):
                _, rows = _run(
                    s, calibration, members, vocab, config, config.calibration_repetitions,
                    s_seed, {}, bar,
                )  # fmt: skip
                history += rows
            index = {n: i for i, n in enumerate(names)}
            if "PERFORMANCE" in config.strategies:
                chosen = performance_ensemble(history, names, config.ensemble_size)
                fixed["PERFORMANCE"] = tuple(index[n] for n in chosen)
            if "CHEMISTRY" in config.strategies:
                assert chemistry is not None
                chosen = tuple(chemistry(history, names, config.ensemble_size))
                unknown = [n for n in chosen if n not in index]
                if unknown or len(chosen) != config.ensemble_size:
                    raise ValueError(
                        f"CHEMISTRY: the chemistry function returned {chosen}, not "
                        f"{config.ensemble_size} member names"
                    )
                fixed["CHEMISTRY"] = tuple(index[n] for n in chosen)
        rounds: dict[str, tuple[RoundResult, ...]] = {}
        reports = []
        eval_rows: list[dict] = []
        boot = np.random.default_rng(boot_seed)
        for s, s_seed in zip(
            config.strategies, eval_seed.spawn(len(config.strategies)), strict=True
        ):
            res, rows = _run(
                s, vignettes, members, vocab, config, config.repetitions, s_seed, fixed, bar
            )
            rounds[s] = tuple(res)
            eval_rows += rows
            reports.append(_report(s, res, rows, config, boot))
    first = config.strategies[0]
    paired = {
        s: paired_difference(
            rounds[s],
            rounds[first],
            rng=boot,
            resamples=config.bootstrap_rounds,
            ci_level=config.ci_level,
        )
        for s in config.strategies[1:]
    }
    return EvaluationResult(
        reports=tuple(reports),
        rounds=rounds,
        history=tuple(history + eval_rows),
        fixed_ensembles={s: tuple(names[i] for i in idx) for s, idx in fixed.items()},
        paired=paired,
    )


def _fmt(v: float, lo: float, hi: float) -> str:
    if not math.isfinite(v):
        return "n/a"
    digits = 3 if abs(v) < 100 else 1
    if math.isfinite(lo) and math.isfinite(hi):
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{v:.{digits}f}"


def format_strategy_table(
    reports: Sequence[StrategyReport], *, metrics: Sequence[str] | None = None
) -> str:
    """A Markdown table: one row per strategy, each cell ``mean [low, high]``."""
    cols = [(k, t) for k, t in METRICS if metrics is None or k in metrics]
    head = "| strategy | rounds | " + " | ".join(t for _, t in cols) + " |"
    rule = "|---|---:|" + "---:|" * len(cols)
    lines = [head, rule]
    for r in reports:
        cells = [_fmt(r.mean[k], r.low[k], r.high[k]) for k, _ in cols]
        lines.append(f"| {r.name} | {r.rounds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_paired(result: EvaluationResult) -> str:
    """One line per strategy: its paired difference in Jaccard against the first strategy."""
    if not result.paired:
        return ""
    ref = result.reports[0].name
    lines = [f"paired difference in Jaccard against {ref} (bootstrap over vignettes):"]
    for s, (m, lo, hi) in result.paired.items():
        lines.append(f"  {s:12s} {m:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    return "\n".join(lines)


def _plots(result: EvaluationResult, out, title: str) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flame_jax.plots import save_figure

    reports = result.reports
    names = [r.name for r in reports]
    x = np.arange(len(reports))
    panels = [
        ("jaccard", "Jaccard with gold"),
        ("generation_s", "generation stage (s)"),
        ("failures", "failures per round"),
        ("ece", "calibration error (ECE)"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    for ax, (k, label) in zip(axes, panels, strict=True):
        mean = np.array([r.mean[k] for r in reports])
        lo = np.array([r.low[k] for r in reports])
        hi = np.array([r.high[k] for r in reports])
        ok = np.isfinite(mean)
        err = np.stack([np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)])
        ax.bar(x[ok], mean[ok], yerr=err[:, ok], capsize=3, color="#4c72b0")
        ax.set_xticks(x, names, rotation=30, ha="right")
        floor = 1.0 if k == "failures" else 1e-3  # counts: an axis of whole failures
        ax.set_ylim(bottom=0.0, top=max(float(np.nanmax(hi, initial=0.0)) * 1.1, floor))
        ax.set_title(label)
    fig.suptitle(title)
    fig.subplots_adjust(wspace=0.35)
    written = [save_figure(fig, out / "strategies.png")]

    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1)
    edges = np.linspace(0, 1, 11)
    for s, rounds in result.rounds.items():
        conf = np.array([r.confidence for r in rounds])
        corr = np.array([r.correct for r in rounds], np.float64)
        keep = np.isfinite(conf)
        conf, corr = conf[keep], corr[keep]
        if not conf.size:
            continue
        which = np.minimum((conf * 10).astype(int), 9)
        xs = [conf[which == b].mean() for b in range(10) if (which == b).any()]
        ys = [corr[which == b].mean() for b in range(10) if (which == b).any()]
        ax.plot(xs, ys, marker="o", label=s)
    ax.set_xticks(edges[::2])
    ax.set_xlabel("confidence (consensus grade of the answer)")
    ax.set_ylabel("fraction correct")
    ax.set_title("reliability diagram")
    ax.legend(fontsize=8)
    written.append(save_figure(fig, out / "calibration.png"))
    return written


def save_evaluation(
    result: EvaluationResult,
    out,
    *,
    overwrite: bool = False,
    title: str = "consensus strategies",
    extra: Mapping[str, Any] | None = None,
):
    """Writes the evaluation into the folder ``out`` atomically.

    Files: ``metrics.json`` (reports, fixed ensembles, ``extra``), ``metrics.md`` (the table),
    ``rounds.jsonl`` (one line per round), ``history.jsonl`` (the performance-history rows,
    readable by :func:`flame_jax.consensus._history.read_history`) and the same as
    ``history.csv``, ``strategies.png`` and ``calibration.png``.
    """
    import csv
    import io
    import json
    from pathlib import Path

    from flame_jax._io import atomic_directory, write_bytes_atomic, write_json_atomic
    from flame_jax.consensus._history import write_history
    from flame_jax.consensus._protocol import HISTORY_FIELDS

    def num(x: float):
        return None if not math.isfinite(x) else x

    with atomic_directory(Path(out), overwrite=overwrite) as tmp:
        write_json_atomic(
            tmp / "metrics.json",
            {
                "reports": [r.to_json() for r in result.reports],
                "fixed_ensembles": {k: list(v) for k, v in result.fixed_ensembles.items()},
                "paired_jaccard_difference": {
                    "reference": result.reports[0].name,
                    **{
                        k: dict(zip(("mean", "low", "high"), v, strict=True))
                        for k, v in result.paired.items()
                    },
                },
                **dict(extra or {}),
            },
        )
        table = format_strategy_table(result.reports)
        paired = format_paired(result)
        text = table + ("\n\n```\n" + paired + "\n```" if paired else "") + "\n"
        write_bytes_atomic(tmp / "metrics.md", text.encode())
        lines = []
        for s, rounds in result.rounds.items():
            for r in rounds:
                lines.append(
                    json.dumps(
                        {
                            "strategy": s,
                            "trial": r.trial,
                            "ensemble": [m.name for m in r.members],
                            "answer": list(r.answer_drugs),
                            "confidence": num(r.confidence),
                            "uncertainty": num(r.uncertainty),
                            "jaccard": r.jaccard,
                            "correct": r.correct,
                            "items": len(r.items),
                            "failures": [m.failure for m in r.members],
                            "review_failures": [m.review_failure for m in r.members],
                            "generation_s": r.generation_s,
                            "elapsed_s": r.elapsed_s,
                        }
                    )
                )
        write_bytes_atomic(tmp / "rounds.jsonl", ("\n".join(lines) + "\n").encode())
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(result.history)
        write_bytes_atomic(tmp / "history.csv", buf.getvalue().encode())
        write_history(tmp / "history.jsonl", result.history)
        _plots(result, tmp, title)
    return Path(out)


# --------------------------------------------------------------------------------------------------
# Experiments from a config file (the ``flame-jax consensus run`` command)

MEMBER_KINDS = ("oracle", "most-frequent", "baseline", "chat")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemberSpec:
    """One member of an experiment's pool.

    Attributes:
      name: unique name (logs, tables).
      kind: "oracle" (the planted rules; needs ``truth``), "most-frequent", "baseline" (a
        trained ``flame-jax baseline`` run folder ``run``), or "chat" (an OpenAI-compatible
        endpoint at ``url``).
      pool: "remote" or "local".
      noise, seed: for oracle / most-frequent members, a weaker model (``dataset_recommender``).
      run, threshold: a baseline member's run folder and probability threshold.
      url: API root of a chat member, e.g. ``http://127.0.0.1:8000/v1``.
      model: the request's ``model`` (default: ``name``).
      api_key_env: name of the environment variable holding the API key (keys never go in
        config files).
      timeout_s, retries, max_concurrency, temperature: the chat member's
        :class:`~flame_jax.consensus._members.ChatConfig`.
      formulary: list the vocabulary's drug names in the generation prompt.
    """

    name: str
    kind: str
    pool: str = "local"
    noise: float = 0.0
    seed: int = 0
    run: str | None = None
    threshold: float = 0.5
    url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 60.0
    retries: int = 2
    max_concurrency: int = 4
    temperature: float = 0.0
    formulary: bool = True

    def __post_init__(self):
        if not self.name.strip():
            raise ValueError("MemberSpec.name must be non-empty")
        if self.kind not in MEMBER_KINDS:
            raise ValueError(f"MemberSpec.kind must be one of {MEMBER_KINDS}, got {self.kind!r}")
        if self.pool not in ("remote", "local"):
            raise ValueError(f"MemberSpec.pool must be 'remote' or 'local', got {self.pool!r}")
        if (self.kind == "chat") != (self.url is not None):
            raise ValueError(f"member {self.name}: url is required for kind chat, and only there")
        if (self.kind == "baseline") != (self.run is not None):
            raise ValueError(
                f"member {self.name}: run is required for kind baseline, and only there"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsensusRunConfig:
    """A strategies experiment: data, vignettes, the member pool and the evaluation settings.

    Attributes:
      data: dataset folder (vocabulary; rendered vignettes; dataset-backed members).
      truth: the synthetic cohort's ``truth/`` folder (needed by oracle members).
      vignettes: JSONL evaluation set; when None, ``limit`` visits of ``split`` are rendered.
      calibration_vignettes: JSONL calibration set; when None, ``calibration_limit`` visits of
        ``calibration_split`` are rendered (a different split: disjoint patients).
      seed: root seed of every draw.
      chemistry_mode: "informative" (signed, Shapley-weighted, mean profiles; recommended) or
        "replicate" (the published definition) for the CHEMISTRY strategy.
      members: the pool.
      evaluation: strategies, ensemble size, repetitions, bootstrap, round settings.
    """

    data: str
    members: tuple[MemberSpec, ...]
    truth: str | None = None
    vignettes: str | None = None
    calibration_vignettes: str | None = None
    split: str = "test"
    calibration_split: str = "val"
    limit: int = 20
    calibration_limit: int = 20
    seed: int = 0
    chemistry_mode: str = "informative"
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)

    def __post_init__(self):
        names = [m.name for m in self.members]
        if not names:
            raise ValueError("ConsensusRunConfig.members is empty")
        if len(set(names)) != len(names):
            raise ValueError(f"ConsensusRunConfig.members: names must be unique, got {names}")
        for field in ("limit", "calibration_limit"):
            v = getattr(self, field)
            if v < 1:
                raise ValueError(f"ConsensusRunConfig.{field} must be >= 1, got {v}")
        if self.chemistry_mode not in ("informative", "replicate"):
            raise ValueError(
                "ConsensusRunConfig.chemistry_mode must be 'informative' or 'replicate', "
                f"got {self.chemistry_mode!r}"
            )


def build_members(specs: Sequence[MemberSpec], dataset, rules=None) -> list[Member]:
    """Instantiates the members of a config (chat members get the API key from the environment).

    Raises:
      ValueError: an oracle member without rules, or a missing API-key variable.
    """
    import os

    from flame_jax.consensus._members import (
        ChatConfig,
        ChatMember,
        RecommenderMember,
        baseline_recommender,
        dataset_recommender,
    )

    names = dataset.med_vocab.titles
    out: list[Member] = []
    for s in specs:
        if s.kind == "chat":
            key = None
            if s.api_key_env is not None:
                key = os.environ.get(s.api_key_env)
                if not key:
                    raise ValueError(
                        f"member {s.name}: environment variable {s.api_key_env} is not set"
                    )
            config = ChatConfig(
                timeout_s=s.timeout_s,
                retries=s.retries,
                max_concurrency=s.max_concurrency,
                temperature=s.temperature,
                seed=s.seed,
            )
            out.append(
                ChatMember(
                    s.name,
                    s.url or "",
                    model=s.model,
                    api_key=key,
                    pool=s.pool,
                    config=config,
                    formulary=names if s.formulary else (),
                )
            )
        elif s.kind == "baseline":
            from flame_jax.baselines import load_run

            trained = load_run(s.run, dataset=dataset)
            fn = baseline_recommender(trained, threshold=s.threshold)
            out.append(RecommenderMember(s.name, fn, names, pool=s.pool))
        else:
            if s.kind == "oracle" and rules is None:
                raise ValueError(f"member {s.name}: kind oracle needs truth (the planted rules)")
            fn = dataset_recommender(dataset, s.kind, rules=rules, noise=s.noise, seed=s.seed)
            out.append(RecommenderMember(s.name, fn, names, pool=s.pool))
    return out


def chemistry_selector(mode: str = "informative") -> ChemistryFn:
    """The CHEMISTRY strategy's selection: LLM Chemistry on the calibration history.

    Returns ``(history rows, member names, size) -> names`` that calls
    :func:`flame_jax.consensus._history.recommend_from_history` (exhaustive search over the
    subsets of exactly ``size`` members, deterministic tie-breaks; CHEMISTRY rows excluded).
    """
    from flame_jax.consensus._history import recommend_from_history

    if mode not in ("informative", "replicate"):
        raise ValueError(f"chemistry mode must be 'informative' or 'replicate', got {mode!r}")

    def select(history, names, size):
        return recommend_from_history(list(history), list(names), size, mode=mode)

    return select


def _vignette_sets(config: ConsensusRunConfig, dataset, vocab: DrugVocabulary):
    from flame_jax.consensus._vignettes import load_vignettes, render_vignettes

    def pick(path: str | None, split: str, limit: int) -> list[Vignette]:
        if path is not None:
            return load_vignettes(path, vocab=vocab)[:limit]
        rows = dataset.split_rows(split)[:limit]
        if not len(rows):
            raise ValueError(f"{config.data}: split {split!r} has no visits")
        return render_vignettes(dataset, rows)

    evaluation = pick(config.vignettes, config.split, config.limit)
    wants = any(s in _FIXED for s in config.evaluation.strategies)
    calibration = (
        pick(config.calibration_vignettes, config.calibration_split, config.calibration_limit)
        if wants
        else []
    )
    return evaluation, calibration


def run_consensus(
    config: ConsensusRunConfig, out=None, *, overwrite: bool = False, progress: bool = True
) -> EvaluationResult:
    """Runs the experiment of ``config``; writes it to ``out`` (see :func:`save_evaluation`)."""
    import jax

    from flame_jax.data import drug_vocabulary, load_dataset, load_rules

    dataset = load_dataset(config.data)
    rules = None
    if config.truth is not None:
        from pathlib import Path

        rules = load_rules(Path(config.truth) / "rules.json")
    vocab = drug_vocabulary(dataset.med_vocab)
    evaluation, calibration = _vignette_sets(config, dataset, vocab)
    members = build_members(config.members, dataset, rules)
    chemistry = (
        chemistry_selector(config.chemistry_mode)
        if "CHEMISTRY" in config.evaluation.strategies
        else None
    )
    try:
        result = evaluate_strategies(
            members,
            evaluation,
            calibration,
            vocab,
            key=jax.random.key(config.seed),
            config=config.evaluation,
            chemistry=chemistry,
            progress=progress,
        )
    finally:
        for m in members:
            close = getattr(m, "close", None)
            if close is not None:
                close()
    if out is not None:
        save_evaluation(
            result,
            out,
            overwrite=overwrite,
            extra={
                "vignettes": len(evaluation),
                "calibration_vignettes": len(calibration),
                "members": [{"name": m.name, "pool": m.pool} for m in members],
            },
        )
    return result
