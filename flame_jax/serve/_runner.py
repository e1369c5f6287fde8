"""Running the app with uvicorn: in the foreground (CLI) or in a background thread (tests).

Both run uvicorn's h11 protocol with one addition, a deadline for each request's headers:
uvicorn closes a connection that stays silent after a response (``keep_alive_timeout_s``) but
not one that sends a request's headers slowly or never, nor one that keeps sending a body that
was already answered (413, 408). Here every new connection and every finished response arm a
timer; when it fires and no request is being served, the connection is closed.
"""

import contextlib
import functools
import socket
import threading
import time
from collections.abc import Iterator

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["run_server", "serve_in_thread"]


class _HeaderDeadlineH11(H11Protocol):
    """uvicorn's h11 protocol; the next request's headers must arrive within a deadline."""

    def __init__(self, *args, header_timeout_s: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = None
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._deadline)

    def _deadline(self) -> None:
        self._header_timer = None
        serving = self.cycle is not None and not self.cycle.response_complete
        if serving or self.transport.is_closing():
            return  # headers arrived: the app's body deadline and the backend take over
        if self.conn.their_state is not h11.DONE:  # partial headers, or an unwanted body
            self.transport.close()


def _config(
    app,
    *,
    header_timeout_s: float,
    keep_alive_timeout_s: float,
    max_connections: int | None,
    max_header_bytes: int,
    **kwargs,
) -> uvicorn.Config:
    for name, value in (
        ("header_timeout_s", header_timeout_s),
        ("keep_alive_timeout_s", keep_alive_timeout_s),
    ):
        if not (isinstance(value, int | float) and 0 < value < float("inf")):
            raise ValueError(f"{name} must be > 0, got {value!r}")
    if max_connections is not None and max_connections < 1:
        raise ValueError(f"max_connections must be >= 1 or None, got {max_connections!r}")
    if max_header_bytes < 1024:
        raise ValueError(f"max_header_bytes must be >= 1024, got {max_header_bytes!r}")
    protocol = functools.partial(_HeaderDeadlineH11, header_timeout_s=float(header_timeout_s))
    return uvicorn.Config(
        app,
        http=protocol,
        timeout_keep_alive=keep_alive_timeout_s,
        limit_concurrency=max_connections,
        h11_max_incomplete_event_size=max_header_bytes,
        **kwargs,
    )


def run_server(
    app,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    header_timeout_s: float = 10.0,
    keep_alive_timeout_s: float = 5.0,
    max_connections: int | None = 256,
    max_header_bytes: int = 16 * 1024,
) -> None:
    """Serves ``app`` with uvicorn until interrupted (binds 127.0.0.1 unless told otherwise).

    Args:
      app: the ASGI app (:func:`flame_jax.serve.create_app`).
      host, port: where to listen.
      log_level: uvicorn's log level.
      header_timeout_s: a request's headers must arrive within this many seconds of the
        connection (or of the previous response), else the connection is closed.
      keep_alive_timeout_s: an idle connection is closed after this many seconds.
      max_connections: open connections (and running requests) beyond which uvicorn answers
        503 (None: no limit).
      max_header_bytes: largest request line plus headers (else 400 and closed).
    """
    config = _config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        header_timeout_s=header_timeout_s,
        keep_alive_timeout_s=keep_alive_timeout_s,
        max_connections=max_connections,
        max_header_bytes=max_header_bytes,
    )
    uvicorn.Server(config).run()


@contextlib.contextmanager
def serve_in_thread(
    app,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    start_timeout_s: float = 20.0,
    header_timeout_s: float = 10.0,
    keep_alive_timeout_s: float = 5.0,
    max_connections: int | None = 256,
    max_header_bytes: int = 16 * 1024,
) -> Iterator[str]:
    """Serves ``app`` in a daemon thread for the duration of the ``with`` block.

    The socket is bound before uvicorn starts (port 0 picks a free port, without a race), and
    the block receives the API root, e.g. ``http://127.0.0.1:54321/v1``. On exit the server
    stops (in-flight requests get one second) and the thread is joined. The limits are those
    of :func:`run_server`.

    Raises:
      RuntimeError: the server did not start within ``start_timeout_s``.
    """
    config = _config(
        app,
        log_level=log_level,
        lifespan="off",
        timeout_graceful_shutdown=1,
        header_timeout_s=header_timeout_s,
        keep_alive_timeout_s=keep_alive_timeout_s,
        max_connections=max_connections,
        max_header_bytes=max_header_bytes,
    )
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{bound}"
    )
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {host}:{bound} did not start")
            time.sleep(0.01)
        name = f"[{host}]" if ":" in host else host
        yield f"http://{name}:{bound}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
