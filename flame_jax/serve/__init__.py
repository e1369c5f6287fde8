"""An OpenAI-compatible chat-completions server in front of a local recommender or policy."""

from flame_jax.serve._app import ChatBackend, create_app
from flame_jax.serve._backends import PolicyBackend, RecommenderBackend
from flame_jax.serve._runner import run_server, serve_in_thread

__all__ = [
    "ChatBackend",
    "PolicyBackend",
    "RecommenderBackend",
    "create_app",
    "run_server",
    "serve_in_thread",
]
