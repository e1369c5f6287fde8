"""Training, prediction and evaluation of the baselines.

One jitted step (forward, loss, gradient, optax update; parameters and optimiser state donated)
runs over padded history batches; the host loop around it shuffles, logs, validates, checkpoints
and stops early. Everything is a function of the config's seed: the shuffle of epoch ``e`` and the
dropout key of step ``i`` are derived from it, so a resumed run continues exactly where a
straight run would be.
"""

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from flax import nnx

from flame_jax._io import write_bytes_atomic, write_json_atomic
from flame_jax._records import record_from_mapping, record_to_plain
from flame_jax.arraytypes import PRNGKeyArray
from flame_jax.baselines._checkpoint import (
    Progress,
    latest_epoch,
    restore_checkpoint,
    save_checkpoint,
)
from flame_jax.baselines._config import BaselineConfig
from flame_jax.baselines._history import HistoryBatch, iterate_history_batches
from flame_jax.baselines._losses import controlled_loss
from flame_jax.baselines._models import GraphContext, build_model, graph_context
from flame_jax.data import Dataset, bucket_size, cooccurrence_adjacency, load_dataset
from flame_jax.metrics import set_metrics

__all__ = [
    "TrainResult",
    "TrainedBaseline",
    "assert_train_only",
    "fit_context",
    "init_model",
    "load_run",
    "make_optimizer",
    "make_train_step",
    "predict",
    "train_baseline",
]

# Resuming may change how long training goes on; anything else must match the saved run.
_RESUMABLE_FIELDS = ("epochs", "patience")
_EVAL_BATCH = 256


class TrainResult(NamedTuple):
    """What :func:`train_baseline` did: epochs run, best validation Jaccard and its epoch."""

    run: Path
    epochs: int
    best_epoch: int
    best_jaccard: float
    stopped_early: bool
    history: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainedBaseline:
    """A model restored from a run, ready to predict: ``model(batch, context)``."""

    config: BaselineConfig
    model: nnx.Module
    context: GraphContext
    dataset: Dataset
    epoch: int


def assert_train_only(dataset: Dataset, rows: np.ndarray) -> None:
    """Raises AssertionError unless every row in ``rows`` is a train-split visit (no leakage)."""
    train = dataset.split_rows("train")
    outside = np.setdiff1d(np.asarray(rows, np.int64), train)
    if outside.size:
        raise AssertionError(
            f"{outside.size} fitting rows are outside the train split (first: {outside[:5]})"
        )


def fit_context(dataset: Dataset, config: BaselineConfig) -> GraphContext:
    """The model's graphs, with the EHR graph recounted on the train split only.

    ``dataset.ehr`` is documented to be train-only; recounting it here makes that a guarantee
    of this package rather than an assumption about the dataset's producer.
    """
    safedrug = config.model == "safedrug"
    context = graph_context(
        dataset, molecules=safedrug, substructures=safedrug and config.local_encoder == "brics"
    )
    train_rows = dataset.split_rows("train")
    ehr = cooccurrence_adjacency(dataset.visits.med, train_rows, dataset.num_meds)
    return context._replace(ehr=jnp.asarray(ehr, jnp.float32))


def init_model(
    dataset: Dataset, config: BaselineConfig, *, key: PRNGKeyArray
) -> tuple[nnx.Module, GraphContext]:
    """A freshly initialised model of ``config`` for ``dataset``, and its :func:`fit_context`."""
    context = fit_context(dataset, config)
    subs = None if context.substructures is None else int(context.substructures.shape[1])
    model = build_model(
        config,
        len(dataset.diag_vocab),
        len(dataset.proc_vocab),
        dataset.num_meds,
        key=key,
        num_substructures=subs,
    )
    return model, context


def make_optimizer(config: BaselineConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW."""
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(config.learning_rate, weight_decay=config.weight_decay),
    )


def make_train_step(
    graphdef: Any,
    config: BaselineConfig,
    optimizer: optax.GradientTransformation,
    *,
    jit: bool = True,
) -> Callable:
    """One training step ``(params, rest, opt_state, batch, context, key) -> ...``.

    Returns ``(params, opt_state, loss, beta)``: the masked mean loss over the batch's real
    visits and the mean DDI-controller weight. Jitted with ``params`` and ``opt_state``
    donated; ``jit=False`` gives the eager function (for benchmarks and debugging).
    """

    def loss_fn(params, rest, batch: HistoryBatch, context: GraphContext, key):
        model = nnx.merge(graphdef, params, rest)
        out = model(batch, context, key=key)
        per_visit, beta = controlled_loss(
            out.logits,
            batch.meds,
            context.ddi,
            bce_weight=config.bce_weight,
            margin_weight=config.margin_weight,
            ddi_control=config.ddi_control,
            target_ddi=config.target_ddi,
            kp=config.kp,
            ddi_scale=config.ddi_scale,
            threshold=config.threshold,
        )
        w = batch.mask.astype(jnp.float32)
        denom = jnp.maximum(jnp.sum(w), 1.0)
        return jnp.sum(per_visit * w) / denom, jnp.sum(beta * w) / denom

    def step(params, rest, opt_state, batch, context, key):
        (loss, beta), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, rest, batch, context, key
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, beta

    return jax.jit(step, donate_argnums=(0, 2)) if jit else step


def _make_predict(graphdef: Any) -> Callable:
    @jax.jit
    def predict_fn(params, rest, batch, context):
        out = nnx.merge(graphdef, params, rest)(batch, context)
        return jax.nn.sigmoid(out.logits), out.patient

    return predict_fn


def predict(
    model: nnx.Module,
    context: GraphContext,
    dataset: Dataset,
    rows: np.ndarray,
    *,
    batch_size: int = _EVAL_BATCH,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [rows, meds] and patient representations [rows, dim] (host float32)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return _predict_split(_make_predict(graphdef), params, rest, context, dataset, rows, batch_size)


def code_length(dataset: Dataset) -> int:
    """One padded code length for every batch of a dataset: fewer shapes, fewer compiles."""
    v = dataset.visits
    longest = max(int(v.diag.lengths().max(initial=0)), int(v.proc.lengths().max(initial=0)))
    return bucket_size(longest)


def _predict_split(predict_fn, params, rest, context, dataset, rows, batch_size):
    rows = np.asarray(rows, np.int64)
    probs, patient = [], []
    batch_size = bucket_size(max(1, min(batch_size, len(rows))))
    length = code_length(dataset)
    for batch in iterate_history_batches(dataset, rows, batch_size, code_length=length):
        p, h = predict_fn(params, rest, jax.tree.map(jnp.asarray, batch), context)
        n = int(batch.mask.sum())
        probs.append(np.asarray(p)[:n])
        patient.append(np.asarray(h)[:n])
    if not probs:
        return np.zeros((0, dataset.num_meds), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(probs), np.concatenate(patient)


def _val_metrics(probs: np.ndarray, dataset: Dataset, rows: np.ndarray, threshold: float):
    truth = dataset.visits.med.multi_hot(dataset.num_meds, rows)
    m = set_metrics(probs >= threshold, truth, scores=probs, ddi=dataset.ddi)
    return {k: v for k, v in m.as_dict().items() if k != "ddi_rate_visit"}


def _save_config(config: BaselineConfig, path: Path) -> None:
    text = yaml.safe_dump(record_to_plain(config), sort_keys=False)
    write_bytes_atomic(path, f"# {type(config).__name__}\n{text}".encode())


def _read_config(path: Path) -> BaselineConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot be read ({e.strerror})") from None
    return record_from_mapping(BaselineConfig, data, where=str(path))


def _plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flame_jax.plots import save_figure

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o")
    axes[0].set_title("training loss")
    for name in ("jaccard", "f1", "prauc"):
        values = [h["val"].get(name) for h in history]
        if all(v is not None for v in values):
            axes[1].plot(epochs, values, marker="o", label=name)
    axes[1].set_title("validation")
    axes[1].legend(fontsize=8)
    values = [h["val"].get("ddi_rate") for h in history]
    if all(v is not None for v in values):
        axes[2].plot(epochs, values, marker="o", label="DDI rate")
    axes[2].plot(epochs, [h["mean_beta"] for h in history], marker=".", label="mean beta")
    axes[2].set_title("safety")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(title, y=1.03)
    save_figure(fig, path)


def _prepare_run(
    out: Path, config: BaselineConfig, *, resume: bool, overwrite: bool
) -> BaselineConfig:
    if resume:
        saved_path = out / "config.yaml"
        if not saved_path.is_file():
            raise FileNotFoundError(f"{out}: no run to resume (config.yaml is missing)")
        saved = _read_config(saved_path)
        for field in dataclasses.fields(BaselineConfig):
            if field.name in _RESUMABLE_FIELDS:
                continue
            a, b = getattr(saved, field.name), getattr(config, field.name)
            if a != b:
                raise ValueError(f"{out}: cannot resume with {field.name}={b!r}; the run has {a!r}")
        return config
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out}: folder exists and is not empty (pass overwrite, or resume it)"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return config


def train_baseline(
    dataset: Dataset,
    config: BaselineConfig,
    out: str | os.PathLike,
    *,
    dataset_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Trains a baseline on the train split, validates every epoch, stops early, checkpoints.

    Writes into the run folder ``out``: ``config.yaml`` (the resolved config), ``run.json``
    (dataset, sizes), ``metrics.jsonl`` (one line per epoch: training loss, mean controller
    weight, validation Jaccard/precision/recall/F1/PRAUC/DDI/#Med, seconds), ``curves.png``, and
    ``checkpoints/last`` and ``checkpoints/best`` (Orbax). Only train-split visits are fitted;
    the validation split selects the epoch (early stopping on Jaccard).

    Args:
        dataset: the dataset.
        config: the run's config.
        out: the run folder.
        dataset_dir: where ``dataset`` was loaded from, recorded for ``baseline eval``.
        resume: continue the run in ``out`` from its last checkpoint (same config, except
            ``epochs`` and ``patience``).
        overwrite: replace a non-empty ``out`` (ignored when resuming).
        progress: show a progress bar per epoch.

    Returns:
        A :class:`TrainResult`.

    Raises:
        FileExistsError: ``out`` is not empty and neither ``resume`` nor ``overwrite`` is set.
        ValueError: the config differs from the resumed run's, or a split is empty.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    train_rows = dataset.split_rows("train")
    val_rows = dataset.split_rows("val")
    if not len(train_rows) or not len(val_rows):
        raise ValueError(
            f"dataset {dataset.name!r}: training needs train and val visits, got "
            f"{len(train_rows)} and {len(val_rows)}"
        )
    assert_train_only(dataset, train_rows)
    config = _prepare_run(out, config, resume=resume, overwrite=overwrite)

    root = jax.random.key(config.seed)
    init_key, train_key = jax.random.split(root)
    model, context = init_model(dataset, config, key=init_key)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = make_optimizer(config)
    opt_state = optimizer.init(params)
    state = Progress(epoch=0, best_jaccard=-1.0, best_epoch=0, bad_epochs=0)
    history: list[dict[str, Any]] = []
    metrics_path = out / "metrics.jsonl"
    if resume and latest_epoch(out / "checkpoints" / "last") is not None:
        params, opt_state, state = restore_checkpoint(
            out / "checkpoints" / "last", params, opt_state
        )
        if metrics_path.is_file():
            lines = metrics_path.read_text(encoding="utf-8").splitlines()
            history = [json.loads(line) for line in lines if line.strip()][: state.epoch]
    _save_config(config, out / "config.yaml")
    write_json_atomic(
        out / "run.json",
        {
            "model": config.model,
            "dataset": dataset.name,
            "dataset_dir": None if dataset_dir is None else str(Path(dataset_dir).absolute()),
            "num_diag": len(dataset.diag_vocab),
            "num_proc": len(dataset.proc_vocab),
            "num_meds": dataset.num_meds,
            "fit_split": "train",
            "fit_visits": len(train_rows),
            "val_visits": len(val_rows),
            "parameters": int(sum(np.size(x) for x in jax.tree.leaves(params))),
        },
    )

    step = make_train_step(graphdef, config, optimizer)
    predict_fn = _make_predict(graphdef)
    stopped_early = state.bad_epochs >= config.patience
    steps_per_epoch = -(-len(train_rows) // config.batch_size)
    codes = code_length(dataset)
    epoch = state.epoch
    while epoch < config.epochs and not stopped_early:
        start = time.perf_counter()
        epoch_key = jax.random.fold_in(train_key, epoch)
        batches = iterate_history_batches(
            dataset,
            train_rows,
            config.batch_size,
            seed=config.seed * 100_003 + epoch,
            code_length=codes,
        )
        losses, betas = [], []
        bar = tqdm(
            batches,
            total=steps_per_epoch,
            desc=f"{config.model} epoch {epoch + 1}/{config.epochs}",
            disable=not progress,
            leave=False,
        )
        for i, batch in enumerate(bar):
            params, opt_state, loss, beta = step(
                params,
                rest,
                opt_state,
                jax.tree.map(jnp.asarray, batch),
                context,
                jax.random.fold_in(epoch_key, i),
            )
            losses.append(loss)
            betas.append(beta)
        bar.close()
        epoch += 1
        probs, _ = _predict_split(predict_fn, params, rest, context, dataset, val_rows, _EVAL_BATCH)
        val = _val_metrics(probs, dataset, val_rows, config.threshold)
        improved = val["jaccard"] > state.best_jaccard
        state = Progress(
            epoch=epoch,
            best_jaccard=max(val["jaccard"], state.best_jaccard),
            best_epoch=epoch if improved else state.best_epoch,
            bad_epochs=0 if improved else state.bad_epochs + 1,
        )
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(jax.device_get(losses))),
            "mean_beta": float(np.mean(jax.device_get(betas))),
            "val": val,
            "best_epoch": state.best_epoch,
            "seconds": round(time.perf_counter() - start, 3),
        }
        history.append(record)
        if improved:
            save_checkpoint(out / "checkpoints" / "best", params, opt_state, state)
        save_checkpoint(out / "checkpoints" / "last", params, opt_state, state)
        text = "".join(json.dumps(h, sort_keys=True) + "\n" for h in history)
        write_bytes_atomic(metrics_path, text.encode())
        _plot_curves(history, out / "curves.png", f"{config.model} on {dataset.name}")
        if progress:
            v = val
            tqdm.write(
                f"{config.model} epoch {epoch}: loss {record['train_loss']:.4f}  val Jaccard "
                f"{v['jaccard']:.4f}  F1 {v['f1']:.4f}  PRAUC {v['prauc']:.4f}  DDI "
                f"{'n/a' if v['ddi_rate'] is None else format(v['ddi_rate'], '.4f')}  "
                f"#Med {v['num_meds']:.2f}"
            )
        stopped_early = state.bad_epochs >= config.patience
    return TrainResult(
        run=out,
        epochs=epoch,
        best_epoch=state.best_epoch,
        best_jaccard=state.best_jaccard,
        stopped_early=stopped_early,
        history=history,
    )


def load_run(
    run: str | os.PathLike,
    *,
    dataset: Dataset | None = None,
    checkpoint: str = "best",
) -> TrainedBaseline:
    """Restores a run's model (``checkpoint`` ``"best"`` or ``"last"``) and its dataset.

    Args:
        run: the run folder written by :func:`train_baseline`.
        dataset: the dataset (loaded from the path in ``run.json`` when None).
        checkpoint: which checkpoint to restore.

    Raises:
        FileNotFoundError: the run folder, its config or the checkpoint is missing.
        ValueError: ``checkpoint`` is not "best" or "last", or the dataset does not fit.
    """
    run = Path(run)
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    config = _read_config(run / "config.yaml")
    try:
        info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    except OSError as e:
        raise FileNotFoundError(f"{run / 'run.json'}: cannot be read ({e.strerror})") from None
    if dataset is None:
        if not info.get("dataset_dir"):
            raise ValueError(f"{run}/run.json: no dataset_dir recorded; give the dataset")
        dataset = load_dataset(info["dataset_dir"])
    sizes = (len(dataset.diag_vocab), len(dataset.proc_vocab), dataset.num_meds)
    if sizes != (info["num_diag"], info["num_proc"], info["num_meds"]):
        raise ValueError(
            f"{run}: the dataset's vocabularies (diag, proc, meds) = {sizes} differ from the "
            f"run's ({info['num_diag']}, {info['num_proc']}, {info['num_meds']})"
        )
    init_key = jax.random.split(jax.random.key(config.seed))[0]
    model, context = init_model(dataset, config, key=init_key)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = make_optimizer(config).init(params)
    params, _, state = restore_checkpoint(run / "checkpoints" / checkpoint, params, opt_state)
    model = nnx.merge(graphdef, params, rest)
    return TrainedBaseline(
        config=config,
        model=model,
        context=context,
        dataset=dataset,
        epoch=state.epoch,
    )
