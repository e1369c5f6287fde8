"""The FLAME pipeline: prompts with entity slots, pi_cls, list-editing tasks, step-wise GRPO stages.

References:
    Fan et al., "Fine-grained List-wise Alignment for Generative Medication Recommendation"
    (FLAME), arXiv 2505.20218 (2025).
"""

from flame_jax.flame._edit_tasks import EditTask, ErrorProfile, error_profile, synthesize_edit_tasks
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

__all__ = [
    "PLACEHOLDERS",
    "SLOT_KINDS",
    "EditTask",
    "ErrorProfile",
    "Prompt",
    "PromptConfig",
    "cls_target",
    "error_profile",
    "list_target",
    "previous_visit_rows",
    "render_cls_prompt",
    "render_list_prompt",
    "synthesize_edit_tasks",
]
