"""The ``flame-jax`` command: a thin layer that parses arguments and calls library functions.

Commands:
  flame-jax data synth --out DIR [--seed S --patients N --drugs M ...]
  flame-jax data stats DIR [--json]
  flame-jax eval reference --data DIR [--truth DIR --split test --rounds 10 --out DIR]
  flame-jax demo [--out DIR --overwrite --strict]
  flame-jax sweep CONFIG [--out DIR --overwrite --dry-run]
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from flame_jax._extras import missing_extra
from flame_jax.cli import _baselines, _consensus, _flame, _ingest, _sweep

__all__ = ["main"]


def _print(*args) -> None:
    print(*args, flush=True)


# --------------------------------------------------------------------------------------------------
# data


def _synth(args: argparse.Namespace):
    from flame_jax.config import dump_config, load_config
    from flame_jax.data import SyntheticConfig, synthesize

    config = load_config(
        SyntheticConfig,
        args.config,
        {
            "seed": args.seed,
            "patients": args.patients,
            "drugs": args.drugs,
            "diag_codes": args.diag_codes,
            "proc_codes": args.proc_codes,
            "max_visits": args.max_visits,
        },
    )
    cohort = synthesize(args.out, config, overwrite=args.overwrite, progress=not args.quiet)
    dump_config(config, Path(args.out) / "config.yaml")
    return cohort


def cmd_data_synth(args: argparse.Namespace) -> int:
    cohort = _synth(args)
    out = Path(args.out)
    _print(f"wrote the synthetic cohort to {out}/ (raw/, dataset/, truth/, config.yaml)")
    _print(_format_stats(cohort.dataset.statistics()))
    return 0


def _format_stats(stats: dict) -> str:
    def fmt(v):
        if v is None:
            return "not available"
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, dict):
            return ", ".join(f"{k} {fmt(x)}" for k, x in v.items())
        return str(v)

    width = max(len(k) for k in stats)
    return "\n".join(f"  {k.ljust(width)}  {fmt(v)}" for k, v in stats.items())


def cmd_data_stats(args: argparse.Namespace) -> int:
    from flame_jax.data import load_dataset

    dataset = load_dataset(args.dataset)
    stats = dataset.statistics()
    if args.json:
        _print(json.dumps(stats, indent=2))
    else:
        _print(f"{args.dataset}: {dataset.name} ({dataset.source}), valid")
        _print(_format_stats(stats))
    return 0


# --------------------------------------------------------------------------------------------------
# eval


def evaluate_references(
    dataset_dir: Path,
    truth_dir: Path | None,
    out: Path | None,
    *,
    split: str = "test",
    rounds: int = 10,
    seed: int = 0,
    overwrite: bool = False,
):
    """Most-frequent drugs (and the planted oracle when ``truth_dir`` is given) on one split."""
    import jax

    from flame_jax._io import atomic_directory, write_bytes_atomic, write_json_atomic
    from flame_jax.data import load_dataset, load_rules, most_frequent_recommend, oracle_recommend
    from flame_jax.metrics import METRIC_COLUMNS, evaluate_sets, format_table
    from flame_jax.plots import save_metrics_plot

    dataset = load_dataset(dataset_dir)
    rows = dataset.split_rows(split)
    if not len(rows):
        raise ValueError(f"{dataset_dir}: split {split!r} has no visits")
    truth = dataset.visits.med.multi_hot(dataset.num_meds, rows)
    patient = dataset.visits.patient_id[rows]
    recommenders = {"most-frequent": lambda: most_frequent_recommend(dataset, rows)}
    if truth_dir is not None:
        rules = load_rules(Path(truth_dir) / "rules.json")
        recommenders["oracle (planted)"] = lambda: oracle_recommend(rules, dataset, rows)
    key = jax.random.key(seed)
    reports = []
    for i, (name, recommend) in enumerate(recommenders.items()):
        pred, scores = recommend()
        reports.append(
            evaluate_sets(
                name,
                pred,
                truth,
                patient,
                key=jax.random.fold_in(key, i),
                scores=scores,
                ddi=dataset.ddi,
                rounds=rounds,
            )
        )
    table = format_table(reports)
    if out is not None:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            write_json_atomic(
                tmp / "metrics.json",
                {"split": split, "rounds": rounds, "seed": seed,
                 "reports": [r.to_json() for r in reports]},
            )  # fmt: skip
            write_bytes_atomic(tmp / "metrics.md", (table + "\n").encode())
            save_metrics_plot(
                reports,
                tmp / "metrics.png",
                columns=METRIC_COLUMNS,
                title=f"{dataset.name}, {split} split",
            )
    return reports, table


def cmd_eval_reference(args: argparse.Namespace) -> int:
    reports, table = evaluate_references(
        Path(args.data),
        None if args.truth is None else Path(args.truth),
        None if args.out is None else Path(args.out),
        split=args.split,
        rounds=args.rounds,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    v = reports[0]
    _print(
        f"{args.split} split: {v.visits} visits of {v.patients} patients; "
        f"mean ± std over {v.rounds} bootstrap rounds of 80% of the patients"
    )
    _print(table)
    if args.out:
        _print(f"wrote {args.out}/metrics.json, metrics.md, metrics.png")
    return 0


# --------------------------------------------------------------------------------------------------
# demo


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole FLAME pipeline on the built-in synthetic cohort (``flame_jax.flame.run_demo``)."""
    from flame_jax.flame import run_demo

    _, summary = run_demo(
        Path(args.out), overwrite=args.overwrite, seed=args.seed, progress=not args.quiet
    )
    return 0 if all(summary["checks"].values()) or not args.strict else 1


# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flame-jax",
        description="LLM-based medication recommendation research in JAX (FLAME, consensus).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="datasets: generate, inspect").add_subparsers(
        dest="data_command", required=True, metavar="SUBCOMMAND"
    )
    synth = data.add_parser("synth", help="generate the built-in synthetic cohort")
    synth.add_argument("--out", required=True, type=Path, help="output folder")
    synth.add_argument("--config", type=Path, help="YAML file of SyntheticConfig fields")
    synth.add_argument("--seed", type=int)
    synth.add_argument("--patients", type=int)
    synth.add_argument("--drugs", type=int)
    synth.add_argument("--diag-codes", type=int)
    synth.add_argument("--proc-codes", type=int)
    synth.add_argument("--max-visits", type=int)
    synth.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=cmd_data_synth)

    stats = data.add_parser("stats", help="validate a dataset folder and print its statistics")
    stats.add_argument("dataset", type=Path)
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_data_stats)
    _ingest.register(data)  # data prepare, data import-pickles, data synth-raw, data tfds

    ev = sub.add_parser("eval", help="evaluation").add_subparsers(
        dest="eval_command", required=True, metavar="SUBCOMMAND"
    )
    ref = ev.add_parser("reference", help="most-frequent drugs and the planted oracle")
    ref.add_argument("--data", required=True, type=Path, help="dataset folder")
    ref.add_argument("--truth", type=Path, help="truth/ folder of a synthetic cohort")
    ref.add_argument("--split", default="test", choices=("train", "val", "test"))
    ref.add_argument("--rounds", type=int, default=10, help="bootstrap rounds")
    ref.add_argument("--seed", type=int, default=0)
    ref.add_argument("--out", type=Path, help="folder for metrics.json/.md/.png")
    ref.add_argument("--overwrite", action="store_true")
    ref.set_defaults(func=cmd_eval_reference)

    _baselines.register(sub)  # baseline train, baseline eval, baseline export
    _consensus.register(sub)  # consensus vignettes, consensus run, serve
    _flame.register(sub)  # flame prepare / cls / sft / grpo / evaluate / run
    _sweep.register(sub)

    demo = sub.add_parser(
        "demo", help="FLAME end to end on the built-in synthetic cohort (what make demo runs)"
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("--seed", type=int, default=None, help="override the root seed (0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--overwrite", action="store_true", help="replace an earlier demo run")
    demo.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 unless GRPO beat pi_cls on Jaccard and the larger lambda lowered the DDI rate",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flame-jax`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:  # user errors (ConfigError and DatasetError are ValueErrors) get a message, not a trace
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"flame-jax: error: {message}", file=sys.stderr)
        return 2
    except ImportError as e:  # a core-only install: name the extra this command needs
        extra = missing_extra(e)
        if extra is None:
            raise
        message = str(e)
        if isinstance(e, ModuleNotFoundError):  # flame_jax's own ImportErrors name the extra
            message += f": this command needs pip install 'flame-jax[{extra}]' (or '[all]')"
        print(f"flame-jax: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
