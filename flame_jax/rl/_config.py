"""Frozen configs for step-wise GRPO and the ``make_*`` factories that close over them.

Hyperparameters become compile-time constants of the returned functions, which take only arrays.

References:
    FLAME, arXiv 2505.20218 (2025); GRPO, arXiv 2402.03300 (2024); Dr.GRPO, arXiv 2503.20783 (2025).
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax.numpy as jnp

from flame_jax.arraytypes import Array, Bool, Float, Int, Scalar
from flame_jax.rl._advantages import group_advantages, step_group_advantages, token_advantages
from flame_jax.rl._losses import LossAux, grpo_loss
from flame_jax.rl._shaping import ShapedRewards, potentials, shaped_rewards

__all__ = [
    "AdvantageConfig",
    "Advantages",
    "LossConfig",
    "ShapingConfig",
    "make_advantage_fn",
    "make_grpo_loss",
    "make_reward_fn",
]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShapingConfig:
    """Potential-based reward shaping: Phi = w_J Phi_J - lambda Phi_D + w_F Phi_F.

    Attributes:
        jaccard_weight: w_J.
        ddi_weight: lambda, the weight of the DDI pair rate (the safety-accuracy trade-off).
        refusal_weight: w_F, the weight of the invalid-step term.
        gamma: shaping discount in (0, 1].
        refusal: ``"potential"`` (Phi_F = -invalid steps so far; telescopes) or
            ``"running_fraction"`` (the original code's -c_t / t; replication only).

    Examples:
        >>> ShapingConfig.original().refusal
        'running_fraction'
        >>> ShapingConfig(gamma=0.0)
        Traceback (most recent call last):
        ...
        ValueError: gamma must be in (0, 1], got 0.0
    """

    jaccard_weight: float = 1.0
    ddi_weight: float = 0.0
    refusal_weight: float = 0.2
    gamma: float = 1.0
    refusal: Literal["potential", "running_fraction"] = "potential"

    def __post_init__(self) -> None:
        for name in ("jaccard_weight", "ddi_weight", "refusal_weight"):
            value = getattr(self, name)
            _check(math.isfinite(value), f"{name} must be finite, got {value}")
        _check(0.0 < self.gamma <= 1.0, f"gamma must be in (0, 1], got {self.gamma}")
        _check(
            self.refusal in ("potential", "running_fraction"),
            f"refusal must be 'potential' or 'running_fraction', got {self.refusal!r}",
        )

    @classmethod
    def paper(cls) -> "ShapingConfig":
        """The README run's weights (J 1, DDI 0, refusal 0.2) with the telescoping refusal term."""
        return cls(jaccard_weight=1.0, ddi_weight=0.0, refusal_weight=0.2)

    @classmethod
    def original(cls) -> "ShapingConfig":
        """Replicates the original code, including its running-fraction refusal term."""
        return cls(
            jaccard_weight=1.0, ddi_weight=0.0, refusal_weight=0.2, refusal="running_fraction"
        )

    @classmethod
    def safety(cls, ddi_weight: float = 0.5) -> "ShapingConfig":
        """Accuracy-safety trade-off: Phi = Phi_J - lambda Phi_D - 0.2 invalid."""
        return cls(jaccard_weight=1.0, ddi_weight=ddi_weight, refusal_weight=0.2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdvantageConfig:
    """Outcome and step-group advantages and how they mix into token advantages.

    Attributes:
        estimator: ``"grpo"`` (z-score), ``"drgrpo"`` (centre only) or ``"rloo"``.
        std_ddof: 1 (unbiased std, TRL / tunix) or 0 (population std).
        floor: absolute lower bound on the std.
        relative_floor: lower bound on the std relative to the group's largest |reward|.
        step_mode: ``"marginal"`` or ``"return_to_go"``.
        step_weight: w, the weight of the step advantage (0 gives outcome-only GRPO).
        mixing: ``"convex"``: (1 - w) A + w r~; ``"additive"``: A + w r~.

    Examples:
        >>> AdvantageConfig.outcome_only().step_weight
        0.0
    """

    estimator: Literal["grpo", "drgrpo", "rloo"] = "grpo"
    std_ddof: int = 1
    floor: float = 1e-4
    relative_floor: float = 1e-5
    step_mode: Literal["marginal", "return_to_go"] = "marginal"
    step_weight: float = 0.5
    mixing: Literal["convex", "additive"] = "convex"

    def __post_init__(self) -> None:
        _check(
            self.estimator in ("grpo", "drgrpo", "rloo"),
            f"estimator must be 'grpo', 'drgrpo' or 'rloo', got {self.estimator!r}",
        )
        _check(self.std_ddof in (0, 1), f"std_ddof must be 0 or 1, got {self.std_ddof}")
        _check(self.floor >= 0.0, f"floor must be >= 0, got {self.floor}")
        _check(
            self.relative_floor >= 0.0, f"relative_floor must be >= 0, got {self.relative_floor}"
        )
        _check(
            self.step_mode in ("marginal", "return_to_go"),
            f"step_mode must be 'marginal' or 'return_to_go', got {self.step_mode!r}",
        )
        _check(
            self.mixing in ("convex", "additive"),
            f"mixing must be 'convex' or 'additive', got {self.mixing!r}",
        )
        _check(
            math.isfinite(self.step_weight), f"step_weight must be finite, got {self.step_weight}"
        )
        if self.mixing == "convex":
            _check(
                0.0 <= self.step_weight <= 1.0,
                f"step_weight must be in [0, 1] for convex mixing, got {self.step_weight}",
            )

    @classmethod
    def paper(cls) -> "AdvantageConfig":
        """FLAME's setting: TRL's GRPO (unbiased std), marginal step advantages, w = 0.5."""
        return cls()

    @classmethod
    def outcome_only(cls) -> "AdvantageConfig":
        """Ordinary GRPO: the step advantages get weight 0."""
        return cls(step_weight=0.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossConfig:
    """The GRPO policy loss.

    Attributes:
        epsilon_low: lower clip range of the ratio.
        epsilon_high: upper clip range of the ratio.
        kl_coef: beta, the weight of the KL to the reference policy.
        kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
        aggregation: ``"token_mean"``, ``"sequence_mean_token_mean"``,
            ``"sequence_mean_token_sum"`` or ``"fixed_length"`` (Dr.GRPO).
        max_tokens: the constant of ``"fixed_length"`` (None: the padded token length).

    Examples:
        >>> LossConfig.drgrpo().aggregation
        'fixed_length'
    """

    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    kl_coef: float = 0.04
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    aggregation: Literal[
        "token_mean", "sequence_mean_token_mean", "sequence_mean_token_sum", "fixed_length"
    ] = "sequence_mean_token_mean"
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        _check(self.epsilon_low >= 0.0, f"epsilon_low must be >= 0, got {self.epsilon_low}")
        _check(self.epsilon_high >= 0.0, f"epsilon_high must be >= 0, got {self.epsilon_high}")
        _check(self.kl_coef >= 0.0, f"kl_coef must be >= 0, got {self.kl_coef}")
        _check(
            self.kl_estimator in ("k1", "k2", "k3"),
            f"kl_estimator must be 'k1', 'k2' or 'k3', got {self.kl_estimator!r}",
        )
        _check(
            self.aggregation
            in (
                "token_mean",
                "sequence_mean_token_mean",
                "sequence_mean_token_sum",
                "fixed_length",
            ),
            f"unknown aggregation {self.aggregation!r}",
        )
        _check(
            self.max_tokens is None or self.max_tokens > 0,
            f"max_tokens must be positive, got {self.max_tokens}",
        )

    @classmethod
    def paper(cls) -> "LossConfig":
        """TRL 0.15 defaults used by FLAME: beta 0.04, k3, clip 0.2, sequence-mean-token-mean."""
        return cls()

    @classmethod
    def drgrpo(cls, max_tokens: int | None = None) -> "LossConfig":
        """Dr.GRPO: no KL, fixed-length normalisation."""
        return cls(kl_coef=0.0, aggregation="fixed_length", max_tokens=max_tokens)


def make_reward_fn(config: ShapingConfig) -> Callable[..., ShapedRewards]:
    """Builds ``reward_fn(initial, truth, ddi, drug, delta, valid, mask) -> ShapedRewards``.

    Args:
        config: the shaping config.

    Returns:
        A pure function of the episode arrays (``[batch, meds]`` sets, ``[meds, meds]`` DDI,
        ``[batch, group, steps]`` step arrays) giving step rewards and outcome rewards.

    Examples:
        >>> import jax.numpy as jnp
        >>> fn = make_reward_fn(ShapingConfig.paper())
        >>> out = fn(jnp.array([[1, 0]], bool), jnp.array([[1, 1]], bool), jnp.zeros((2, 2), bool),
        ...          jnp.array([[[1, 0]]]), jnp.array([[[1, 0]]]), jnp.array([[[True, False]]]),
        ...          jnp.ones((1, 1, 2), bool))
        >>> [round(float(v), 4) for v in out.steps[0, 0]], round(float(out.outcome[0, 0]), 4)
        ([0.5, -0.2], 0.3)
    """

    def reward_fn(
        initial: Bool[Array, "batch meds"],
        truth: Bool[Array, "batch meds"],
        ddi: Bool[Array, "meds meds"],
        drug: Int[Array, "batch group steps"],
        delta: Int[Array, "batch group steps"],
        valid: Bool[Array, "batch group steps"],
        mask: Bool[Array, "batch group steps"],
    ) -> ShapedRewards:
        phi = potentials(initial, truth, ddi, drug, delta, valid, mask)
        return shaped_rewards(
            phi,
            mask,
            jaccard_weight=config.jaccard_weight,
            ddi_weight=config.ddi_weight,
            refusal_weight=config.refusal_weight,
            gamma=config.gamma,
            refusal=config.refusal,
        )

    return reward_fn


class Advantages(NamedTuple):
    """Outcome ``[batch, group]``, step ``[batch, group, steps]`` and token advantages."""

    outcome: Float[Array, "batch group"]
    steps: Float[Array, "batch group steps"]
    tokens: Float[Array, "batch group tokens"]


def make_advantage_fn(config: AdvantageConfig) -> Callable[..., Advantages]:
    """Builds ``advantage_fn(outcome_rewards, step_rewards, step_mask, token_steps)``.

    Args:
        config: the advantage config.

    Returns:
        A pure function giving ``Advantages``. A completion whose outcome reward is non-finite
        (NaN: unscorable) is not part of its group: it is left out of the outcome statistics and
        its steps out of the step pool (they count for nothing in the pooled mean and std), its
        outcome, step and token advantages are all exactly 0, and the other completions get
        the advantages of the group without it, in every mode and for every step weight.

    Examples:
        >>> import jax.numpy as jnp
        >>> fn = make_advantage_fn(AdvantageConfig.outcome_only())
        >>> adv = fn(jnp.array([[1.0, 0.0]]), jnp.array([[[1.0], [0.0]]]),
        ...          jnp.ones((1, 2, 1), bool), jnp.array([[[0, -1], [0, -1]]]))
        >>> adv.tokens.tolist()
        [[[0.7071067..., 0.7071067...], [-0.7071067..., -0.7071067...]]]
    """
    kwargs = {
        "estimator": config.estimator,
        "std_ddof": config.std_ddof,
        "floor": config.floor,
        "relative_floor": config.relative_floor,
    }

    def advantage_fn(
        outcome_rewards: Float[Array, "batch group"],
        step_rewards: Float[Array, "batch group steps"],
        step_mask: Bool[Array, "batch group steps"],
        token_steps: Int[Array, "batch group tokens"],
    ) -> Advantages:
        # An unscorable completion leaves the group entirely, its steps included.
        step_mask = step_mask & jnp.isfinite(outcome_rewards)[..., None]
        outcome = group_advantages(outcome_rewards, **kwargs)
        steps = step_group_advantages(step_rewards, step_mask, mode=config.step_mode, **kwargs)
        tokens = token_advantages(
            outcome,
            steps,
            token_steps,
            step_mask,
            step_weight=config.step_weight,
            mixing=config.mixing,
        )
        return Advantages(outcome, steps, tokens)

    return advantage_fn


def make_grpo_loss(config: LossConfig) -> Callable[..., tuple[Scalar, LossAux]]:
    """Builds ``loss_fn(logp, advantages, mask, old_logp=None, ref_logp=None) -> (loss, aux)``.

    Args:
        config: the loss config.

    Returns:
        The GRPO loss with the config's hyperparameters as compile-time constants.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> loss_fn = make_grpo_loss(LossConfig(kl_coef=0.0))
        >>> g = jax.grad(lambda p: loss_fn(p, jnp.ones((1, 1, 2)), jnp.ones((1, 1, 2), bool))[0])
        >>> g(jnp.zeros((1, 1, 2))).tolist()
        [[[-0.5, -0.5]]]
    """

    def loss_fn(
        logp: Float[Array, "batch group tokens"],
        advantages: Float[Array, "batch group tokens"],
        mask: Bool[Array, "batch group tokens"],
        old_logp: Float[Array, "batch group tokens"] | None = None,
        ref_logp: Float[Array, "batch group tokens"] | None = None,
    ) -> tuple[Scalar, LossAux]:
        return grpo_loss(
            logp,
            advantages,
            mask,
            old_logp,
            ref_logp,
            epsilon_low=config.epsilon_low,
            epsilon_high=config.epsilon_high,
            kl_coef=config.kl_coef,
            kl_estimator=config.kl_estimator,
            aggregation=config.aggregation,
            max_tokens=config.max_tokens,
        )

    return loss_fn
