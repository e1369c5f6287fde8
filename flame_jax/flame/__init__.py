"""The FLAME pipeline: prompts with entity slots, pi_cls, list-editing tasks, step-wise GRPO stages.

References:
    Fan et al., "Fine-grained List-wise Alignment for Generative Medication Recommendation"
    (FLAME), arXiv 2505.20218 (2025).
"""

from flame_jax.flame._cls import ClsData, cls_batch, cls_data, cls_loss, score_visits
from flame_jax.flame._demo import demo_checks, run_demo
from flame_jax.flame._edit_tasks import EditTask, ErrorProfile, error_profile, synthesize_edit_tasks
from flame_jax.flame._encode import (
    SLOT_TOKENS,
    Encoded,
    PaddedPrompts,
    PromptEncoder,
    bucket,
    pad_prompts,
    pad_right,
    visit_drug_refs,
)
from flame_jax.flame._evaluate import final_sets, greedy_edits, greedy_generator
from flame_jax.flame._grpo import banned_tokens, grpo_loss_fn, make_rollout, parse_completions
from flame_jax.flame._knowledge import (
    TABLE_NAMES,
    knowledge_tables,
    load_tables,
    save_tables,
    standardize,
)
from flame_jax.flame._loop import LoopConfig, run_loop
from flame_jax.flame._pipeline import (
    STAGES,
    BaselineStage,
    FlameConfig,
    GrpoStage,
    run_pipeline,
    save_tradeoff_plot,
)
from flame_jax.flame._policy import (
    FlamePolicy,
    PolicyConfig,
    build_policy,
    load_policy,
    resize_vocabulary,
    save_policy,
    to_knowledge_tables,
)
from flame_jax.flame._prompts import (
    PLACEHOLDERS,
    SLOT_KINDS,
    Prompt,
    PromptConfig,
    cls_target,
    list_target,
    previous_visit_rows,
    render_cls_prompt,
    render_list_prompt,
)
from flame_jax.flame._sft import ListExamples, list_examples, sft_batch, sft_loss

__all__ = [
    "PLACEHOLDERS",
    "SLOT_KINDS",
    "SLOT_TOKENS",
    "STAGES",
    "TABLE_NAMES",
    "BaselineStage",
    "ClsData",
    "EditTask",
    "Encoded",
    "ErrorProfile",
    "FlameConfig",
    "FlamePolicy",
    "GrpoStage",
    "ListExamples",
    "LoopConfig",
    "PaddedPrompts",
    "PolicyConfig",
    "Prompt",
    "PromptConfig",
    "PromptEncoder",
    "banned_tokens",
    "bucket",
    "build_policy",
    "cls_batch",
    "cls_data",
    "cls_loss",
    "cls_target",
    "demo_checks",
    "error_profile",
    "final_sets",
    "greedy_edits",
    "greedy_generator",
    "grpo_loss_fn",
    "knowledge_tables",
    "list_examples",
    "list_target",
    "load_policy",
    "load_tables",
    "make_rollout",
    "pad_prompts",
    "pad_right",
    "parse_completions",
    "previous_visit_rows",
    "render_cls_prompt",
    "render_list_prompt",
    "resize_vocabulary",
    "run_demo",
    "run_loop",
    "run_pipeline",
    "save_policy",
    "save_tables",
    "save_tradeoff_plot",
    "score_visits",
    "sft_batch",
    "sft_loss",
    "standardize",
    "synthesize_edit_tasks",
    "to_knowledge_tables",
    "visit_drug_refs",
]
