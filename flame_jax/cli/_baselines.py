"""``flame-jax baseline train|eval|export``: the point-wise baselines (LR, GAMENet, SafeDrug).

flame-jax baseline train --model {lr,gamenet,safedrug} --data DIR --out RUN
                         [--config YAML --epochs N --seed S --overwrite --resume --quiet]
flame-jax baseline eval --run RUN [--run RUN2 ...] [--split test --rounds 10 --seed 0
                        --reference --out DIR --overwrite]
flame-jax baseline export --run RUN [--out FILE]
"""

import argparse
from pathlib import Path

__all__ = ["register"]


def _print(*args) -> None:
    print(*args, flush=True)


def cmd_baseline_train(args: argparse.Namespace) -> int:
    from flame_jax.baselines import BaselineConfig, export_embeddings, load_run, train_baseline
    from flame_jax.config import load_config
    from flame_jax.data import load_dataset

    config = load_config(
        BaselineConfig,
        args.config,
        {"model": args.model, "epochs": args.epochs, "seed": args.seed},
    )
    dataset = load_dataset(args.data)
    result = train_baseline(
        dataset,
        config,
        args.out,
        dataset_dir=args.data,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    last = result.history[-1]["val"] if result.history else None
    why = "early stop" if result.stopped_early else "epoch limit"
    _print(
        f"trained {config.model} for {result.epochs} epochs ({why}); best validation Jaccard "
        f"{result.best_jaccard:.4f} at epoch {result.best_epoch}"
    )
    if last is not None:
        _print(f"last epoch: val Jaccard {last['jaccard']:.4f}, #Med {last['num_meds']:.2f}")
    trained = load_run(args.out, dataset=dataset)
    path = export_embeddings(trained, Path(args.out) / "embeddings.npz")
    _print(
        f"wrote {args.out}/config.yaml, run.json, metrics.jsonl, curves.png, checkpoints/, "
        f"{path.name}"
    )
    return 0


def cmd_baseline_eval(args: argparse.Namespace) -> int:
    import jax

    from flame_jax._io import atomic_directory, write_bytes_atomic, write_json_atomic
    from flame_jax.baselines import evaluate_trained, load_run
    from flame_jax.data import most_frequent_recommend
    from flame_jax.metrics import METRIC_COLUMNS, evaluate_sets, format_table
    from flame_jax.plots import save_metrics_plot

    reports = []
    dataset = None
    trained_runs = []
    for run in args.run:
        trained = load_run(run, dataset=dataset)
        dataset = trained.dataset  # runs of one table share the dataset
        trained_runs.append(trained)
    models = [t.config.model for t in trained_runs]
    for run, trained in zip(args.run, trained_runs, strict=True):
        name = trained.config.model
        if models.count(name) > 1:  # several runs of one model: tell them apart
            name = f"{name} ({Path(run).name})"
        reports.append(
            evaluate_trained(trained, split=args.split, rounds=args.rounds, seed=args.seed,
                             name=name)
        )  # fmt: skip
    if args.reference:
        rows = dataset.split_rows(args.split)
        pred, scores = most_frequent_recommend(dataset, rows)
        reports.insert(
            0,
            evaluate_sets(
                "most-frequent",
                pred,
                dataset.visits.med.multi_hot(dataset.num_meds, rows),
                dataset.visits.patient_id[rows],
                key=jax.random.key(args.seed),
                scores=scores,
                ddi=dataset.ddi,
                rounds=args.rounds,
            ),
        )
    v = reports[-1]
    _print(
        f"{args.split} split: {v.visits} visits of {v.patients} patients; "
        f"mean ± std over {v.rounds} bootstrap rounds of 80% of the patients"
    )
    table = format_table(reports)
    _print(table)
    payload = {
        "split": args.split,
        "rounds": args.rounds,
        "seed": args.seed,
        "runs": [str(r) for r in args.run],
        "reports": [r.to_json() for r in reports],
    }
    if args.out is not None:
        with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
            write_json_atomic(tmp / "metrics.json", payload)
            write_bytes_atomic(tmp / "metrics.md", (table + "\n").encode())
            save_metrics_plot(
                reports, tmp / "metrics.png", columns=METRIC_COLUMNS, title=f"{args.split} split"
            )
        _print(f"wrote {args.out}/metrics.json, metrics.md, metrics.png")
    elif len(args.run) == 1:
        run = Path(args.run[0])
        write_json_atomic(run / f"eval_{args.split}.json", payload)
        write_bytes_atomic(run / f"eval_{args.split}.md", (table + "\n").encode())
        _print(f"wrote {run}/eval_{args.split}.json, eval_{args.split}.md")
    return 0


def cmd_baseline_export(args: argparse.Namespace) -> int:
    from flame_jax.baselines import export_embeddings, load_embeddings, load_run

    trained = load_run(args.run)
    out = args.out if args.out is not None else Path(args.run) / "embeddings.npz"
    path = export_embeddings(trained, out)
    arrays = load_embeddings(path)
    _print(
        f"wrote {path}: patient {arrays['patient'].shape}, drug {arrays['drug'].shape}, "
        f"scores {arrays['scores'].shape} (fitted on the train split, epoch {trained.epoch})"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``baseline train``, ``baseline eval`` and ``baseline export`` to ``sub``."""
    base = sub.add_parser("baseline", help="point-wise baselines: LR, GAMENet, SafeDrug")
    bsub = base.add_subparsers(dest="baseline_command", required=True, metavar="SUBCOMMAND")

    train = bsub.add_parser("train", help="train a baseline (train split; early stop on val)")
    train.add_argument("--model", choices=("lr", "gamenet", "safedrug"), help="overrides YAML")
    train.add_argument("--data", required=True, type=Path, help="dataset folder")
    train.add_argument("--out", required=True, type=Path, help="run folder")
    train.add_argument("--config", type=Path, help="YAML file of BaselineConfig fields")
    train.add_argument("--epochs", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    train.set_defaults(func=cmd_baseline_train)

    ev = bsub.add_parser("eval", help="bootstrap metrics of trained runs on a split")
    ev.add_argument("--run", required=True, type=Path, action="append", help="run folder(s)")
    ev.add_argument("--split", default="test", choices=("train", "val", "test"))
    ev.add_argument("--rounds", type=int, default=10, help="bootstrap rounds")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--reference", action="store_true", help="add most-frequent drugs")
    ev.add_argument("--out", type=Path, help="folder for metrics.json/.md/.png")
    ev.add_argument("--overwrite", action="store_true")
    ev.set_defaults(func=cmd_baseline_eval)

    ex = bsub.add_parser("export", help="(re)write a run's embeddings.npz")
    ex.add_argument("--run", required=True, type=Path)
    ex.add_argument("--out", type=Path, help="default RUN/embeddings.npz")
    ex.set_defaults(func=cmd_baseline_export)
