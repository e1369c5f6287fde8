"""``flame-jax sweep CONFIG``: a grid of FLAME runs, resumable, gathered into tables and plots.

Commands:
  flame-jax sweep CONFIG [--out DIR] [--overwrite] [--dry-run] [--gather-only]
                  [--workers N] [--process-index I --process-count N] [--max-runs N] [--quiet]

CONFIG is a sweep YAML file (``flame_jax.flame.load_sweep_config``); see
``experiments/flame/sweep_*.yaml``. Running the command again resumes: finished runs are skipped
and a half-finished run continues from its last checkpoint.
"""

import argparse
import dataclasses
import shutil
from pathlib import Path

__all__ = ["register"]


def _print(*args) -> None:
    print(*args, flush=True)


def cmd_sweep(args: argparse.Namespace) -> int:
    from flame_jax.flame import (
        ConsensusSweepConfig,
        assign_runs,
        expand_sweep,
        format_results_markdown,
        gather_sweep,
        load_sweep_config,
        run_sweep,
        write_sweep_tables,
    )

    config = load_sweep_config(args.config)
    out = Path(args.out) if args.out is not None else Path("runs/sweeps") / Path(args.config).stem
    if isinstance(config, ConsensusSweepConfig):
        return _consensus(config, out, args)
    if args.workers is not None:
        config = dataclasses.replace(config, workers=args.workers)
    if (args.process_index is None) != (args.process_count is None):
        raise ValueError("give both --process-index and --process-count, or neither")
    runs = expand_sweep(config)
    if args.dry_run:
        pi, pc = args.process_index or 0, args.process_count or 1
        mine = {r.run_id for r in assign_runs(runs, process_index=pi, process_count=pc)}
        lambdas = runs[0].config.grpo.lambdas if runs else ()
        _print(f"{len(runs)} runs x lambdas {list(lambdas)} -> {out}/runs/")
        for r in runs:
            done = (out / "runs" / r.run_id / "sweep_result.json").is_file()
            status = "done" if done else ("this host" if r.run_id in mine else "other host")
            point = ", ".join(f"{k}={v}" for k, v in r.point) or "(base)"
            _print(f"  {r.run_id}  {point}  [{status}]")
        return 0
    if args.overwrite and out.exists():
        if not (out / "sweep.json").is_file():
            raise FileExistsError(
                f"{out}: not a sweep folder (no sweep.json); refusing to delete it"
            )
        shutil.rmtree(out)
    if args.gather_only:
        if not (out / "sweep.json").is_file():
            raise FileNotFoundError(f"{out}: no sweep here (no sweep.json)")
        tables = gather_sweep(runs, out)
        write_sweep_tables(out, tables)
    else:
        tables = run_sweep(
            config,
            out,
            process_index=args.process_index,
            process_count=args.process_count,
            max_runs=args.max_runs,
            progress=not args.quiet,
            log=_print if not args.quiet else (lambda _m: None),
        )
    _print(format_results_markdown(tables.results))
    _print(
        f"{len(tables.finished)} of {len(runs)} runs finished"
        + (f"; missing: {', '.join(tables.missing)}" if tables.missing else "")
    )
    written = ["results.csv", "results.md", "frontier.png"]
    if tables.rollouts:
        written += ["rollouts.csv", "rollouts.md", "rollouts.png"]
    _print(f"wrote {out}/: {', '.join(written)}")
    return 0


def _consensus(config, out: Path, args: argparse.Namespace) -> int:
    """``kind: consensus``: Vancouver's parameter grid on synthetic review matrices."""
    from flame_jax.consensus import run_consensus_sweep
    from flame_jax.flame import format_rollouts_markdown

    points = len(config.eps) * len(config.variance_floor) * len(config.init_variance)
    if args.dry_run:
        _print(
            f"consensus sweep: {points} Vancouver settings x {len(config.seeds)} seeds x "
            f"{config.vignettes} vignettes of {len(config.reviewer_noise)} models -> {out}/"
        )
        return 0
    if args.overwrite and out.exists():
        if not (out / "consensus_sweep.json").is_file():
            raise FileExistsError(f"{out}: not a consensus sweep folder; refusing to delete it")
        shutil.rmtree(out)
    rows = run_consensus_sweep(config, out)
    _print(format_rollouts_markdown(rows))
    _print(f"wrote {out}/: consensus.csv, consensus.md, consensus.png")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the top-level ``sweep`` command to ``sub``."""
    p = sub.add_parser(
        "sweep",
        help="a grid of FLAME runs (lambda, seed, learning rate, ...): resumable, gathered",
        description=(
            "Run (or resume) a grid of FLAME runs and gather a results table (mean and std over "
            "seeds) and the safety-accuracy frontier plot."
        ),
    )
    p.add_argument("config", type=Path, help="sweep YAML file (base, fixed, grid, ...)")
    p.add_argument("--out", type=Path, help="sweep folder (default runs/sweeps/<config name>)")
    p.add_argument("--overwrite", action="store_true", help="delete the sweep folder first")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state only")
    p.add_argument("--gather-only", action="store_true", help="only rebuild the tables and plots")
    p.add_argument("--workers", type=int, help="runs at once on this host, one per device")
    p.add_argument("--process-index", type=int, help="this host (default jax.process_index())")
    p.add_argument("--process-count", type=int, help="hosts (default jax.process_count())")
    p.add_argument("--max-runs", type=int, help="stop after this many runs (resume later)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    p.set_defaults(func=cmd_sweep)
