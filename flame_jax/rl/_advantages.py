"""Device side: group-relative outcome advantages, step-group advantages, token advantages.

Normalisation ``norm`` of a set of rewards x_1..x_n (the valid entries of one group):

* ``"grpo"``:   (x_i - mean x) / max(std x, floor, relative_floor * max_j |x_j|), with std over
  the n entries with ``std_ddof`` (1: unbiased, as TRL/tunix; 0: population);
* ``"drgrpo"``: x_i - mean x (Dr.GRPO drops the std);
* ``"rloo"``:   x_i - mean_{j != i} x_j = n / (n - 1) (x_i - mean x) (0 when n < 2).

Numerics. The mean is taken after shifting by the group's largest valid value, so equal rewards
give centred values of exactly 0 (and so advantages of exactly 0) even when the reward is not a
dyadic float (0.35 repeated). Rewards that differ only by rounding noise give a std of a few ulps;
the floor and the relative floor keep the division bounded (|A| <= deviation / floor). NaN or inf
rewards and masked entries are excluded from the statistics and get advantage 0.

References:
    Shao et al., "DeepSeekMath" (GRPO, process supervision), arXiv 2402.03300 (2024).
    Liu et al., "Understanding R1-Zero-Like Training: A Critical Perspective" (Dr.GRPO),
    arXiv 2503.20783 (2025).
    Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization" (RLOO), 2024.
    FLAME, arXiv 2505.20218 (2025).
"""

from typing import Literal

import jax.numpy as jnp

from flame_jax.arraytypes import Array, Bool, Float, Int

__all__ = ["group_advantages", "step_group_advantages", "token_advantages"]

Estimator = Literal["grpo", "drgrpo", "rloo"]


def _normalise(
    x: Array,
    valid: Array,
    axes: tuple[int, ...],
    *,
    estimator: str,
    std_ddof: int,
    floor: float,
    relative_floor: float,
) -> Array:
    if estimator not in ("grpo", "drgrpo", "rloo"):
        raise ValueError(f"estimator must be 'grpo', 'drgrpo' or 'rloo', got {estimator!r}")
    if std_ddof not in (0, 1):
        raise ValueError(f"std_ddof must be 0 or 1, got {std_ddof}")
    valid = valid & jnp.isfinite(x)
    x = jnp.where(valid, x, 0.0)
    n = valid.sum(axes, keepdims=True).astype(x.dtype)
    shift = jnp.max(jnp.where(valid, x, -jnp.inf), axis=axes, keepdims=True)
    shift = jnp.where(n > 0, shift, 0.0)
    d = jnp.where(valid, x - shift, 0.0)
    mean = d.sum(axes, keepdims=True) / jnp.maximum(n, 1.0)
    centred = jnp.where(valid, d - mean, 0.0)
    if estimator == "drgrpo":
        out = centred
    elif estimator == "rloo":
        out = jnp.where(n > 1, centred * n / jnp.maximum(n - 1.0, 1.0), 0.0)
    else:
        var = (centred * centred).sum(axes, keepdims=True) / jnp.maximum(n - std_ddof, 1.0)
        scale = jnp.max(jnp.abs(x), axis=axes, keepdims=True)
        denom = jnp.maximum(jnp.sqrt(var), jnp.maximum(floor, relative_floor * scale))
        # A zero denominator only happens with floor = relative_floor = 0 on a constant group,
        # whose centred values are exactly 0.
        out = centred / jnp.where(denom > 0, denom, 1.0)
    return jnp.where(valid, out, 0.0)


def group_advantages(
    rewards: Float[Array, "batch group"],
    valid: Bool[Array, "batch group"] | None = None,
    *,
    estimator: Estimator = "grpo",
    std_ddof: int = 1,
    floor: float = 1e-4,
    relative_floor: float = 1e-5,
) -> Float[Array, "batch group"]:
    """Outcome advantages A_i = norm(R)_i within each group of completions of one prompt.

    ``"grpo"``: A_i = (R_i - mean_G R) / max(std_G R, floor, relative_floor * max_G |R|);
    ``"drgrpo"``: A_i = R_i - mean_G R; ``"rloo"``: A_i = R_i - mean_{j != i} R_j.

    Args:
        rewards: outcome rewards ``[batch, group]``; NaN / inf entries count as invalid.
        valid: optional ``[batch, group]`` mask of real completions.
        estimator: ``"grpo"``, ``"drgrpo"`` or ``"rloo"``.
        std_ddof: 1 for the unbiased std (TRL, tunix), 0 for the population std.
        floor: absolute lower bound on the std.
        relative_floor: lower bound on the std relative to the group's largest |R|.

    Returns:
        ``[batch, group]`` advantages, 0 for invalid entries and for groups of equal rewards.

    Examples:
        >>> import jax.numpy as jnp
        >>> group_advantages(jnp.array([[1.0, 0.0], [0.35, 0.35]])).tolist()
        [[0.7071067..., -0.7071067...], [0.0, 0.0]]

    References:
        GRPO, arXiv 2402.03300 (2024); Dr.GRPO, arXiv 2503.20783 (2025); RLOO, Ahmadian et al. 2024.
    """
    valid = jnp.ones(rewards.shape, bool) if valid is None else valid
    return _normalise(
        rewards,
        valid,
        (1,),
        estimator=estimator,
        std_ddof=std_ddof,
        floor=floor,
        relative_floor=relative_floor,
    )


def step_group_advantages(
    step_rewards: Float[Array, "batch group steps"],
    step_mask: Bool[Array, "batch group steps"],
    *,
    mode: Literal["marginal", "return_to_go"] = "marginal",
    estimator: Estimator = "grpo",
    std_ddof: int = 1,
    floor: float = 1e-4,
    relative_floor: float = 1e-5,
) -> Float[Array, "batch group steps"]:
    """Step advantages normalised over all valid steps of all completions of a group.

    r~_{i,t} = norm({r_{j,u} : j in group, u valid})_{i,t} (pooled, same estimators as
    ``group_advantages``); ``"marginal"`` returns r~_{i,t}, ``"return_to_go"`` returns
    sum_{u >= t} r~_{i,u} over the valid steps of completion i.

    Args:
        step_rewards: ``[batch, group, steps]`` shaped step rewards.
        step_mask: ``[batch, group, steps]`` real steps.
        mode: ``"marginal"`` (the per-step contribution) or ``"return_to_go"``.
        estimator: ``"grpo"``, ``"drgrpo"`` or ``"rloo"`` (pooled over the group's steps).
        std_ddof: 1 (unbiased) or 0 (population) std.
        floor: absolute lower bound on the pooled std.
        relative_floor: lower bound on the std relative to the pool's largest |r|.

    Returns:
        ``[batch, group, steps]``, 0 on masked steps.

    Examples:
        >>> import jax.numpy as jnp
        >>> r = jnp.array([[[1.0, 0.0], [0.0, 0.0]]])
        >>> m = jnp.array([[[True, True], [True, False]]])
        >>> step_group_advantages(r, m, estimator="drgrpo").tolist()
        [[[0.6666666..., -0.3333333...], [-0.3333333..., 0.0]]]

    References:
        FLAME, arXiv 2505.20218 (2025); DeepSeekMath process supervision, arXiv 2402.03300 (2024).
    """
    if mode not in ("marginal", "return_to_go"):
        raise ValueError(f"mode must be 'marginal' or 'return_to_go', got {mode!r}")
    adv = _normalise(
        step_rewards,
        step_mask,
        (1, 2),
        estimator=estimator,
        std_ddof=std_ddof,
        floor=floor,
        relative_floor=relative_floor,
    )
    if mode == "return_to_go":
        adv = jnp.where(step_mask, jnp.flip(jnp.cumsum(jnp.flip(adv, -1), -1), -1), 0.0)
    return adv


def token_advantages(
    outcome_advantages: Float[Array, "batch group"],
    step_advantages: Float[Array, "batch group steps"],
    token_steps: Int[Array, "batch group tokens"],
    step_mask: Bool[Array, "batch group steps"],
    *,
    step_weight: float = 0.5,
    mixing: Literal["convex", "additive"] = "convex",
) -> Float[Array, "batch group tokens"]:
    """Per-token advantages: mix the outcome advantage with the advantage of the token's step.

    For a token of step t of completion i: ``"convex"`` gives (1 - w) A_i + w r~_{i,t} (the
    original used w = 0.5), ``"additive"`` gives A_i + w r~_{i,t}. Tokens outside every step
    (id -1: after the last step, blank lines, EOS) or pointing at a masked step get A_i.

    Args:
        outcome_advantages: ``[batch, group]`` A_i.
        step_advantages: ``[batch, group, steps]`` r~_{i,t} (marginal or return-to-go).
        token_steps: ``[batch, group, tokens]`` step id per token, -1 for none.
        step_mask: ``[batch, group, steps]`` real steps.
        step_weight: w.
        mixing: ``"convex"`` or ``"additive"``.

    Returns:
        ``[batch, group, tokens]`` advantages (padding tokens get A_i; the loss masks them).

    Examples:
        >>> import jax.numpy as jnp
        >>> token_advantages(jnp.array([[1.0]]), jnp.array([[[3.0]]]), jnp.array([[[0, -1]]]),
        ...                  jnp.ones((1, 1, 1), bool)).tolist()
        [[[2.0, 1.0]]]

    References:
        FLAME, arXiv 2505.20218 (2025).
    """
    if mixing not in ("convex", "additive"):
        raise ValueError(f"mixing must be 'convex' or 'additive', got {mixing!r}")
    num_steps = step_advantages.shape[-1]
    in_range = (token_steps >= 0) & (token_steps < num_steps)
    idx = jnp.clip(token_steps, 0, max(num_steps - 1, 0))
    if num_steps == 0:
        return jnp.broadcast_to(outcome_advantages[..., None], token_steps.shape)
    r = jnp.take_along_axis(step_advantages, idx, axis=-1)
    live = in_range & jnp.take_along_axis(step_mask, idx, axis=-1)
    a = jnp.broadcast_to(outcome_advantages[..., None], token_steps.shape)
    mixed = (1.0 - step_weight) * a + step_weight * r if mixing == "convex" else a + step_weight * r
    return jnp.where(live, mixed, a)
