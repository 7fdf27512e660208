"""Run the app in a background thread on a loopback port (load benchmark, end-to-end tests)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class BackgroundServer:
    """`with BackgroundServer(app) as server: httpx.get(server.url + "/health")`."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        # Open event streams (a browser's queue connection) would hold a graceful shutdown for
        # as long as they live: after 2 s they are cut.
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="docteller-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server thread exited during startup (port in use?)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server did not start on {self.url} within {timeout_s:.0f}s")
            time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        # Streams cut at the end of the grace period are expected here: uvicorn would log each
        # one as an "Exception in ASGI application" traceback.
        error_log = logging.getLogger("uvicorn.error")
        level = error_log.level
        error_log.setLevel(logging.CRITICAL)
        try:
            self._server.should_exit = True
            self._thread.join(timeout_s)
        finally:
            error_log.setLevel(level)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
