"""Datasets: the on-disk format, its validating loader, the synthetic cohort, device batches."""

from flame_jax.data._batching import (
    VisitBatch,
    bucket_size,
    iterate_visit_batches,
    pad_ragged,
    pad_visits,
)
from flame_jax.data._ddi import FLAME_ADVERSE_TYPES, ddi_from_pairs, ddi_from_twosides
from flame_jax.data._drugs import DrugVocabulary, drug_key, drug_vocabulary
from flame_jax.data._format import (
    SCHEMA_VERSION,
    SPLITS,
    Dataset,
    DatasetError,
    RaggedIds,
    VisitTable,
    Vocabulary,
    cooccurrence_adjacency,
    load_dataset,
    save_dataset,
)
from flame_jax.data._ingest import (
    PrepareConfig,
    format_report,
    prepare,
    prepare_dataset,
    split_patients,
)
from flame_jax.data._mappings import (
    MedMapping,
    drug_name_part,
    normalise_drug_name,
    normalise_ndc,
)
from flame_jax.data._oracle import (
    PlantedRules,
    load_rules,
    most_frequent_recommend,
    oracle_recommend,
)
from flame_jax.data._pickles import import_pickles, read_pickles
from flame_jax.data._synthetic import (
    SyntheticCohort,
    SyntheticConfig,
    eicu_tables,
    generate_cohort,
    mimic4_tables,
    synthesize,
    write_cohort,
    write_raw_layout,
)
from flame_jax.data._tables import IngestError, RawCohort, read_raw
from flame_jax.data._tfds import (
    MANUAL_DOWNLOAD_INSTRUCTIONS,
    TFDS_CONFIGS,
    build_tfds,
    grain_batches,
    tfds_builder,
    tfds_data_source,
)
from flame_jax.data._unpickler import PickleRefusedError, safe_load

__all__ = [
    "FLAME_ADVERSE_TYPES",
    "MANUAL_DOWNLOAD_INSTRUCTIONS",
    "SCHEMA_VERSION",
    "SPLITS",
    "TFDS_CONFIGS",
    "Dataset",
    "DatasetError",
    "DrugVocabulary",
    "IngestError",
    "MedMapping",
    "PickleRefusedError",
    "PlantedRules",
    "PrepareConfig",
    "RaggedIds",
    "RawCohort",
    "SyntheticCohort",
    "SyntheticConfig",
    "VisitBatch",
    "VisitTable",
    "Vocabulary",
    "bucket_size",
    "build_tfds",
    "cooccurrence_adjacency",
    "ddi_from_pairs",
    "ddi_from_twosides",
    "drug_key",
    "drug_name_part",
    "drug_vocabulary",
    "eicu_tables",
    "format_report",
    "generate_cohort",
    "grain_batches",
    "import_pickles",
    "iterate_visit_batches",
    "load_dataset",
    "load_rules",
    "mimic4_tables",
    "most_frequent_recommend",
    "normalise_drug_name",
    "normalise_ndc",
    "oracle_recommend",
    "pad_ragged",
    "pad_visits",
    "prepare",
    "prepare_dataset",
    "read_pickles",
    "read_raw",
    "safe_load",
    "save_dataset",
    "split_patients",
    "synthesize",
    "tfds_builder",
    "tfds_data_source",
    "write_cohort",
    "write_raw_layout",
]
