"""Sweeps of FLAME runs: a grid of config overrides, spread over hosts and devices, resumable.

A sweep is a base ``FlameConfig`` (a preset or a YAML file) and a grid of dotted config keys ->
value lists (``seed``, ``grpo.loop.optimizer.learning_rate``, ``grpo.group_size``, ...). The runs
are the Cartesian product of the grid, with one exception: the DDI weight axis ``grpo.lambdas``
is not multiplied out. The pipeline already trains one GRPO per lambda from a shared pi_cls and
SFT, so the lambda values become every run's ``grpo.lambdas`` (retraining pi_cls per lambda
would only add noise and cost).

Layout of a sweep folder::

    sweep.yaml                 the sweep (resolved: base is the full FlameConfig)
    runs/<run id>/             one ``run_pipeline`` folder per run (its own resume)
    runs/<run id>/sweep_result.json   written when the run is finished (test metrics, rollouts)
    state/host-<i>-of-<n>.json        each host's progress (atomic; informational)
    results.csv, results.md    one row per (grid point without the seed, recommender, lambda):
                               mean and std over seeds of the test metrics
    rollouts.csv, rollouts.md  rollout reward / advantage statistics of each trained lambda's
                               policy under every lambda (``flame_jax.rl.make_grid_fn``)
    frontier.png               Jaccard against DDI rate over lambda, seed std as error bars
    rollouts.png               reward std and zero-advantage fraction of those rollouts

Run ids are ``<readable name>-<8 hex digits>``, the digits a hash of the run's overrides, so the
same grid point always maps to the same folder. Runs are dealt to hosts by index modulo the
process count (disjoint), and on a host to its local devices in turn. Resume: a run with a
``sweep_result.json`` is skipped; a half-finished run resumes through ``run_pipeline`` (finished
stages skipped, training from the last checkpoint).
"""

import dataclasses
import hashlib
import itertools
import json
import math
import re
import threading
import time
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flame_jax._rows import canonical as _canonical
from flame_jax._rows import cell as _cell
from flame_jax._rows import columns as _columns
from flame_jax._rows import format_csv
from flame_jax._rows import format_rows_markdown as format_rollouts_markdown
from flame_jax._rows import spread as _spread
from flame_jax.consensus import ConsensusSweepConfig
from flame_jax.flame._pipeline import STAGES, FlameConfig

__all__ = [
    "SWEEP_PRESETS",
    "SweepConfig",
    "SweepRun",
    "SweepTables",
    "assign_runs",
    "expand_sweep",
    "format_results_markdown",
    "format_rollouts_markdown",
    "gather_sweep",
    "load_sweep_config",
    "resolve_base",
    "rollout_statistics",
    "run_sweep",
    "save_frontier_plot",
    "write_sweep_tables",
]

SWEEP_PRESETS = ("default", "demo", "tiny")
SEED_KEY = "seed"
LAMBDA_KEY = "grpo.lambdas"
_METRICS = ("jaccard", "f1", "prauc", "ddi_rate", "num_meds")
_ROLLOUT_STATS = (
    "reward_mean",
    "reward_std",
    "zero_advantage_fraction",
    "step_reward_mean",
    "step_advantage_std",
    "token_advantage_abs_mean",
)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _check_key(key: Any, where: str) -> None:
    """``key`` must be a dotted path of ``FlameConfig`` fields."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: keys must be dotted FlameConfig field names, got {key!r}")
    cls: Any = FlameConfig
    path = []
    for part in key.split("."):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise ValueError(
                f"{where}: key {key!r}: {'.'.join(path)} is not a config section, so it has no "
                f"field {part!r}"
            )
        fields = _field_types(cls)
        if part not in fields:
            raise ValueError(
                f"{where}: key {key!r}: {cls.__name__} has no field {part!r} "
                f"(known: {', '.join(fields)})"
            )
        path.append(part)
        cls = fields[part]
        if typing.get_origin(cls) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(cls) if a is not type(None)]
            cls = args[0] if len(args) == 1 else cls


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """A grid of FLAME runs.

    Attributes:
        base: a ``FlameConfig`` preset (``"default"``, ``"demo"``, ``"tiny"``) or the path of a
            FlameConfig YAML file.
        fixed: ``(dotted key, value)`` overrides applied to every run.
        grid: ``(dotted key, values)`` axes; the runs are their Cartesian product (first axis
            slowest), except ``grpo.lambdas``, whose values become each run's ``grpo.lambdas``.
        stages: the pipeline stages of every run (must end with ``"eval"``, which writes the
            metrics the sweep gathers).
        rollout_stats: after each run, draw one batch of rollouts from every trained lambda's
            policy and score it under every lambda of the run (one vmapped program).
        rollout_prompts: prompts of that batch (x ``grpo.group_size`` completions).
        workers: runs at the same time on one host, each on its own local device (threads);
            1 runs them one after another on the default device.

    Examples:
        >>> c = SweepConfig(base="tiny", grid=(("seed", (0, 1)), ("grpo.lambdas", (0.0, 1.0))))
        >>> [r.run_id for r in expand_sweep(c)]
        ['seed-0-d36f675a', 'seed-1-ca7d0193']
        >>> SweepConfig(grid=(("grpo.lamdas", (0.0,)),))
        Traceback (most recent call last):
        ...
        ValueError: grid: key 'grpo.lamdas': GrpoStage has no field 'lamdas' (known: ...)
    """

    base: str = "demo"
    fixed: tuple[tuple[str, Any], ...] = ()
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    stages: tuple[str, ...] = STAGES
    rollout_stats: bool = True
    rollout_prompts: int = 8
    workers: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.base, str) or not self.base:
            raise ValueError(
                f"base must be a preset {SWEEP_PRESETS} or a YAML path, got {self.base!r}"
            )
        seen: set[str] = set()
        for name, entries in (("fixed", self.fixed), ("grid", self.grid)):
            for entry in entries:
                if not (isinstance(entry, tuple) and len(entry) == 2):
                    raise ValueError(f"{name}: entries must be (key, value) pairs, got {entry!r}")
                key, values = entry
                _check_key(key, name)
                if key in seen:
                    raise ValueError(f"{name}: key {key!r} is given twice (in fixed or grid)")
                seen.add(key)
                if name == "grid":
                    if not isinstance(values, tuple) or not values:
                        raise ValueError(
                            f"grid: {key!r} needs a non-empty list of values, got {values!r}"
                        )
                    try:
                        distinct = {_canonical(v) for v in values}
                    except TypeError:
                        raise ValueError(
                            f"grid: {key!r}: values must be numbers, strings, lists or mappings, "
                            f"got {list(values)!r}"
                        ) from None
                    if len(distinct) != len(values):
                        raise ValueError(f"grid: {key!r} repeats a value: {list(values)}")
        for key, values in self.grid:
            if key == LAMBDA_KEY:
                bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int | float)
                       or not math.isfinite(v) or v < 0]  # fmt: skip
                if bad:
                    raise ValueError(
                        f"grid: {LAMBDA_KEY!r} values must be numbers >= 0, got {bad[0]!r}"
                    )
        bad_stages = [s for s in self.stages if s not in STAGES]
        if bad_stages or not self.stages or self.stages[-1] != "eval":
            raise ValueError(
                f"stages must be pipeline stages {STAGES} ending with 'eval', "
                f"got {list(self.stages)}"
            )
        if self.rollout_prompts < 1:
            raise ValueError(f"rollout_prompts must be >= 1, got {self.rollout_prompts}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    @property
    def lambdas(self) -> tuple[float, ...] | None:
        """The grid's lambda axis (None: each run keeps its base config's ``grpo.lambdas``)."""
        for key, values in self.grid:
            if key == LAMBDA_KEY:
                return tuple(float(v) for v in values)
        return None

    @property
    def run_axes(self) -> tuple[tuple[str, tuple[Any, ...]], ...]:
        """The grid axes that make separate runs (all but ``grpo.lambdas``)."""
        return tuple((k, v) for k, v in self.grid if k != LAMBDA_KEY)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepRun:
    """One run of a sweep.

    Attributes:
        index: position in the expanded grid (first axis slowest).
        run_id: the run's folder name: readable name and a hash of its overrides.
        point: the run's values of the run axes, ``(key, value)`` pairs.
        config: the run's full ``FlameConfig``.
    """

    index: int
    run_id: str
    point: tuple[tuple[str, Any], ...]
    config: FlameConfig

    @property
    def group(self) -> tuple[tuple[str, Any], ...]:
        """The point without the seed: the runs whose metrics are averaged over seeds."""
        return tuple((k, v) for k, v in self.point if k != SEED_KEY)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str | int):
        return str(value)
    return hashlib.sha1(_canonical(value).encode()).hexdigest()[:4]


def _run_id(point: Sequence[tuple[str, Any]], overrides: Sequence[tuple[str, Any]]) -> str:
    name = "_".join(f"{k.rsplit('.', 1)[-1]}-{_short(v)}" for k, v in point) or "run"
    name = re.sub(r"[^A-Za-z0-9.=+-]+", "_", name)[:80]
    digest = hashlib.sha1(_canonical([[k, v] for k, v in overrides]).encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def resolve_base(base: str) -> FlameConfig:
    """The FlameConfig of a preset name or a YAML path.

    Raises:
        ValueError: the file cannot be read or is not a valid FlameConfig (the message names the
            file and the field).
    """
    if base == "default":
        return FlameConfig()
    if base == "demo":
        return FlameConfig.demo()
    if base == "tiny":
        return FlameConfig.tiny()
    from flame_jax.config import load_config

    if not Path(base).is_file():
        raise ValueError(f"base {base!r}: neither a preset {SWEEP_PRESETS} nor a file")
    return load_config(FlameConfig, base)


def _set(plain: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = plain
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def expand_sweep(config: SweepConfig, base: FlameConfig | None = None) -> list[SweepRun]:
    """The runs of a sweep, in grid order (first axis slowest), each with its full config.

    Args:
        config: the sweep.
        base: the base FlameConfig (default: ``resolve_base(config.base)``).

    Returns:
        One ``SweepRun`` per point of the run axes (lambda is inside each run).

    Raises:
        ValueError: a grid value does not fit its field; the message names the run and field.
    """
    from flame_jax._records import record_from_mapping, record_to_plain

    base = resolve_base(config.base) if base is None else base
    axes = config.run_axes
    lambdas = config.lambdas
    runs = []
    for index, values in enumerate(itertools.product(*(v for _, v in axes))):
        point = tuple((k, v) for (k, _), v in zip(axes, values, strict=True))
        overrides = [*config.fixed, *point]
        if lambdas is not None:
            overrides.append((LAMBDA_KEY, list(lambdas)))
        plain = record_to_plain(base)
        for key, value in overrides:
            _set(plain, key, record_to_plain(value) if isinstance(value, tuple) else value)
        name = ", ".join(f"{k}={_short(v)}" for k, v in point) or "base"
        try:
            run_config = record_from_mapping(FlameConfig, plain)
        except ValueError as e:
            raise ValueError(f"sweep run {index} ({name}): {e}") from None
        runs.append(SweepRun(index=index, run_id=_run_id(point, overrides), point=point,
                             config=run_config))  # fmt: skip
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError("two runs of the sweep got the same id; make the grid values distinct")
    return runs


def assign_runs(
    runs: Sequence[SweepRun], *, process_index: int, process_count: int
) -> list[SweepRun]:
    """The runs of host ``process_index`` of ``process_count``: every ``process_count``-th run.

    Examples:
        >>> c = SweepConfig(base="tiny", grid=(("seed", (0, 1, 2)),))
        >>> [r.index for r in assign_runs(expand_sweep(c), process_index=1, process_count=2)]
        [1]
    """
    if not 0 <= process_index < process_count:
        raise ValueError(
            f"process index {process_index} is not in [0, process count {process_count})"
        )
    return [r for r in runs if r.index % process_count == process_index]


# ------------------------------------------------------------------------------------------------
# one run


def _grpo_reports(config: FlameConfig, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The eval stage's rows of one run, each with its lambda (None for pi_cls / SFT)."""
    by_name = {r["name"]: r for r in metrics["reports"]}
    rows = []
    for name in ("pi_cls alone", "pi_list after SFT"):
        if name in by_name:
            rows.append({"recommender": name, "lambda": None, **_metric_values(by_name[name])})
    for lam in config.grpo.lambdas:
        name = f"pi_list after GRPO (lambda={lam:g})"
        if name not in by_name:
            raise ValueError(f"eval/metrics.json has no row {name!r}")
        rows.append({"recommender": "pi_list after GRPO", "lambda": lam,
                     **_metric_values(by_name[name])})  # fmt: skip
    return rows


def _metric_values(report: dict[str, Any]) -> dict[str, float | None]:
    return {m: report["mean"].get(m) for m in _METRICS}


def rollout_statistics(
    config: FlameConfig, folder: str | Path, *, prompts: int = 8
) -> list[dict[str, float]]:
    """Reward and advantage statistics of each trained lambda's rollouts under every lambda.

    For each ``lam`` of ``config.grpo.lambdas`` whose GRPO policy is in the finished run folder
    ``folder``, one batch of ``prompts`` x G rollouts is drawn (the same prompts and sampling key
    for every policy) and scored by ``flame_jax.rl.make_grid_fn`` under every lambda of the run
    in one jitted, vmapped program. With per-task adapters (``grpo.adapters``), each task's
    adapters draw a batch of their task's prompts and the statistics are the mean of the two.

    Returns:
        Rows ``{"trained_lambda", "lambda", <GridStats fields>}``.
    """
    import jax
    import jax.numpy as jnp

    from flame_jax.flame._grpo import make_rollout
    from flame_jax.flame._pipeline import (
        EDIT_TASKS,
        _cls_tasks,
        _list_examples,
        _Run,
        _tasks,
        grpo_policies,
    )
    from flame_jax.flame._policy import to_knowledge_tables
    from flame_jax.flame._sft import select_examples
    from flame_jax.rl import make_grid_fn, shaping_grid

    folder = Path(folder)
    g = config.grpo
    run = _Run(config, folder, False, lambda _m: None)
    enc, tables = run.encoder(), run.tables()
    if g.prompts == "cls":
        tasks = _cls_tasks(run, run.dataset.split_rows("train"))
    else:
        tasks = _tasks(run, g.tasks, 200)
    ex = _list_examples(run, enc, tasks)
    kt = to_knowledge_tables(tables)
    ddi = jnp.asarray(run.dataset.ddi.astype(bool))
    grid = shaping_grid(
        jaccard_weight=[g.jaccard_weight],
        ddi_weight=list(g.lambdas),
        refusal_weight=[g.refusal_weight],
        step_weight=[g.step_weight],
    )
    grid_fn = jax.jit(make_grid_fn(g.advantage(), gamma=g.gamma, refusal=g.refusal))
    if g.adapters == "per_task":  # each task's adapters on that task's prompts
        kinds = np.asarray(ex.tasks)
        parts = [(t, select_examples(ex, np.flatnonzero(kinds == t))) for t in EDIT_TASKS]
    else:
        parts = [("add", ex)]
    batch_fns: dict[int, Any] = {}
    rows = []
    for trained in g.lambdas:
        paths = grpo_policies(folder, g, trained)
        per_part = []
        for k, (task, part) in enumerate(parts):
            policy = run.policy(enc, tables, paths[task])
            if k not in batch_fns:
                batch_fns[k] = make_rollout(
                    part, run.truth, enc, run.vocabulary(), kt, group_size=g.group_size,
                    prompts_per_step=prompts, temperature=g.temperature, seed=config.seed + 11,
                    vocab_size=policy.decoder.config.vocab_size,
                )  # fmt: skip
            batch, _ = batch_fns[k](0, policy)
            out = grid_fn(
                grid, batch["initial"], batch["truth"], ddi, *batch["episodes"],
                batch["token_steps"], batch["completion_mask"],
            )  # fmt: skip
            per_part.append({k: np.asarray(v, np.float64) for k, v in out.stats._asdict().items()})
        stats = {k: np.mean([p[k] for p in per_part], axis=0) for k in per_part[0]}
        for p, lam in enumerate(g.lambdas):
            rows.append({"trained_lambda": trained, "lambda": lam,
                         **{k: float(v[p]) for k, v in stats.items()}})  # fmt: skip
    return rows


def _execute(
    run: SweepRun, root: Path, config: SweepConfig, *, progress: bool, log: Callable
) -> dict[str, Any]:
    from flame_jax._io import write_json_atomic
    from flame_jax.flame._pipeline import run_pipeline

    folder = root / "runs" / run.run_id
    t0 = time.perf_counter()
    _, summary = run_pipeline(run.config, folder, stages=config.stages, progress=progress, log=log)
    metrics = json.loads((folder / "eval" / "metrics.json").read_text())
    result: dict[str, Any] = {
        "run_id": run.run_id,
        "point": [[k, v] for k, v in run.point],
        "rows": _grpo_reports(run.config, metrics),
        "rollouts": [],
        "stage_seconds": summary.get("seconds", {}),
    }
    if config.rollout_stats:
        result["rollouts"] = rollout_statistics(run.config, folder, prompts=config.rollout_prompts)
    result["seconds"] = time.perf_counter() - t0
    write_json_atomic(folder / "sweep_result.json", result)
    return result


# ------------------------------------------------------------------------------------------------
# gather


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepTables:
    """The gathered results of a sweep.

    Attributes:
        results: rows of (grid point without seed, recommender, lambda) with ``<metric>_mean``,
            ``<metric>_std`` over seeds and ``seeds`` (how many runs were averaged).
        rollouts: rows of (grid point without seed, trained lambda, lambda) with the mean over
            seeds of each rollout statistic.
        finished: run ids with results.
        missing: run ids of the sweep without results yet.
    """

    results: list[dict[str, Any]]
    rollouts: list[dict[str, Any]]
    finished: tuple[str, ...]
    missing: tuple[str, ...]


def gather_sweep(runs: Sequence[SweepRun], root: str | Path) -> SweepTables:
    """Reads every finished run's ``sweep_result.json`` and averages over seeds.

    Rows keep the grid order of their first run; a grid point's row averages the runs that
    differ only in ``seed``.
    """
    root = Path(root)
    results: dict[tuple, dict[str, list]] = {}
    rollouts: dict[tuple, dict[str, list]] = {}
    finished, missing = [], []
    for run in runs:
        path = root / "runs" / run.run_id / "sweep_result.json"
        if not path.is_file():
            missing.append(run.run_id)
            continue
        finished.append(run.run_id)
        data = json.loads(path.read_text())
        group = tuple((k, _canonical(v)) for k, v in run.group)
        for row in data["rows"]:
            key = (group, row["recommender"], row["lambda"])
            acc = results.setdefault(key, {"point": run.group, "runs": []})
            acc["runs"].append(row)
        for row in data["rollouts"]:
            key = (group, row["trained_lambda"], row["lambda"])
            acc = rollouts.setdefault(key, {"point": run.group, "runs": []})
            acc["runs"].append(row)
    table = []
    for (_, recommender, lam), acc in results.items():
        out = {**dict(acc["point"]), "recommender": recommender, "lambda": lam,
               "seeds": len(acc["runs"])}  # fmt: skip
        for m in _METRICS:
            out[f"{m}_mean"], out[f"{m}_std"] = _spread([r[m] for r in acc["runs"]])
        table.append(out)
    roll = []
    for (_, trained, lam), acc in rollouts.items():
        out = {**dict(acc["point"]), "trained_lambda": trained, "lambda": lam,
               "seeds": len(acc["runs"])}  # fmt: skip
        for s in _ROLLOUT_STATS:
            out[s] = _spread([r[s] for r in acc["runs"]])[0]
        roll.append(out)
    return SweepTables(results=table, rollouts=roll, finished=tuple(finished),
                       missing=tuple(missing))  # fmt: skip


def format_results_markdown(rows: list[dict[str, Any]]) -> str:
    """The results table in Markdown: metrics as ``mean ± std`` over seeds."""
    point = [c for c in _columns(rows) if c not in ("recommender", "lambda", "seeds")
             and not c.endswith(("_mean", "_std"))]  # fmt: skip
    titles = {"jaccard": "Jaccard", "f1": "F1", "prauc": "PRAUC", "ddi_rate": "DDI",
              "num_meds": "#Med"}  # fmt: skip
    head = [*point, "recommender", "lambda", "seeds", *(titles[m] for m in _METRICS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [_cell(row.get(c)) for c in point]
        cells += [row["recommender"], "" if row["lambda"] is None else f"{row['lambda']:g}",
                  str(row["seeds"])]  # fmt: skip
        for m in _METRICS:
            mean, std = row[f"{m}_mean"], row[f"{m}_std"]
            cells.append("n/a" if mean is None else f"{mean:.4f} ± {std:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _label(point: Sequence[tuple[str, Any]]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in point) or "base"


def save_frontier_plot(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Jaccard against DDI rate over lambda, one line per grid point, seed std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flame_jax.plots import save_figure

    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["recommender"] == "pi_list after GRPO" and row["jaccard_mean"] is not None:
            point = [(k, row[k]) for k in row if k not in ("recommender", "lambda", "seeds")
                     and not k.endswith(("_mean", "_std"))]  # fmt: skip
            series.setdefault(_label(point), []).append(row)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for label, pts in series.items():
        pts = sorted(pts, key=lambda r: r["lambda"])
        ax.errorbar([r["ddi_rate_mean"] for r in pts], [r["jaccard_mean"] for r in pts],
                    xerr=[r["ddi_rate_std"] for r in pts], yerr=[r["jaccard_std"] for r in pts],
                    marker="o", capsize=3, label=label)  # fmt: skip
        for r in pts:
            ax.annotate(f"λ={r['lambda']:g}", (r["ddi_rate_mean"], r["jaccard_mean"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)  # fmt: skip
        lams = [r["lambda"] for r in pts]
        bx.errorbar(lams, [r["jaccard_mean"] for r in pts], yerr=[r["jaccard_std"] for r in pts],
                    marker="o", capsize=3, label=f"Jaccard, {label}")  # fmt: skip
        bx.errorbar(lams, [r["ddi_rate_mean"] for r in pts], yerr=[r["ddi_rate_std"] for r in pts],
                    marker="s", capsize=3, linestyle="--", label=f"DDI, {label}")  # fmt: skip
    seeds = sorted({r["seeds"] for pts in series.values() for r in pts})
    ax.set_xlabel("DDI rate (test)")
    ax.set_ylabel("Jaccard (test)")
    counts = "/".join(map(str, seeds)) or "0"
    ax.set_title(f"safety-accuracy frontier (mean ± std over {counts} seeds)", fontsize=9)
    bx.set_xlabel("λ (DDI weight)")
    bx.set_ylabel("test metric")
    bx.set_title("Jaccard and DDI rate against λ", fontsize=9)
    for a in (ax, bx):
        a.grid(alpha=0.3)
    if series:
        bx.legend(fontsize=6)
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def save_rollouts_plot(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Reward std and zero-advantage fraction of each trained policy's rollouts against lambda."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flame_jax.plots import save_figure

    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        point = [(k, row[k]) for k in row if k not in ("trained_lambda", "lambda", "seeds")
                 and k not in _ROLLOUT_STATS]  # fmt: skip
        label = f"trained λ={row['trained_lambda']:g}" + (f", {_label(point)}" if point else "")
        series.setdefault(label, []).append(row)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for label, pts in series.items():
        pts = sorted(pts, key=lambda r: r["lambda"])
        lams = [r["lambda"] for r in pts]
        for a, key in zip(axes, ("reward_mean", "reward_std", "zero_advantage_fraction"),
                          strict=True):  # fmt: skip
            a.plot(lams, [r[key] for r in pts], marker="o", label=label)
            a.set_title(key.replace("_", " "), fontsize=9)
            a.set_xlabel("λ used to score the rollouts")
            a.grid(alpha=0.3)
    if series:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def write_sweep_tables(root: Path, tables: SweepTables) -> None:
    """Writes ``results.csv`` / ``.md``, ``frontier.png`` and the rollout tables and plot."""
    from flame_jax._io import write_bytes_atomic

    write_bytes_atomic(root / "results.csv", format_csv(tables.results).encode())
    write_bytes_atomic(
        root / "results.md", (format_results_markdown(tables.results) + "\n").encode()
    )
    save_frontier_plot(tables.results, root / "frontier.png")
    if tables.rollouts:
        write_bytes_atomic(root / "rollouts.csv", format_csv(tables.rollouts).encode())
        write_bytes_atomic(
            root / "rollouts.md", (format_rollouts_markdown(tables.rollouts) + "\n").encode()
        )
        save_rollouts_plot(tables.rollouts, root / "rollouts.png")


# ------------------------------------------------------------------------------------------------
# the sweep


def _sweep_record(config: SweepConfig, base: FlameConfig) -> dict[str, Any]:
    from flame_jax._records import record_to_plain

    return {
        "base": record_to_plain(base),
        "fixed": [[k, record_to_plain(v)] for k, v in config.fixed],
        "grid": [[k, record_to_plain(list(v))] for k, v in config.grid],
        "stages": list(config.stages),
        "rollout_stats": config.rollout_stats,
        "rollout_prompts": config.rollout_prompts,
    }


def _same_sweep(stored: dict[str, Any], record: dict[str, Any], base: FlameConfig) -> bool:
    """The stored sweep is this one (its base read with today's defaults, as run_pipeline does)."""
    from flame_jax._records import record_from_mapping

    stored = dict(stored)
    try:
        stored_base = record_from_mapping(FlameConfig, stored.pop("base", None))
    except ValueError:
        return False
    rest = {k: v for k, v in record.items() if k != "base"}
    return stored_base == base and stored == json.loads(json.dumps(rest))


class _State:
    """This host's progress file, rewritten atomically at every change."""

    def __init__(self, path: Path, runs: Sequence[SweepRun]):
        self.path, self.lock = path, threading.Lock()
        self.runs = {r.run_id: {"status": "pending"} for r in runs}

    def set(self, run_id: str, **fields: Any) -> None:
        from flame_jax._io import write_json_atomic

        with self.lock:
            self.runs[run_id] = {**self.runs[run_id], **fields}
            write_json_atomic(self.path, {"runs": self.runs})


def run_sweep(
    config: SweepConfig,
    out: str | Path,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
    max_runs: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> SweepTables:
    """Runs (or resumes) this host's share of the sweep in ``out``, then gathers the tables.

    Args:
        config: the sweep.
        out: the sweep folder.
        process_index: this host (default ``jax.process_index()``).
        process_count: the number of hosts (default ``jax.process_count()``).
        max_runs: stop after this many runs of this host were executed in this call (None: all).
        progress: progress bars.
        log: status lines.

    Returns:
        The gathered tables over every finished run of the sweep (all hosts' runs that are
        done; the others are listed in ``missing``).

    Raises:
        ValueError: ``out`` holds another sweep, or a run config is invalid.
    """
    import jax
    from tqdm.auto import tqdm

    from flame_jax._io import write_json_atomic

    root = Path(out)
    base = resolve_base(config.base)
    runs = expand_sweep(config, base)
    record = _sweep_record(config, base)
    sweep_file = root / "sweep.json"
    if sweep_file.is_file():
        if not _same_sweep(json.loads(sweep_file.read_text()), record, base):
            raise ValueError(
                f"{root}: holds another sweep ({sweep_file}); use a new folder or --overwrite"
            )
    else:
        write_json_atomic(sweep_file, record)
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    mine = assign_runs(runs, process_index=pi, process_count=pc)
    state = _State(root / "state" / f"host-{pi}-of-{pc}.json", mine)
    todo = []
    for run in mine:
        if (root / "runs" / run.run_id / "sweep_result.json").is_file():
            state.set(run.run_id, status="done")
        else:
            todo.append(run)
    if max_runs is not None:
        todo = todo[:max_runs]
    done = sum(s["status"] == "done" for s in state.runs.values())
    log(f"[sweep] {len(runs)} runs; host {pi} of {pc}: {len(mine)} assigned, {done} already "
        f"done, {len(todo)} to run now")  # fmt: skip
    devices = jax.local_devices()[: max(1, min(config.workers, len(todo)))]
    queues = [todo[k :: len(devices)] for k in range(len(devices))]
    bar = tqdm(total=len(todo), desc="sweep runs", disable=not progress or not todo)
    errors: list[BaseException] = []

    def worker(device, queue):
        for run in queue:
            if errors:
                return
            state.set(run.run_id, status="running", device=str(device))
            log(f"[sweep] run {run.run_id} on {device}")
            try:
                with jax.default_device(device):
                    result = _execute(run, root, config, progress=progress and len(devices) == 1,
                                      log=log)  # fmt: skip
            except BaseException as e:
                state.set(run.run_id, status="failed", error=repr(e))
                errors.append(e)
                return
            state.set(run.run_id, status="done", seconds=result["seconds"])
            bar.update(1)

    if len(devices) == 1:
        worker(devices[0], queues[0])
    else:
        threads = [
            threading.Thread(target=worker, args=(d, q))
            for d, q in zip(devices, queues, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    bar.close()
    if errors:
        raise errors[0]
    if process_index is None and pc > 1:  # jax.distributed: wait for every host's runs
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("flame_jax sweep finished")
    tables = gather_sweep(runs, root)
    write_sweep_tables(root, tables)
    return tables


_SWEEP_KEYS = (
    "kind",
    "base",
    "fixed",
    "grid",
    "stages",
    "rollout_stats",
    "rollout_prompts",
    "workers",
)


def load_sweep_config(path: str | Path) -> "SweepConfig | ConsensusSweepConfig":
    """Reads a sweep YAML file, strictly.

    ``kind: consensus`` gives a :class:`ConsensusSweepConfig` (its fields as keys). Otherwise
    (``kind: flame``, the default) the keys are ``base`` (a preset, or a FlameConfig YAML path
    relative to the sweep file's folder), ``fixed`` (mapping dotted key -> value), ``grid``
    (mapping dotted key -> list of values), ``stages``, ``rollout_stats``, ``rollout_prompts``,
    ``workers``.

    Raises:
        ValueError: unreadable file, unknown key, wrong type; the message names the file and key.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping of {', '.join(_SWEEP_KEYS)}")
    kind = data.pop("kind", "flame")
    if kind == "consensus":
        from flame_jax._records import record_from_mapping

        return record_from_mapping(ConsensusSweepConfig, data, where=str(path))
    if kind != "flame":
        raise ValueError(f"{path}: kind: expected 'flame' or 'consensus', got {kind!r}")
    unknown = sorted(set(data) - set(_SWEEP_KEYS))
    if unknown:
        raise ValueError(f"{path}: {unknown[0]}: unknown key (known: {', '.join(_SWEEP_KEYS)})")
    kwargs: dict[str, Any] = {}
    base = data.get("base", "demo")
    if not isinstance(base, str):
        raise ValueError(f"{path}: base: expected a preset name or a file path, got {base!r}")
    if base not in SWEEP_PRESETS and not Path(base).is_absolute():
        base = str(path.parent / base)
    kwargs["base"] = base
    for name in ("fixed", "grid"):
        section = data.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{path}: {name}: expected a mapping of dotted keys, got {section!r}")
        if name == "grid":
            for key, values in section.items():
                if not isinstance(values, list):
                    raise ValueError(
                        f"{path}: grid.{key}: expected a list of values, got {values!r}"
                    )
            kwargs[name] = tuple((k, tuple(v)) for k, v in section.items())
        else:
            kwargs[name] = tuple(section.items())
    if "stages" in data:
        if not isinstance(data["stages"], list):
            raise ValueError(f"{path}: stages: expected a list, got {data['stages']!r}")
        kwargs["stages"] = tuple(data["stages"])
    for name, kind in (("rollout_stats", bool), ("rollout_prompts", int), ("workers", int)):
        if name in data:
            value = data[name]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{path}: {name}: expected {kind.__name__}, got {value!r}")
            kwargs[name] = value
    try:
        config = SweepConfig(**kwargs)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return config
