"""Point-wise baseline recommenders (LR, GAMENet-style, SafeDrug-style), trained with optax.

- :class:`LogisticRegression`: one logistic regression per drug on the current visit's
  multi-hot diagnosis and procedure codes.
- :class:`GAMENet`: dual GRU over the visit history, graph memory (GCNs over the train-split EHR
  co-occurrence graph and the DDI graph), dynamic memory over past visits' medications.
- :class:`SafeDrug`: dual GRU query, global molecular embeddings (GIN over the drugs' SMILES),
  a local layer (dense, or masked by BRICS substructures), and the DDI-controlled loss.

:func:`train_baseline` fits on the train split only (asserted), validates every epoch, stops
early on validation Jaccard and keeps Orbax checkpoints (best and last, exact resume);
:func:`evaluate_trained` applies SafeDrug's bootstrap protocol; :func:`export_embeddings` writes
per-visit patient embeddings and drug embeddings for FLAME's knowledge fusion.

References:
    Shang et al., "GAMENet", AAAI 2019. Yang et al., "SafeDrug", IJCAI 2021.
"""

from flame_jax.baselines._checkpoint import (
    Progress,
    latest_epoch,
    restore_checkpoint,
    save_checkpoint,
)
from flame_jax.baselines._config import MODELS, BaselineConfig
from flame_jax.baselines._export import evaluate_trained, export_embeddings, load_embeddings
from flame_jax.baselines._history import (
    HistoryBatch,
    history_starts,
    iterate_history_batches,
    pad_histories,
)
from flame_jax.baselines._losses import (
    bce_loss,
    controlled_loss,
    ddi_controller_weight,
    ddi_loss,
    multilabel_margin_loss,
    predicted_ddi_rate,
)
from flame_jax.baselines._models import (
    GAMENet,
    GraphContext,
    HistoryEncoder,
    LogisticRegression,
    ModelOutput,
    SafeDrug,
    build_model,
    graph_context,
)
from flame_jax.baselines._substructures import brics_substructures
from flame_jax.baselines._train import (
    TrainedBaseline,
    TrainResult,
    assert_train_only,
    fit_context,
    init_model,
    load_run,
    make_optimizer,
    make_train_step,
    predict,
    train_baseline,
)

__all__ = [
    "MODELS",
    "BaselineConfig",
    "GAMENet",
    "GraphContext",
    "HistoryBatch",
    "HistoryEncoder",
    "LogisticRegression",
    "ModelOutput",
    "Progress",
    "SafeDrug",
    "TrainResult",
    "TrainedBaseline",
    "assert_train_only",
    "bce_loss",
    "brics_substructures",
    "build_model",
    "controlled_loss",
    "ddi_controller_weight",
    "ddi_loss",
    "evaluate_trained",
    "export_embeddings",
    "fit_context",
    "graph_context",
    "history_starts",
    "init_model",
    "iterate_history_batches",
    "latest_epoch",
    "load_embeddings",
    "load_run",
    "make_optimizer",
    "make_train_step",
    "multilabel_margin_loss",
    "pad_histories",
    "predict",
    "predicted_ddi_rate",
    "restore_checkpoint",
    "save_checkpoint",
    "train_baseline",
]
