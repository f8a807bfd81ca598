"""An app served by uvicorn in a background thread of the test process (the server and live-collection tests)."""

from __future__ import annotations

import socket
import threading
import time


class LiveServer:
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a background thread; ``url`` is its address."""

    def __init__(self, app, *, timeout: float = 60.0):
        import uvicorn

        self.timeout = timeout
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(self.timeout)
        self.sock.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers started in child processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
