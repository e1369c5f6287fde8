"""``flame-jax data prepare | import-pickles | synth-raw | tfds``: raw EHR tables, pickles, TFDS.

Thin wrappers over :func:`flame_jax.data.prepare_dataset`, :func:`flame_jax.data.import_pickles`
and :func:`flame_jax.data.build_tfds`.
"""

import argparse
import dataclasses
from pathlib import Path

__all__ = ["register"]


def _print(*args) -> None:
    print(*args, flush=True)


def cmd_prepare(args: argparse.Namespace) -> int:
    from flame_jax.config import dump_config, load_config
    from flame_jax.data import PrepareConfig, format_report, prepare_dataset

    presets = {
        "default": PrepareConfig,
        "flame": PrepareConfig.flame,
        "safedrug": PrepareConfig.safedrug,
        "unfiltered": PrepareConfig.unfiltered,
    }
    overrides = {
        "source": args.source,
        "med_vocab": args.med_vocab,
        "ndc_map": args.ndc_map,
        "ndc_rxcui": args.ndc_rxcui,
        "rxcui_atc": args.rxcui_atc,
        "drug_info": args.drug_info,
        "top_k_meds": args.top_k_meds,
        "min_diag_count": args.min_diag_count,
        "min_proc_count": args.min_proc_count,
        "min_visits": args.min_visits,
        "split": args.split,
        "seed": args.seed,
        "ddi": args.ddi,
        "ddi_format": args.ddi_format,
        "cid_atc": args.cid_atc,
    }
    cleared = {}  # fields set to None on purpose (None flags mean "not given" otherwise)
    if args.ddi_types is not None:
        types = tuple(t.strip() for t in args.ddi_types.split(",") if t.strip())
        if not types:
            raise ValueError("--ddi-types: give comma-separated types, or 'all'")
        if types == ("all",):
            cleared["ddi_types"] = None
        else:
            overrides["ddi_types"] = types
    if args.no_top_k_meds:
        cleared["top_k_meds"] = None
    if args.any_table:
        overrides["require_all_tables"] = False
    if args.flame_topk_bug:
        overrides["topk_off_by_one"] = True
    if args.config is not None and args.preset != "default":
        raise ValueError("--preset and --config exclude each other (the file holds every field)")
    if args.config is not None:
        config = load_config(PrepareConfig, args.config, overrides)
    else:
        set_ = {k: v for k, v in overrides.items() if v is not None}
        config = presets[args.preset](**set_)
    if cleared:
        config = dataclasses.replace(config, **cleared)
    _, report = prepare_dataset(
        args.root, args.out, config, overwrite=args.overwrite, progress=not args.quiet
    )
    dump_config(config, Path(args.out) / "prepare.yaml")
    _print(format_report(report))
    _print(f"wrote {args.out}/ (dataset files, report.json, report.txt, prepare.yaml)")
    return 0


def cmd_import_pickles(args: argparse.Namespace) -> int:
    from flame_jax.data import import_pickles

    dataset = import_pickles(
        args.folder,
        args.out,
        split=args.split,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    s = dataset.statistics()
    _print(
        f"imported {args.folder}: {s['patients']} patients, {s['visits']} visits, "
        f"{s['diag_codes']} diagnoses, {s['proc_codes']} procedures, {s['meds']} drugs, "
        f"DDI {'yes' if dataset.ddi is not None else 'not available'}"
    )
    _print(f"wrote {args.out}/")
    return 0


def cmd_tfds(args: argparse.Namespace) -> int:
    from flame_jax.data import build_tfds

    info = build_tfds(
        args.config_name,
        args.data_dir,
        manual_dir=args.manual_dir,
        dataset_dir=args.dataset,
    )
    _print(f"built flame_ehr/{args.config_name} in {info['path']}")
    _print(", ".join(f"{k} {v} visits" for k, v in info["splits"].items()))
    return 0


def cmd_synth_raw(args: argparse.Namespace) -> int:
    from flame_jax.data import SyntheticConfig, generate_cohort, write_raw_layout

    base = SyntheticConfig.tiny if args.tiny else SyntheticConfig
    kwargs = {"seed": args.seed, "patients": args.patients}
    config = base(**{k: v for k, v in kwargs.items() if v is not None})
    paths = write_raw_layout(
        generate_cohort(config), args.out, args.layout, overwrite=args.overwrite
    )
    _print(f"wrote {len(paths)} {args.layout} tables to {args.out}/: {', '.join(sorted(paths))}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``prepare``, ``import-pickles`` and ``tfds`` to the ``data`` subcommands ``sub``."""
    p = sub.add_parser(
        "prepare",
        help="raw MIMIC-III / MIMIC-IV / eICU tables -> dataset (filters, vocabularies, splits)",
    )
    p.add_argument("--source", choices=("mimic3", "mimic4", "eicu"), default=None)
    p.add_argument("--root", required=True, type=Path, help="folder of the raw tables")
    p.add_argument("--out", required=True, type=Path, help="output dataset folder")
    p.add_argument(
        "--preset",
        choices=("default", "flame", "safedrug", "unfiltered"),
        default="default",
        help="filter defaults: FLAME's with a mapping-free vocabulary (default), FLAME, "
        "SafeDrug/GAMENet, or none",
    )
    p.add_argument("--config", type=Path, help="YAML file of PrepareConfig fields")
    p.add_argument("--med-vocab", choices=("name", "ndc", "atc3", "drugbank"))
    p.add_argument("--ndc-map", help="drugbank: NDC -> drug id CSV")
    p.add_argument("--ndc-rxcui", help="atc3: NDC -> RXCUI table")
    p.add_argument("--rxcui-atc", help="atc3: RXCUI -> ATC table")
    p.add_argument("--drug-info", help="drug id -> name, SMILES CSV")
    p.add_argument("--top-k-meds", type=int)
    p.add_argument("--no-top-k-meds", action="store_true", help="keep every drug")
    p.add_argument(
        "--flame-topk-bug", action="store_true", help="keep K+1 drugs, as FLAME's .loc[:K]"
    )
    p.add_argument("--min-diag-count", type=int)
    p.add_argument("--min-proc-count", type=int)
    p.add_argument("--min-visits", type=int)
    p.add_argument(
        "--any-table", action="store_true", help="keep visits without diagnoses or procedures"
    )
    p.add_argument("--split", choices=("safedrug", "random"))
    p.add_argument("--seed", type=int)
    p.add_argument("--ddi", help="DDI table (optional)")
    p.add_argument("--ddi-format", choices=("pairs", "twosides"))
    p.add_argument(
        "--ddi-types", help="comma-separated interaction types to keep, or 'all' (default)"
    )
    p.add_argument("--cid-atc", help="twosides: drug-atc.csv")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    ip = sub.add_parser(
        "import-pickles",
        help="SafeDrug/GAMENet pickles (records_final.pkl, voc_final.pkl, ...) -> dataset",
    )
    ip.add_argument("folder", type=Path, help="folder with records_final.pkl and voc_final.pkl")
    ip.add_argument("--out", required=True, type=Path)
    ip.add_argument("--split", choices=("safedrug", "random"), default="safedrug")
    ip.add_argument("--seed", type=int, default=0)
    ip.add_argument("--overwrite", action="store_true")
    ip.set_defaults(func=cmd_import_pickles)

    sr = sub.add_parser(
        "synth-raw",
        help="the synthetic cohort's raw tables in the MIMIC-III, MIMIC-IV or eICU layout",
    )
    sr.add_argument("--layout", choices=("mimic3", "mimic4", "eicu"), required=True)
    sr.add_argument("--out", required=True, type=Path)
    sr.add_argument("--seed", type=int)
    sr.add_argument("--patients", type=int)
    sr.add_argument("--tiny", action="store_true", help="start from SyntheticConfig.tiny()")
    sr.add_argument("--overwrite", action="store_true")
    sr.set_defaults(func=cmd_synth_raw)

    tf = sub.add_parser("tfds", help="build the flame_ehr TFDS dataset (array_record)")
    tf.add_argument("config_name", choices=("synthetic", "mimic3", "mimic4", "eicu"))
    tf.add_argument("--data-dir", required=True, type=Path, help="TFDS data_dir")
    tf.add_argument("--manual-dir", type=Path, help="raw tables of a credentialed config")
    tf.add_argument("--dataset", type=Path, help="an existing dataset folder to convert instead")
    tf.set_defaults(func=cmd_tfds)
