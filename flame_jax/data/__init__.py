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

__all__ = [
    "SCHEMA_VERSION",
    "SPLITS",
    "Dataset",
    "DatasetError",
    "RaggedIds",
    "VisitBatch",
    "VisitTable",
    "Vocabulary",
    "bucket_size",
    "cooccurrence_adjacency",
    "iterate_visit_batches",
    "load_dataset",
    "pad_ragged",
    "pad_visits",
    "save_dataset",
]
