"""An OpenAI-compatible chat-completions HTTP app (FastAPI) in front of any :class:`ChatBackend`.

Endpoints (the OpenAI schema, non-streaming):

* ``POST /v1/chat/completions``: ``{"model", "messages": [{"role", "content"}], "max_tokens",
  "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "n", "stream", ...}`` ->
  ``{"id", "object": "chat.completion", "created", "model", "choices": [{"index": 0,
  "message": {"role": "assistant", "content"}, "finish_reason": "stop"}], "usage"}``.
  ``top_p`` and ``top_k`` (an extension, 0: off) reach backends whose ``complete`` takes them
  (:class:`~flame_jax.serve.PolicyBackend`); other OpenAI fields (``stop``, ...) are accepted
  and ignored; ``n > 1`` and ``stream: true`` are refused with 400. Backends return text only,
  so ``finish_reason`` is always "stop" (also when ``max_tokens`` cut the completion) and
  ``usage`` counts whitespace-separated words, not tokens.
* ``GET /v1/models``: ``{"object": "list", "data": [{"id", "object": "model", "created",
  "owned_by": "flame-jax"}]}``.

Every error is an OpenAI-style JSON error ``{"error": {"message", "type", "param", "code"}}``
(``param``: the offending field path, e.g. ``messages.0.content``), checked in this order:

====== ===========================================================================================
status when
====== ===========================================================================================
401    a missing or wrong API key (when one is set), on every path
413    a body over ``max_request_bytes`` (Content-Length, or the bytes actually received)
408    the body did not arrive within ``body_timeout_s`` (the connection is then closed)
415    a Content-Type other than ``application/json`` (charset UTF-8 if given)
400    bytes that are not UTF-8; text that is not JSON; ``NaN`` / ``Infinity`` / ``1e999``;
       an integer of over 100 digits; nesting deeper than 32; a lone surrogate (``\\ud800``)
       in a string
422    a body outside the schema (types are strict: ``"0.5"`` is not a number; ``temperature``
       in [0, 2], ``top_p`` in [0, 1], ``top_k`` >= 0, ``seed`` a signed 64-bit integer,
       ``max_tokens`` in [1, ``max_tokens_limit``])
400    ``stream: true``, ``n > 1``, or the backend refused the request (its ValueError)
404    an unknown model, or an unknown path (405: a wrong method)
429    more than ``max_concurrency`` running plus ``max_queue`` waiting requests
500    any other fault (no internals in the message)
====== ===========================================================================================

Backends run in a worker thread, so a slow completion never blocks the event loop.
"""

import asyncio
import hmac
import inspect
import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from flame_jax.serve._body import RequestError, parse_json_body

__all__ = ["ChatBackend", "create_app"]

# Sampling options passed on to backends whose ``complete`` takes them as keywords.
SAMPLING_OPTIONS = ("top_p", "top_k")


@runtime_checkable
class ChatBackend(Protocol):
    """Anything that turns chat messages into one assistant message.

    ``messages`` are ``{"role": ..., "content": str}`` dicts (list-of-parts contents are joined
    to text before the call). A backend may also take ``top_p`` and ``top_k`` keywords; the app
    passes them when the client sets them. Raising ValueError answers 400 with its message;
    any other exception answers 500.
    """

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
    ) -> str: ...


def _error(
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    param: Any = None,
    *,
    close: bool = False,
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(
        body, status_code=status, headers={"Connection": "close"} if close else None
    )


class _Guard:
    """Pure ASGI middleware: API key on every request, then a bounded body read by a deadline."""

    def __init__(self, app, *, api_key: str | None, max_request_bytes: int, body_timeout_s: float):
        self.app = app
        self.api_key = api_key
        self.max_bytes = max_request_bytes
        self.body_timeout_s = body_timeout_s

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
        # Read the (bounded) body here, then replay it: a chunked upload cannot exceed the limit,
        # and a client that sends its body slowly (or never) is answered 408 and disconnected.
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
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
        except TimeoutError:
            late = _error(
                408,
                f"the request body did not arrive within {self.body_timeout_s:g} s",
                "invalid_request_error",
                "request_timeout",
                close=True,
            )
            return await late(scope, receive, send)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Part(_Request):
    type: str = "text"
    text: str = ""


class _Message(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part]


class _ChatRequest(_Request):
    model: str
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    top_k: int | None = Field(default=None, ge=0)
    # the OpenAI schema's range: a signed 64-bit integer
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    n: int = Field(default=1, ge=1)
    stream: bool = False


def _schema_error(e: ValidationError) -> RequestError:
    first = e.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(x) for x in first.get("loc", ())) or "body"
    return RequestError(422, f"{where}: {first.get('msg', 'invalid request')}", param=where)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    # list of parts [{"type": "text", "text": ...}, ...] (validated models); non-text parts drop
    return "".join(p.text for p in content if p.type == "text")


def _sampling_options(backend: ChatBackend) -> frozenset[str]:
    """The sampling options (``top_p``, ``top_k``) that ``backend.complete`` takes."""
    parameters = inspect.signature(backend.complete).parameters
    return frozenset(name for name in SAMPLING_OPTIONS if name in parameters)


def create_app(
    backend: "ChatBackend | Mapping[str, ChatBackend]",
    *,
    model: str = "flame-jax",
    api_key: str | None = None,
    max_request_bytes: int = 1_000_000,
    max_concurrency: int = 4,
    max_queue: int = 16,
    max_tokens_limit: int = 4096,
    body_timeout_s: float = 15.0,
):
    """Builds the FastAPI app (run it with uvicorn; see :func:`flame_jax.serve.run_server`).

    Args:
      backend: one backend (served as ``model``) or a mapping model name -> backend.
      model: the model name of a single backend.
      api_key: when set, every request must send ``Authorization: Bearer <key>`` (else 401).
      max_request_bytes: largest accepted request body (else 413).
      max_concurrency: completions computed at once.
      max_queue: further requests that wait for a slot; beyond that, 429.
      max_tokens_limit: largest accepted ``max_tokens`` (else 422).
      body_timeout_s: the whole body must arrive within this many seconds of the headers
        (else 408, and the connection is closed).

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
    if not (isinstance(body_timeout_s, int | float) and 0 < body_timeout_s < float("inf")):
        raise ValueError(f"create_app: body_timeout_s must be > 0, got {body_timeout_s!r}")
    options = {name: _sampling_options(b) for name, b in backends.items()}

    app = FastAPI(title="flame-jax", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())
    slots = asyncio.Semaphore(max_concurrency)
    state = {"in_flight": 0}

    @app.exception_handler(RequestError)
    async def client_error(request: Request, exc: RequestError):
        return _error(exc.status, exc.message, "invalid_request_error", exc.code, exc.param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            message, code = f"no route {request.url.path}", "not_found"
        elif exc.status_code == 405:
            message, code = f"{request.method} is not allowed here", None
        else:
            message, code = str(exc.detail), None
        return _error(exc.status_code, message, "invalid_request_error", code)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, exc: Exception):
        return _error(500, "internal server error", "server_error")

    @app.get("/v1/models")
    async def models():
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "flame-jax"}
            for name in backends
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        data = parse_json_body(await request.body(), request.headers.get("content-type"))
        try:
            req = _ChatRequest.model_validate(data)
        except ValidationError as e:
            raise _schema_error(e) from None
        for name in ("max_tokens", "max_completion_tokens"):
            value = getattr(req, name)
            if value is not None and value > max_tokens_limit:
                raise RequestError(
                    422,
                    f"{name}: Input should be less than or equal to {max_tokens_limit}",
                    param=name,
                )
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
        max_tokens = req.max_completion_tokens or req.max_tokens or min(512, max_tokens_limit)
        extra = {
            name: getattr(req, name)
            for name in options[req.model]
            if getattr(req, name) is not None
        }
        state["in_flight"] += 1
        try:
            async with slots:
                text = await run_in_threadpool(
                    chosen.complete,
                    messages,
                    max_tokens=max_tokens,
                    temperature=1.0 if req.temperature is None else req.temperature,
                    seed=req.seed,
                    **extra,
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

    app.add_middleware(
        _Guard,
        api_key=api_key,
        max_request_bytes=max_request_bytes,
        body_timeout_s=float(body_timeout_s),
    )
    return app
