"""A strict, bounded JSON request-body parser whose errors are HTTP client errors.

Python's ``json`` accepts what a JSON API must refuse: ``NaN`` / ``Infinity`` (and ``1e999``,
which parses to infinity), lone UTF-16 surrogates written as ``\\ud800`` escapes (a ``str`` that
no tokenizer or encoder accepts), integers of thousands of digits (``int()`` refuses them with a
ValueError) and nesting deep enough to exhaust the interpreter's recursion limit.
:func:`parse_json_body` refuses each with a :class:`RequestError` that names the offending field
path, and checks the content type and the encoding first.
"""

import json
from typing import Any

__all__ = ["MAX_DEPTH", "RequestError", "parse_json_body"]

MAX_DEPTH = 32  # nesting levels; a chat request needs 5
MAX_INT_DIGITS = 100


class RequestError(Exception):
    """A client error: the HTTP status, a message, the field path (``param``) and a code."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def _invalid(detail: str) -> RequestError:
    return RequestError(400, f"the request body is not valid JSON: {detail}", code="invalid_json")


def _constant(name: str) -> Any:
    raise _invalid(f"{name} is not a JSON number (numbers must be finite)")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _invalid(f"{text[:40]} is not a finite number")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _invalid(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _check_content_type(content_type: str | None) -> None:
    if content_type is None:  # clients that send no type get the JSON they meant
        return
    media, *params = (part.strip() for part in content_type.split(";"))
    if media.lower() != "application/json":
        raise RequestError(
            415,
            f"the content type must be application/json, got {media[:60]!r}",
            code="unsupported_media_type",
        )
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise RequestError(
                415,
                f"the request body must be UTF-8 JSON, got charset {value.strip()[:40]!r}",
                code="unsupported_media_type",
            )


def _check_tree(value: Any, max_depth: int) -> None:
    """Iteratively: no level deeper than ``max_depth``, no string (or key) a lone surrogate."""
    stack = [(value, (), 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > max_depth:
                raise _invalid(f"nested deeper than {max_depth} levels")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if isinstance(key, str):
                    _check_text(key, path)
                stack.append((child, (*path, key), depth + 1))
        elif isinstance(node, str):
            _check_text(node, path)


def _check_text(text: str, path: tuple) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        where = ".".join(str(p) for p in path) or None
        raise RequestError(
            400,
            f"{where or 'body'}: a lone UTF-16 surrogate (\\u{ord(text[e.start]):04x}) at "
            f"character {e.start} is not text",
            param=where,
            code="invalid_text",
        ) from None


def parse_json_body(
    raw: bytes, content_type: str | None = None, *, max_depth: int = MAX_DEPTH
) -> Any:
    """Parses a request body: JSON text in UTF-8, finite numbers, real text, bounded nesting.

    Args:
      raw: the body bytes.
      content_type: the Content-Type header (None: assumed JSON); anything but
        ``application/json`` (charset UTF-8 if given) is refused with 415.
      max_depth: deepest nesting of objects and arrays (the top level is 1).

    Returns:
      The parsed value.

    Raises:
      RequestError: 415 for another content type; 400 for bytes that are not UTF-8, text that is
        not JSON, ``NaN`` / ``Infinity`` / an overflowing number, an integer of more than 100
        digits, nesting deeper than ``max_depth``, or a string holding a lone surrogate (its
        field path in ``param``, e.g. ``messages.0.content``).

    Examples:
      >>> parse_json_body(b'{"a": [1, 2.5, "x"]}', "application/json; charset=utf-8")
      {'a': [1, 2.5, 'x']}
      >>> try:
      ...     parse_json_body(b'{"messages": [{"content": "\\\\ud800"}]}')
      ... except RequestError as e:
      ...     print(e.status, e.param)
      400 messages.0.content
    """
    _check_content_type(content_type)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(
            400, f"the request body is not valid UTF-8 (byte {e.start})", code="invalid_encoding"
        ) from None
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except json.JSONDecodeError as e:
        raise _invalid(f"{e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise _invalid(f"nested deeper than {max_depth} levels") from None
    _check_tree(value, max_depth)
    return value
