"""The one frozen config of a baseline run: model, architecture, loss, optimiser and schedule.

Fields whose published value depends on the model (loss weights, dropout, DDI control) default
to ``None`` and are resolved in ``__post_init__`` from the model's paper, so the config written
next to a run always holds concrete values.

References:
    Shang et al., "GAMENet: Graph Augmented MEmory Networks for Recommending Medication
    Combination", AAAI 2019. Yang et al., "SafeDrug: Dual Molecular Graph Encoders for
    Recommending Effective and Safe Drug Combinations", IJCAI 2021.
"""

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = ["MODELS", "BaselineConfig"]

MODELS = ("lr", "gamenet", "safedrug")

# Per-model values where the papers' code differs (resolved when a field is None).
_MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    # Logistic regression: plain BCE on the current visit's multi-hot codes.
    "lr": {
        "bce_weight": 1.0,
        "margin_weight": 0.0,
        "dropout": 0.0,
        "ddi_control": False,
        "learning_rate": 1e-2,
    },
    # GAMENet's code: loss = 0.9 BCE + 0.01 multilabel margin (no DDI term), dropout 0.4.
    "gamenet": {
        "bce_weight": 0.9,
        "margin_weight": 0.01,
        "dropout": 0.4,
        "ddi_control": False,
        "learning_rate": 2e-3,
    },
    # SafeDrug's code: 0.95 BCE + 0.05 margin, DDI-controlled, dropout 0.5 on code embeddings.
    "safedrug": {
        "bce_weight": 0.95,
        "margin_weight": 0.05,
        "dropout": 0.5,
        "ddi_control": True,
        "learning_rate": 2e-3,
    },
}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaselineConfig:
    """A baseline recommender and how it is trained.

    Attributes:
        model: ``"lr"`` (multi-hot logistic regression), ``"gamenet"`` or ``"safedrug"``.
        dim: embedding size of codes, GRU states, graph and molecular encoders (papers: 64).
        gcn_layers: GCN layers over the EHR and DDI graphs (GAMENet: 2).
        gin_layers: GIN layers of the molecular encoder (SafeDrug's MPNN: 2).
        local_encoder: SafeDrug's local layer: ``"dense"`` (unmasked, ``substructures`` wide;
            the default, see below) or ``"brics"`` (masked by the drugs' BRICS substructures,
            as published). With batches of 32 visits, the masked layer trains far more slowly
            than SafeDrug's one-visit updates allow for (on the default synthetic cohort it
            stayed at the most-frequent plateau for 8 epochs), so the default is dense.
        substructures: width of the ``"dense"`` local layer.
        dropout: dropout rate on the code embeddings (None: the model's paper value).
        bce_weight: weight of the binary cross-entropy (None: the model's paper value).
        margin_weight: weight of the multilabel margin loss (None: the model's paper value).
        ddi_control: SafeDrug's DDI-controlled loss on or off (None: on for SafeDrug only).
        target_ddi: gamma, the target DDI rate of the controller (SafeDrug: 0.06; default 0.05).
        kp: K_p, the controller's proportional gain denominator (SafeDrug: 0.05).
        ddi_scale: scale of the DDI penalty ``sum_ij p_i p_j A_ij`` (SafeDrug: 0.0005; default
            0.005, because a batched step of 32 visits replaces 32 of SafeDrug's updates).
        threshold: probability above which a drug is recommended (0.5).
        epochs: maximum training epochs.
        patience: stop after this many epochs without a better validation Jaccard.
        batch_size: visits per training step (padded; the last batch of an epoch too).
        learning_rate: AdamW learning rate (None: 1e-2 for LR, 2e-3 for the others).
        weight_decay: AdamW decoupled weight decay.
        clip_norm: global gradient-norm clip.
        seed: root seed (initialisation, shuffling, dropout).

    Examples:
        >>> BaselineConfig(model="safedrug").margin_weight
        0.05
        >>> BaselineConfig(model="gamenet").bce_weight
        0.9
        >>> BaselineConfig(model="mlp")
        Traceback (most recent call last):
        ...
        ValueError: BaselineConfig.model must be one of ('lr', 'gamenet', 'safedrug'), got 'mlp'
    """

    model: str = "safedrug"
    dim: int = 64
    gcn_layers: int = 2
    gin_layers: int = 2
    local_encoder: str = "dense"
    substructures: int = 64
    dropout: float | None = None
    bce_weight: float | None = None
    margin_weight: float | None = None
    ddi_control: bool | None = None
    target_ddi: float = 0.05
    kp: float = 0.05
    ddi_scale: float = 0.005
    threshold: float = 0.5
    epochs: int = 40
    patience: int = 8
    batch_size: int = 32
    learning_rate: float | None = None
    weight_decay: float = 1e-4
    clip_norm: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check(
            self.model in MODELS,
            f"BaselineConfig.model must be one of {MODELS}, got {self.model!r}",
        )
        _check(
            self.local_encoder in ("brics", "dense"),
            f"BaselineConfig.local_encoder must be 'brics' or 'dense', got {self.local_encoder!r}",
        )
        for name, value in _MODEL_DEFAULTS[self.model].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        ints = {
            "dim": 1,
            "gcn_layers": 1,
            "gin_layers": 1,
            "substructures": 1,
            "epochs": 1,
            "patience": 1,
            "batch_size": 1,
            "seed": 0,
        }
        for name, lo in ints.items():
            value = getattr(self, name)
            _check(
                isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= lo,
                f"BaselineConfig.{name} must be an integer >= {lo}, got {value!r}",
            )
            object.__setattr__(self, name, int(value))
        _check(
            isinstance(self.ddi_control, bool),
            f"BaselineConfig.ddi_control must be true or false, got {self.ddi_control!r}",
        )
        ranges = {
            "dropout": (0.0, 0.95),
            "bce_weight": (0.0, math.inf),
            "margin_weight": (0.0, math.inf),
            "target_ddi": (0.0, 1.0),
            "kp": (1e-9, math.inf),
            "ddi_scale": (0.0, math.inf),
            "threshold": (0.0, 1.0),
            "learning_rate": (1e-12, math.inf),
            "weight_decay": (0.0, math.inf),
            "clip_norm": (1e-12, math.inf),
        }
        for name, (lo, hi) in ranges.items():
            value = getattr(self, name)
            _check(
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and lo <= value <= hi,
                f"BaselineConfig.{name} must be a finite number in [{lo}, {hi}], got {value!r}",
            )
            object.__setattr__(self, name, float(value))
        _check(
            self.bce_weight + self.margin_weight > 0,
            "BaselineConfig.bce_weight and margin_weight must not both be 0",
        )

    @classmethod
    def tiny(cls, model: str = "safedrug", **overrides: Any) -> "BaselineConfig":
        """A few small epochs for tests."""
        kwargs: dict[str, Any] = {
            "model": model,
            "dim": 16,
            "substructures": 16,
            "epochs": 2,
            "patience": 2,
            "batch_size": 16,
            "learning_rate": 5e-3,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def paper(cls, model: str = "safedrug", **overrides: Any) -> "BaselineConfig":
        """The published MIMIC-III settings: dim 64, lr 5e-4, SafeDrug gamma 0.06, K_p 0.05.

        Both papers train one patient at a time for 50 (SafeDrug) / 40 (GAMENet) epochs with
        Adam; here a batch of one visit is too slow, so batches stay at 32 with the papers'
        learning rate (see ``experiments/baselines/README.md``).
        """
        kwargs: dict[str, Any] = {
            "model": model,
            "dim": 64,
            "learning_rate": 5e-4,
            "weight_decay": 0.0,
            "epochs": 50,
            "patience": 10,
            "target_ddi": 0.06,
            "kp": 0.05,
            "ddi_scale": 0.0005,
            "local_encoder": "brics",
        }
        kwargs.update(overrides)
        return cls(**kwargs)
