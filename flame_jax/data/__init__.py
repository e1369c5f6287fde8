"""Datasets: the on-disk format, its validating loader, the synthetic cohort, device batches."""

from flame_jax.data._batching import (
    VisitBatch,
    bucket_size,
    iterate_visit_batches,
    pad_ragged,
    pad_visits,
)
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
from flame_jax.data._oracle import (
    PlantedRules,
    load_rules,
    most_frequent_recommend,
    oracle_recommend,
)
from flame_jax.data._synthetic import (
    SyntheticCohort,
    SyntheticConfig,
    generate_cohort,
    synthesize,
    write_cohort,
)

__all__ = [
    "SCHEMA_VERSION",
    "SPLITS",
    "Dataset",
    "DatasetError",
    "PlantedRules",
    "RaggedIds",
    "SyntheticCohort",
    "SyntheticConfig",
    "VisitBatch",
    "VisitTable",
    "Vocabulary",
    "bucket_size",
    "cooccurrence_adjacency",
    "generate_cohort",
    "iterate_visit_batches",
    "load_dataset",
    "load_rules",
    "most_frequent_recommend",
    "oracle_recommend",
    "pad_ragged",
    "pad_visits",
    "save_dataset",
    "synthesize",
    "write_cohort",
]
