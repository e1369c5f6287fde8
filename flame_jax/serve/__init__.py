"""An OpenAI-compatible chat-completions server in front of a local recommender or policy.

Needs the ``[serve]`` extra (FastAPI, uvicorn, httpx): ``pip install 'flame-jax[serve]'``.
"""

from flame_jax._extras import missing_extra

try:
    from flame_jax.serve._app import ChatBackend, create_app
    from flame_jax.serve._backends import PolicyBackend, RecommenderBackend
    from flame_jax.serve._runner import run_server, serve_in_thread
except ModuleNotFoundError as error:  # a core-only install: say which extra to add
    extra = missing_extra(error)
    if extra is None:
        raise
    raise ImportError(
        f"flame_jax.serve needs the [{extra}] extra ({error}): pip install 'flame-jax[{extra}]'"
    ) from error

__all__ = [
    "ChatBackend",
    "PolicyBackend",
    "RecommenderBackend",
    "create_app",
    "run_server",
    "serve_in_thread",
]
