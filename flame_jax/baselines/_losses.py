"""Losses of the baselines: BCE, multilabel margin, SafeDrug's DDI penalty and its controller.

All are per-visit (shape ``[batch]``) pure functions, so a masked mean over real visits is the
caller's one reduction and padding rows never count.

References:
    Shang et al., "GAMENet", AAAI 2019. Yang et al., "SafeDrug", IJCAI 2021 (Eq. 9-11).
"""

import jax
import jax.numpy as jnp

from flame_jax.arraytypes import Array, ArrayLike, Bool, Float, Num

__all__ = [
    "bce_loss",
    "controlled_loss",
    "ddi_controller_weight",
    "ddi_loss",
    "multilabel_margin_loss",
    "predicted_ddi_rate",
]


def bce_loss(
    logits: Float[ArrayLike, "batch meds"], target: Bool[ArrayLike, "batch meds"]
) -> Float[Array, " batch"]:
    """Binary cross-entropy with logits, averaged over drugs: one value per visit.

    ``-(1/M) sum_i [y_i log s(x_i) + (1 - y_i) log(1 - s(x_i))]`` with ``s`` the sigmoid,
    computed stably from the logits (``torch.binary_cross_entropy_with_logits`` per row).

    Examples:
        >>> import jax.numpy as jnp
        >>> [round(v, 4) for v in bce_loss(jnp.zeros((2, 3)), jnp.ones((2, 3), bool)).tolist()]
        [0.6931, 0.6931]
    """
    logits = jnp.asarray(logits, jnp.float32)
    y = jnp.asarray(target, jnp.float32)
    per_drug = jax.nn.softplus(logits) - y * logits
    return jnp.mean(per_drug, axis=-1)


def multilabel_margin_loss(
    scores: Float[ArrayLike, "batch meds"], target: Bool[ArrayLike, "batch meds"]
) -> Float[Array, " batch"]:
    """PyTorch's multilabel margin loss on multi-hot targets: one value per visit.

    ``(1/M) sum_{j in Y} sum_{i not in Y} max(0, 1 - (x_j - x_i))``; a visit with no true drug
    (or with every drug true) has loss 0. SafeDrug and GAMENet apply it to ``sigmoid(logits)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[0.9, 0.2, 0.4]])
        >>> [round(v, 4) for v in multilabel_margin_loss(x, x > 0.5).tolist()]  # (0.3 + 0.5) / 3
        [0.2667]
    """
    x = jnp.asarray(scores, jnp.float32)
    y = jnp.asarray(target, bool)
    hinge = jax.nn.relu(1.0 - (x[:, :, None] - x[:, None, :]))  # [b, j, i]
    pair = y[:, :, None] & ~y[:, None, :]
    return jnp.sum(jnp.where(pair, hinge, 0.0), axis=(1, 2)) / x.shape[-1]


def ddi_loss(
    probs: Float[ArrayLike, "batch meds"],
    ddi: Num[ArrayLike, "meds meds"],
    *,
    scale: float = 0.0005,
) -> Float[Array, " batch"]:
    """SafeDrug's DDI penalty per visit: ``scale * sum_{i,j} p_i p_j A_ij`` over ordered pairs.

    Args:
        probs: predicted probabilities ``p = sigmoid(logits)``, ``[batch, meds]``.
        ddi: the ``[meds, meds]`` interaction adjacency ``A`` (0/1, symmetric).
        scale: the constant in front (SafeDrug's code: 0.0005).

    Examples:
        >>> import jax.numpy as jnp
        >>> A = jnp.array([[0, 1], [1, 0]])
        >>> float(ddi_loss(jnp.array([[1.0, 0.5]]), A, scale=1.0)[0])  # 2 * 1 * 0.5
        1.0
    """
    p = jnp.asarray(probs, jnp.float32)
    a = jnp.asarray(ddi, jnp.float32)
    return scale * jnp.einsum("bi,ij,bj->b", p, a, p)


def predicted_ddi_rate(
    pred: Bool[ArrayLike, "batch meds"], ddi: Num[ArrayLike, "meds meds"]
) -> Float[Array, " batch"]:
    """Per-visit DDI rate of a predicted set: interacting unordered pairs over all pairs.

    0 when fewer than two drugs are predicted (as SafeDrug's ``ddi_rate_score``).

    Examples:
        >>> import jax.numpy as jnp
        >>> A = jnp.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])
        >>> rate = predicted_ddi_rate(jnp.array([[1, 1, 1], [1, 0, 0]], bool), A)
        >>> [round(v, 4) for v in rate.tolist()]
        [0.3333, 0.0]
    """
    x = jnp.asarray(pred, jnp.float32)
    a = (jnp.asarray(ddi) > 0).astype(jnp.float32)
    a = jnp.maximum(a, a.T) * (1.0 - jnp.eye(a.shape[0], dtype=jnp.float32))
    bad = 0.5 * jnp.einsum("bi,ij,bj->b", x, a, x)
    k = jnp.sum(x, axis=-1)
    pairs = 0.5 * k * (k - 1.0)
    return jnp.where(pairs > 0, bad / jnp.maximum(pairs, 1.0), 0.0)


def ddi_controller_weight(
    rate: Float[ArrayLike, " batch"], *, target: float, kp: float
) -> Float[Array, " batch"]:
    """SafeDrug's controller: beta = 1 if rate <= target else max(0, 1 + (target - rate) / K_p).

    The loss is ``beta * L_accuracy + (1 - beta) * L_DDI``: while the predicted DDI rate is
    above the target the DDI penalty takes over, proportionally to the excess. (SafeDrug's
    released code writes ``min(0, ...)``, which makes beta <= 0; the paper's ``max`` is used.)

    Examples:
        >>> import jax.numpy as jnp
        >>> w = ddi_controller_weight(jnp.array([0.0, 0.06, 0.085, 0.2]), target=0.06, kp=0.05)
        >>> [round(v, 4) for v in w.tolist()]
        [1.0, 1.0, 0.5, 0.0]
    """
    rate = jnp.asarray(rate, jnp.float32)
    return jnp.where(rate <= target, 1.0, jnp.maximum(0.0, 1.0 + (target - rate) / kp))


def controlled_loss(
    logits: Float[ArrayLike, "batch meds"],
    target: Bool[ArrayLike, "batch meds"],
    ddi: Num[ArrayLike, "meds meds"] | None,
    *,
    bce_weight: float,
    margin_weight: float,
    ddi_control: bool,
    target_ddi: float = 0.06,
    kp: float = 0.05,
    ddi_scale: float = 0.0005,
    threshold: float = 0.5,
) -> tuple[Float[Array, " batch"], Float[Array, " batch"]]:
    """Per-visit training loss of the baselines, and the controller weight beta per visit.

    ``L_acc = w_bce BCE(logits, y) + w_m margin(sigmoid(logits), y)``; without DDI control the
    loss is ``L_acc`` (beta = 1). With it (SafeDrug), each visit's DDI rate of its thresholded
    prediction (no gradient) sets beta by :func:`ddi_controller_weight`, and the loss is
    ``beta L_acc + (1 - beta) L_DDI`` with ``L_DDI`` from :func:`ddi_loss`.

    Examples:
        >>> import jax.numpy as jnp
        >>> logits = jnp.array([[3.0, 3.0, -3.0]])
        >>> y = jnp.array([[True, True, False]])
        >>> A = jnp.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])
        >>> loss, beta = controlled_loss(logits, y, A, bce_weight=0.95, margin_weight=0.05,
        ...                              ddi_control=True)
        >>> float(beta[0]), bool(loss[0] > 0)   # rate 1.0 > 0.06: only the DDI term is left
        (0.0, True)
    """
    probs = jax.nn.sigmoid(jnp.asarray(logits, jnp.float32))
    acc = bce_weight * bce_loss(logits, target)
    if margin_weight:
        acc = acc + margin_weight * multilabel_margin_loss(probs, target)
    if not ddi_control or ddi is None:
        return acc, jnp.ones_like(acc)
    rate = predicted_ddi_rate(jax.lax.stop_gradient(probs) >= threshold, ddi)
    beta = jax.lax.stop_gradient(ddi_controller_weight(rate, target=target_ddi, kp=kp))
    return beta * acc + (1.0 - beta) * ddi_loss(probs, ddi, scale=ddi_scale), beta
