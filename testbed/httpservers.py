"""Small HTTP servers on loopback addresses that stand in for workloads behind the gateway.

They run in threads, so they answer even while a test's event loop is busy, and report every request to
their owner (who decides the answer), so tests can say who asked what through which address.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class SeenRequest:
    """One request a server answered (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]


Respond = Callable[[SeenRequest], tuple[int, bytes]]
"""Decides (status, body) for a request; called in the server's thread."""


class LoopbackServer:
    """A threaded HTTP server on one address:port answering ``methods`` through ``respond``; use
    ``with`` or ``start()``/``stop()``."""

    def __init__(
        self, address: str, port: int, respond: Respond, *, methods: Sequence[str] = ("GET", "HEAD"), name: str = ""
    ) -> None:

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                request = SeenRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                status, body = respond(request)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        for method in methods:
            setattr(Handler, f"do_{method}", Handler._answer)
        self._httpd = ThreadingHTTPServer((address, port), Handler)
        self._httpd.daemon_threads = True
        self.address, self.port = address, int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=name or f"http-{address}:{self.port}",
            daemon=True,
        )

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the address:port (blocks for up to one poll interval)."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class BackendServer(LoopbackServer):
    """A workload behind a Backend: fixed bodies per path, else a default body; any common method.

    ``set_body`` also serves ACME key authorizations.
    """

    def __init__(self, address: str, port: int = 0, default_body: str | None = None) -> None:
        self.bodies: dict[str, bytes] = {}
        self.requests: list[SeenRequest] = []
        self.default_body = (default_body or f"backend {address}").encode()
        methods = ("GET", "HEAD", "POST", "PUT", "DELETE")
        super().__init__(address, port, self._respond, methods=methods, name=f"backend-{address}")

    def _respond(self, request: SeenRequest) -> tuple[int, bytes]:
        self.requests.append(request)
        return 200, self.bodies.get(request.path.split("?", 1)[0], self.default_body)

    def set_body(self, path: str, body: str | bytes) -> None:
        """Answer ``path`` (exact, query ignored) with ``body``."""
        self.bodies[path] = body.encode() if isinstance(body, str) else body
