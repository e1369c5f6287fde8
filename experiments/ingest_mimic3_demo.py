"""The real-table ingestion path on the open MIMIC-III demo (mapping-free), with its filter report.

The MIMIC-III Clinical Database Demo v1.4 (100 patients, 129 admissions; ODbL; Johnson, Pollard
& Mark 2019, https://doi.org/10.13026/C2HM2Q) has no NDC -> ATC mapping and no DDI table, so the
medication vocabulary is the normalised generic drug name and the DDI is "not available". Runs
the FLAME filter defaults (top-200 drugs, codes seen in >= 6 visits, visits in all three tables,
patients with >= 2 visits, to a fixed point), then the same with relaxed code thresholds, and
prints each report. Only 14 demo patients have two or more admissions, so little survives: the
point is that real files (lower-case columns, NDC strings, missing values) go through the real
code path, not model quality.

    python experiments/ingest_mimic3_demo.py                         # demo at ../shared/data
    python experiments/ingest_mimic3_demo.py --root DIR --out runs/demo_mimic3
"""

import argparse
import pathlib
import time

from flame_jax.data import PrepareConfig, format_report, load_dataset, prepare_dataset

HERE = pathlib.Path(__file__).resolve()
DEFAULT_ROOT = HERE.parents[2] / "shared" / "data" / "mimic3-demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=pathlib.Path, default=DEFAULT_ROOT)
    parser.add_argument(
        "--out", type=pathlib.Path, default=HERE.parents[1] / "runs" / "mimic3_demo"
    )
    args = parser.parse_args()

    runs = {
        "flame-defaults": PrepareConfig(source="mimic3", med_vocab="name"),
        "relaxed-codes": PrepareConfig(
            source="mimic3", med_vocab="name", min_diag_count=2, min_proc_count=2
        ),
        "ndc-product": PrepareConfig(
            source="mimic3", med_vocab="ndc", min_diag_count=2, min_proc_count=2
        ),
    }
    for name, config in runs.items():
        start = time.perf_counter()
        out = args.out / name
        prepare_dataset(args.root, out, config, overwrite=True)
        seconds = time.perf_counter() - start
        dataset = load_dataset(out)
        print(f"=== {name}: med_vocab={config.med_vocab}, {seconds:.2f} s, written to {out}")
        print(format_report(dataset.info["prepare"]["report"]))
        stats = dataset.statistics()
        print(
            f"dataset: {stats['patients']} patients, {stats['visits']} visits, "
            f"{stats['diag_codes']} diagnoses, {stats['proc_codes']} procedures, "
            f"{stats['meds']} drugs, {stats['meds_per_visit']:.1f} drugs per visit, "
            f"DDI {'not available' if stats['ddi_rate_truth'] is None else stats['ddi_rate_truth']}"
        )
        print()


if __name__ == "__main__":
    main()
