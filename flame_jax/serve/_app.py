"""An OpenAI-compatible chat-completions HTTP app (FastAPI) in front of any :class:`ChatBackend`.

Endpoints (the OpenAI schema, non-streaming):

* ``POST /v1/chat/completions``: ``{"model", "messages": [{"role", "content"}], "max_tokens",
  "max_completion_tokens", "temperature", "seed", "n", "stream", ...}`` ->
  ``{"id", "object": "chat.completion", "created", "model", "choices": [{"index": 0,
  "message": {"role": "assistant", "content"}, "finish_reason": "stop"}], "usage"}``. Other
  OpenAI fields (``top_p``, ``stop``, ...) are accepted and ignored; ``n > 1`` and
  ``stream: true`` are refused with 400. Backends return text only, so ``finish_reason`` is
  always "stop" (also when ``max_tokens`` cut the completion) and ``usage`` counts
  whitespace-separated words, not tokens.
* ``GET /v1/models``: ``{"object": "list", "data": [{"id", "object": "model", "created",
  "owned_by": "flame-jax"}]}``.

Guards, all answered with an OpenAI-style JSON error ``{"error": {"message", "type", "param",
"code"}}``: a missing or wrong API key (when one is set) is 401 on every path; a body over
``max_request_bytes`` is 413 (checked on Content-Length and on the bytes actually received);
malformed JSON is 400 and a body that does not fit the schema is 422; an unknown model is 404;
more than ``max_concurrency`` running plus ``max_queue`` waiting requests is 429. Backends run in
a worker thread, so a slow completion never blocks the event loop.
"""

import asyncio
import hmac
import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["ChatBackend", "create_app"]


@runtime_checkable
class ChatBackend(Protocol):
    """Anything that turns chat messages into one assistant message.

    ``messages`` are ``{"role": ..., "content": str}`` dicts (list-of-parts contents are joined
    to text before the call). Raising ValueError answers 400 with its message; any other
    exception answers 500.
    """

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
    ) -> str: ...


def _error(status: int, message: str, kind: str, code: str | None = None, param: Any = None):
    from fastapi.responses import JSONResponse

    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


class _Guard:
    """Pure ASGI middleware: API key on every request, then a bounded request body."""

    def __init__(self, app, *, api_key: str | None, max_request_bytes: int):
        self.app = app
        self.api_key = api_key
        self.max_bytes = max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key is not None:
            auth = headers.get("authorization", "")
            given = auth[7:] if auth[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                response = _error(
                    401, "missing or invalid API key", "invalid_request_error", "invalid_api_key"
                )
                return await response(scope, receive, send)
        too_large = _error(
            413,
            f"request body larger than {self.max_bytes} bytes",
            "invalid_request_error",
            "request_too_large",
        )
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await too_large(scope, receive, send)
        # Read the (bounded) body here, then replay it: a chunked upload cannot exceed the limit.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await too_large(scope, receive, send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    # list of parts [{"type": "text", "text": ...}, ...] (validated models); non-text parts drop
    return "".join(getattr(p, "text", "") for p in content if getattr(p, "type", "") == "text")


def create_app(
    backend: "ChatBackend | Mapping[str, ChatBackend]",
    *,
    model: str = "flame-jax",
    api_key: str | None = None,
    max_request_bytes: int = 1_000_000,
    max_concurrency: int = 4,
    max_queue: int = 16,
    max_tokens_limit: int = 4096,
):
    """Builds the FastAPI app (run it with uvicorn; see :func:`flame_jax.serve.run_server`).

    Args:
      backend: one backend (served as ``model``) or a mapping model name -> backend.
      model: the model name of a single backend.
      api_key: when set, every request must send ``Authorization: Bearer <api_key>`` (else 401).
      max_request_bytes: largest accepted request body (else 413).
      max_concurrency: completions computed at once.
      max_queue: further requests that wait for a slot; beyond that, 429.
      max_tokens_limit: largest accepted ``max_tokens`` (else 422).

    Returns:
      A FastAPI application.

    Examples:
      >>> class Echo:
      ...     def complete(self, messages, *, max_tokens, temperature, seed):
      ...         return messages[-1]["content"]
      >>> app = create_app(Echo(), model="echo", api_key="k")
      >>> sorted(r.path for r in app.routes if r.path.startswith("/v1"))
      ['/v1/chat/completions', '/v1/models']
    """
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from pydantic import BaseModel, ConfigDict, Field

    backends = dict(backend) if isinstance(backend, Mapping) else {model: backend}
    if not backends:
        raise ValueError("create_app: no backend")
    for name, b in backends.items():
        if not isinstance(b, ChatBackend):
            raise ValueError(f"create_app: backend {name!r} has no complete(messages, ...) method")
    for name, value in (
        ("max_request_bytes", max_request_bytes),
        ("max_concurrency", max_concurrency),
        ("max_tokens_limit", max_tokens_limit),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"create_app: {name} must be an integer >= 1, got {value!r}")
    if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
        raise ValueError(f"create_app: max_queue must be an integer >= 0, got {max_queue!r}")

    class Part(BaseModel):
        model_config = ConfigDict(extra="ignore")
        type: str = "text"
        text: str = ""

    class Message(BaseModel):
        model_config = ConfigDict(extra="ignore")
        role: Literal["system", "developer", "user", "assistant", "tool"]
        content: str | list[Part]

    class ChatRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")
        model: str
        messages: list[Message] = Field(min_length=1)
        max_tokens: int | None = Field(default=None, ge=1, le=max_tokens_limit)
        max_completion_tokens: int | None = Field(default=None, ge=1, le=max_tokens_limit)
        temperature: float = Field(default=1.0, ge=0.0, le=2.0)
        seed: int | None = None
        n: int = Field(default=1, ge=1)
        stream: bool = False

    app = FastAPI(title="flame-jax", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())
    slots = asyncio.Semaphore(max_concurrency)
    state = {"in_flight": 0}

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "the request body is not valid JSON", "invalid_request_error")
        first = errors[0] if errors else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "body"
        return _error(
            422,
            f"{where}: {first.get('msg', 'invalid request')}",
            "invalid_request_error",
            param=where,
        )

    @app.get("/v1/models")
    async def models():
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "flame-jax"}
            for name in backends
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        if req.stream:
            return _error(400, "streaming is not supported", "invalid_request_error", "stream")
        if req.n != 1:
            return _error(400, "only n = 1 is supported", "invalid_request_error", param="n")
        chosen = backends.get(req.model)
        if chosen is None:
            return _error(
                404,
                f"model {req.model!r} is not served here (served: {', '.join(backends)})",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        if state["in_flight"] >= max_concurrency + max_queue:
            response = _error(429, "too many requests in flight", "rate_limit_error")
            response.headers["Retry-After"] = "1"
            return response
        messages = [{"role": m.role, "content": _content_text(m.content)} for m in req.messages]
        max_tokens = req.max_completion_tokens or req.max_tokens or 512
        state["in_flight"] += 1
        try:
            async with slots:
                text = await run_in_threadpool(
                    chosen.complete,
                    messages,
                    max_tokens=max_tokens,
                    temperature=req.temperature,
                    seed=req.seed,
                )
        except ValueError as e:
            return _error(400, str(e), "invalid_request_error")
        except Exception as e:
            return _error(500, f"the backend failed: {type(e).__name__}", "server_error")
        finally:
            state["in_flight"] -= 1
        prompt_words = sum(len(m["content"].split()) for m in messages)
        completion_words = len(text.split())
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            # Backends without a tokenizer count whitespace-separated words.
            "usage": {
                "prompt_tokens": prompt_words,
                "completion_tokens": completion_words,
                "total_tokens": prompt_words + completion_words,
            },
        }

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception):
        return _error(404, f"no route {request.url.path}", "invalid_request_error", "not_found")

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: Exception):
        return _error(405, f"{request.method} is not allowed here", "invalid_request_error")

    app.add_middleware(_Guard, api_key=api_key, max_request_bytes=max_request_bytes)
    return app
