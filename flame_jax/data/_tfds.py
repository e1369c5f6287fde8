"""A TensorFlow Datasets builder (``flame_ehr``) writing array_record, read without TensorFlow.

Configs:

* ``synthetic``: the built-in synthetic cohort (``SyntheticConfig()``, or the
  ``synthetic_config`` given to the builder);
* ``mimic3``, ``mimic4``, ``eicu``: credentialed data. Put the raw tables in the ``manual_dir``
  (see :data:`MANUAL_DOWNLOAD_INSTRUCTIONS`); they are ingested with
  :func:`~flame_jax.data.prepare` (``PrepareConfig(source=...)``, or the ``prepare_config``
  given to the builder).

A builder can also convert an existing dataset folder (``dataset_dir``). One example per visit:
patient_id, visit_id, visit_index, age, gender, admit_time, diag / proc / med (vocabulary
indices); splits train / val / test by patient. The vocabularies (codes and titles) are in
``info.metadata``. ``tfds.data_source`` and grain read the files without TensorFlow
(:func:`tfds_data_source`, :func:`grain_batches`); ``tfds.load`` / ``as_dataset`` need
TensorFlow and are not used.
"""

import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flame_jax.data._batching import VisitBatch, pad_visits
from flame_jax.data._format import Dataset, RaggedIds, VisitTable, Vocabulary

__all__ = [
    "MANUAL_DOWNLOAD_INSTRUCTIONS",
    "TFDS_CONFIGS",
    "build_tfds",
    "grain_batches",
    "tfds_builder",
    "tfds_data_source",
]

TFDS_NAME = "flame_ehr"
TFDS_CONFIGS = ("synthetic", "mimic3", "mimic4", "eicu")
MANUAL_DOWNLOAD_INSTRUCTIONS = """\
MIMIC-III, MIMIC-IV and eICU-CRD are credentialed PhysioNet databases: flame_jax never downloads
them. Obtain access at https://physionet.org (CITI training and the data use agreement), download
the files yourself, and point manual_dir at them:

* mimic3: ADMISSIONS, PATIENTS, DIAGNOSES_ICD, PROCEDURES_ICD, PRESCRIPTIONS (.csv or .csv.gz;
  optionally D_ICD_DIAGNOSES, D_ICD_PROCEDURES) from https://physionet.org/content/mimiciii/1.4/
* mimic4: the hosp module (admissions, patients, diagnoses_icd, procedures_icd, prescriptions,
  d_icd_*), directly in manual_dir or in manual_dir/hosp, from
  https://physionet.org/content/mimiciv/
* eicu: patient, diagnosis, treatment, medication from https://physionet.org/content/eicu-crd/
"""


def _features():
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict(
        {
            "patient_id": np.int64,
            "visit_id": np.int64,
            "visit_index": np.int32,
            "age": np.int32,
            "gender": tfds.features.Text(),
            "admit_time": tfds.features.Text(),
            "diag": tfds.features.Sequence(np.int32),
            "proc": tfds.features.Sequence(np.int32),
            "med": tfds.features.Sequence(np.int32),
        }
    )


@functools.cache
def _builder_class() -> type:
    """Defines (once) and registers the builder class; tfds is imported only here."""
    import tensorflow_datasets as tfds

    class FlameEhr(tfds.core.GeneratorBasedBuilder):
        """flame_ehr: medication-recommendation visits (diagnoses, procedures, drugs)."""

        name = TFDS_NAME
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "First release: flame_jax dataset format, schema 1."}  # noqa: RUF012
        BUILDER_CONFIGS = [  # noqa: RUF012
            tfds.core.BuilderConfig(name=n, description=f"{n} visits") for n in TFDS_CONFIGS
        ]
        MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
        # No checksums file, so no code path is needed; computing it makes tfds 4.9.10 import
        # importlib_resources, which is not installed here.
        code_path = None

        def __init__(
            self,
            *,
            synthetic_config: Any = None,
            prepare_config: Any = None,
            dataset_dir: str | os.PathLike | None = None,
            **kwargs: Any,
        ):
            self._synthetic_config = synthetic_config
            self._prepare_config = prepare_config
            self._dataset_dir = dataset_dir
            self._vocab_metadata = tfds.core.MetadataDict()
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description="One example per hospital visit: diagnosis, procedure and "
                "medication vocabulary indices, with patient-level splits (flame_jax).",
                features=_features(),
                homepage="https://github.com/flame-jax",
                metadata=self._vocab_metadata,
            )

        def _dataset(self, dl_manager) -> Dataset:
            from flame_jax.data import (
                PrepareConfig,
                SyntheticConfig,
                generate_cohort,
                load_dataset,
                prepare,
            )

            if self._dataset_dir is not None:
                return load_dataset(self._dataset_dir)
            name = self.builder_config.name
            if name == "synthetic":
                return generate_cohort(self._synthetic_config or SyntheticConfig()).dataset
            manual = Path(dl_manager.manual_dir)
            config = self._prepare_config or PrepareConfig(source=name)
            return prepare(manual, config)[0]

        def _split_generators(self, dl_manager):
            dataset = self._dataset(dl_manager)
            for kind in ("diag", "proc", "med"):
                vocab = getattr(dataset, f"{kind}_vocab")
                self.info.metadata[f"{kind}_codes"] = list(vocab.codes)
                self.info.metadata[f"{kind}_titles"] = list(vocab.titles)
            self.info.metadata["name"] = dataset.name
            self.info.metadata["source"] = dataset.source
            return {
                split: self._generate_examples(dataset, dataset.split_rows(split))
                for split in ("train", "val", "test")
            }

        def _generate_examples(self, dataset: Dataset, rows: np.ndarray):
            v = dataset.visits
            for i in rows.tolist():
                yield (
                    int(v.visit_id[i]),
                    {
                        "patient_id": int(v.patient_id[i]),
                        "visit_id": int(v.visit_id[i]),
                        "visit_index": int(v.visit_index[i]),
                        "age": int(v.age[i]),
                        "gender": str(v.gender[i]),
                        "admit_time": str(v.admit_time[i]),
                        "diag": v.diag[i].astype(np.int32),
                        "proc": v.proc[i].astype(np.int32),
                        "med": v.med[i].astype(np.int32),
                    },
                )

    return FlameEhr


def tfds_builder(
    config: str,
    data_dir: str | os.PathLike,
    *,
    manual_dir: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike | None = None,
    synthetic_config: Any = None,
    prepare_config: Any = None,
) -> Any:
    """The ``flame_ehr/<config>`` builder writing array_record under ``data_dir``."""
    import tensorflow_datasets as tfds

    if config not in TFDS_CONFIGS:
        raise ValueError(f"TFDS config must be one of {TFDS_CONFIGS}, got {config!r}")
    if config != "synthetic" and dataset_dir is None and manual_dir is None:
        raise ValueError(
            f"TFDS config {config!r} reads credentialed raw tables from a manual_dir:\n"
            + MANUAL_DOWNLOAD_INSTRUCTIONS
        )
    download_config = None
    if manual_dir is not None:
        if not Path(manual_dir).is_dir():
            raise FileNotFoundError(f"{manual_dir}: manual_dir is not a folder")
        download_config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    builder = _builder_class()(
        config=config,
        data_dir=os.fspath(data_dir),
        file_format="array_record",
        synthetic_config=synthetic_config,
        prepare_config=prepare_config,
        dataset_dir=dataset_dir,
    )
    builder._download_config = download_config  # read back in build_tfds
    return builder


def build_tfds(
    config: str,
    data_dir: str | os.PathLike,
    *,
    manual_dir: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike | None = None,
    synthetic_config: Any = None,
    prepare_config: Any = None,
) -> dict[str, Any]:
    """Builds ``flame_ehr/<config>`` (array_record) in ``data_dir``.

    Returns:
      ``{"path": the version folder, "splits": {split: number of visits}}``.
    """
    builder = tfds_builder(
        config,
        data_dir,
        manual_dir=manual_dir,
        dataset_dir=dataset_dir,
        synthetic_config=synthetic_config,
        prepare_config=prepare_config,
    )
    builder.download_and_prepare(download_config=builder._download_config)
    return {
        "path": str(builder.data_dir),
        "splits": {k: int(v.num_examples) for k, v in builder.info.splits.items()},
    }


def tfds_data_source(data_dir: str | os.PathLike, config: str, split: str) -> Any:
    """A random-access ``tfds.data_source`` over a built split (no TensorFlow)."""
    import tensorflow_datasets as tfds

    _builder_class()  # registers flame_ehr
    return tfds.data_source(f"{TFDS_NAME}/{config}", split=split, data_dir=os.fspath(data_dir))


def _metadata_vocab(metadata: Any, kind: str) -> Vocabulary:
    codes = tuple(metadata[f"{kind}_codes"])
    titles = tuple(metadata[f"{kind}_titles"])
    return Vocabulary(kind=kind, codes=codes, titles=titles)


def _examples_dataset(
    examples: Sequence[dict], vocabs: dict[str, Vocabulary], ehr: np.ndarray
) -> Dataset:
    """A throw-away in-memory Dataset over ``examples`` (what :func:`pad_visits` reads)."""
    n = len(examples)

    def ints(key: str, dtype) -> np.ndarray:
        return np.asarray([int(e[key]) for e in examples], dtype)

    def text(key: str) -> np.ndarray:
        values = [e[key] for e in examples]
        return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values], object)

    visits = VisitTable(
        patient_id=ints("patient_id", np.int64),
        visit_id=ints("visit_id", np.int64),
        visit_index=ints("visit_index", np.int32),
        admit_time=text("admit_time"),
        age=ints("age", np.int32),
        gender=text("gender"),
        diag=RaggedIds.from_lists([np.asarray(e["diag"], np.int32) for e in examples]),
        proc=RaggedIds.from_lists([np.asarray(e["proc"], np.int32) for e in examples]),
        med=RaggedIds.from_lists([np.asarray(e["med"], np.int32) for e in examples]),
    )
    return Dataset(
        name="batch",
        source="tfds",
        diag_vocab=vocabs["diag"],
        proc_vocab=vocabs["proc"],
        med_vocab=vocabs["med"],
        visits=visits,
        splits={"train": np.unique(visits.patient_id)} if n else {},
        ehr=ehr,
        ddi=None,
    )


def grain_batches(
    data_dir: str | os.PathLike,
    config: str,
    split: str,
    batch_size: int,
    *,
    seed: int | None = None,
    drop_remainder: bool = False,
) -> Iterator[VisitBatch]:
    """Padded :class:`VisitBatch` es over a built TFDS split, through a grain ``MapDataset``.

    Args:
      data_dir, config, split: the built dataset (:func:`build_tfds`).
      batch_size: visits per batch; the last batch is padded (``mask`` false) unless
        ``drop_remainder``.
      seed: shuffle the visits with this seed (grain's shuffle); None keeps the stored order.

    Yields:
      Batches as :func:`~flame_jax.data.pad_visits` makes them (code lengths bucketed per batch).
    """
    import grain
    import tensorflow_datasets as tfds

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    source = tfds_data_source(data_dir, config, split)
    _builder_class()
    info = tfds.builder(f"{TFDS_NAME}/{config}", data_dir=os.fspath(data_dir)).info
    vocabs = {k: _metadata_vocab(info.metadata, k) for k in ("diag", "proc", "med")}
    m = len(vocabs["med"])
    ehr = np.zeros((m, m), np.uint8)

    def to_batch(examples: Sequence[dict]) -> VisitBatch:
        ds = _examples_dataset(examples, vocabs, ehr)
        return pad_visits(ds, np.arange(len(examples)), batch_size=batch_size)

    pipeline = grain.MapDataset.source(source)
    if seed is not None:
        pipeline = pipeline.shuffle(seed=seed)
    pipeline = pipeline.batch(batch_size, drop_remainder=drop_remainder, batch_fn=to_batch)
    for i in range(len(pipeline)):
        yield pipeline[i]
