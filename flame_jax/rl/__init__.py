"""Step-wise GRPO core: episodes, potential-based shaping, step-group advantages, losses.

Host side (pure Python / NumPy): ``parse_episode``, ``pad_episodes``, ``token_step_ids``,
``segment_tokens``. Device side (pure jax functions; jit / vmap / grad): ``potentials``,
``shaped_rewards``, ``group_advantages``, ``step_group_advantages``, ``token_advantages``,
``grpo_loss``, and the ``make_*`` factories over frozen configs.

References:
    FLAME, arXiv 2505.20218 (2025).
"""

from flame_jax.rl._advantages import group_advantages, step_group_advantages, token_advantages
from flame_jax.rl._config import (
    AdvantageConfig,
    Advantages,
    LossConfig,
    ShapingConfig,
    make_advantage_fn,
    make_grpo_loss,
    make_reward_fn,
)
from flame_jax.rl._episode import (
    Action,
    ActionKind,
    DrugVocabulary,
    Episode,
    EpisodeArrays,
    normalize_drug_name,
    pad_episodes,
    parse_episode,
    split_steps,
)
from flame_jax.rl._grid import GridOutput, GridStats, ShapingGrid, make_grid_fn, shaping_grid
from flame_jax.rl._losses import LossAux, aggregation_weight, grpo_loss, kl_divergence
from flame_jax.rl._segmentation import segment_tokens, token_step_ids
from flame_jax.rl._shaping import (
    Potentials,
    ShapedRewards,
    TrajectoryCounts,
    potentials,
    shaped_rewards,
    trajectory_counts,
)

__all__ = [
    "Action",
    "ActionKind",
    "AdvantageConfig",
    "Advantages",
    "DrugVocabulary",
    "Episode",
    "EpisodeArrays",
    "GridOutput",
    "GridStats",
    "LossAux",
    "LossConfig",
    "Potentials",
    "ShapedRewards",
    "ShapingConfig",
    "ShapingGrid",
    "TrajectoryCounts",
    "aggregation_weight",
    "group_advantages",
    "grpo_loss",
    "kl_divergence",
    "make_advantage_fn",
    "make_grid_fn",
    "make_grpo_loss",
    "make_reward_fn",
    "normalize_drug_name",
    "pad_episodes",
    "parse_episode",
    "potentials",
    "segment_tokens",
    "shaped_rewards",
    "shaping_grid",
    "split_steps",
    "step_group_advantages",
    "token_advantages",
    "token_step_ids",
    "trajectory_counts",
]
