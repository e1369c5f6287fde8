"""Running the app with uvicorn: in the foreground (CLI) or in a background thread (tests)."""

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

__all__ = ["run_server", "serve_in_thread"]


def run_server(app, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serves ``app`` with uvicorn until interrupted (binds 127.0.0.1 unless told otherwise)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


@contextlib.contextmanager
def serve_in_thread(
    app,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    start_timeout_s: float = 20.0,
) -> Iterator[str]:
    """Serves ``app`` in a daemon thread for the duration of the ``with`` block.

    The socket is bound before uvicorn starts (port 0 picks a free port, without a race), and
    the block receives the API root, e.g. ``http://127.0.0.1:54321/v1``. On exit the server
    stops (in-flight requests get one second) and the thread is joined.

    Raises:
      RuntimeError: the server did not start within ``start_timeout_s``.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level=log_level, lifespan="off", timeout_graceful_shutdown=1)
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
