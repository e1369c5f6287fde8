"""``flame-jax flame ...``: the FLAME pipeline, one command per stage plus ``run`` and ``demo``.

Every command takes ``--config YAML`` (``FlameConfig`` fields; default: ``FlameConfig.demo()``
values) and ``--out RUN`` (the run folder). A stage command runs that stage only (its inputs
must exist in RUN); ``run`` runs every stage. All are resumable: finished stages are skipped and
training stages continue from their last checkpoint.
"""

import argparse
import shutil
from pathlib import Path

__all__ = ["register"]

_STAGE_HELP = {
    "baselines": "train the LR / GAMENet / SafeDrug baselines on train and export embeddings",
    "knowledge": "build the knowledge-fusion tables from the baseline exports",
    "tokenizer": "build the offline tokenizer",
    "cls": "train pi_cls and score every visit",
    "sft": "fine-tune pi_list on synthetic edit tasks",
    "grpo": "step-wise GRPO of pi_list, once per lambda",
    "eval": "the comparison table on the test split and the trade-off plot",
}


def _config(args: argparse.Namespace):
    from flame_jax.config import load_config
    from flame_jax.flame import FlameConfig

    config = FlameConfig.demo() if args.config is None else load_config(FlameConfig, args.config)
    if args.seed is not None:
        import dataclasses

        config = dataclasses.replace(config, seed=args.seed)
    if getattr(args, "mesh", None) is not None:
        import dataclasses

        from flame_jax.train import MeshConfig

        config = dataclasses.replace(config, mesh=MeshConfig.parse(args.mesh))
    return config


def _prepare(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    if getattr(args, "overwrite", False) and out.exists():
        if not (out / "config.yaml").is_file():
            raise FileExistsError(f"{out}: not a FLAME run folder; refusing to delete it")
        shutil.rmtree(out)
    return out


def _cmd_stages(stages: tuple[str, ...]):
    def cmd(args: argparse.Namespace) -> int:
        from flame_jax.flame import run_pipeline
        from flame_jax.train import initialize_distributed

        # Joins a multi-process run when the environment describes one (SLURM, a TPU pod
        # slice, FLAME_JAX_COORDINATOR/NUM_PROCESSES/PROCESS_ID); a no-op otherwise.
        initialize_distributed()
        out = _prepare(args)
        table, summary = run_pipeline(_config(args), out, stages=stages, progress=not args.quiet)
        if table is not None:
            print(table)
        secs = ", ".join(f"{k} {v:.1f}s" for k, v in summary["seconds"].items())
        print(f"done: {out} ({secs})")
        return 0

    return cmd


def _cmd_demo(args: argparse.Namespace) -> int:
    from flame_jax.flame import run_demo

    run_demo(Path(args.out), overwrite=args.overwrite, seed=args.seed, progress=not args.quiet)
    return 0


def _common(p: argparse.ArgumentParser, *, config: bool = True) -> None:
    if config:
        p.add_argument("--config", type=Path, help="YAML file of FlameConfig fields")
    p.add_argument("--out", required=True, type=Path, help="the run folder")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if config:
        p.add_argument(
            "--mesh",
            metavar="AXES",
            help="train sharded on a device mesh, e.g. 'data=2,fsdp=2,tp=2' (-1: the rest)",
        )


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``flame`` and its subcommands to ``sub``."""
    from flame_jax.flame import STAGES

    flame = sub.add_parser("flame", help="FLAME: pi_cls, list SFT, step-wise GRPO, evaluation")
    fsub = flame.add_subparsers(dest="flame_command", required=True, metavar="SUBCOMMAND")
    run = fsub.add_parser("run", help="run (or resume) every stage")
    _common(run)
    run.add_argument("--overwrite", action="store_true", help="delete the run folder first")
    run.set_defaults(func=_cmd_stages(STAGES))
    for stage in STAGES:
        p = fsub.add_parser(stage, help=_STAGE_HELP[stage])
        _common(p)
        p.set_defaults(func=_cmd_stages((stage,)))
    demo = fsub.add_parser("demo", help="the default demo (synthetic cohort, tiny model, CPU)")
    _common(demo, config=False)
    demo.add_argument("--overwrite", action="store_true", help="delete the run folder first")
    demo.set_defaults(func=_cmd_demo)
