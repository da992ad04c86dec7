"""A real HTTP server on 127.0.0.1 for tests: recorded responses by path and query, else files.

`routes` maps a request target (path plus query string, e.g. `/api/v2/downloads/release_file/?release=7`)
to the bytes to answer; anything else is served from `root` (404 when absent). Every request target
is recorded in `seen`.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from types import TracebackType


class ReplayServer:
    def __init__(self, root: Path, routes: dict[str, bytes] | None = None) -> None:
        self.root = root
        self.routes = dict(routes or {})
        self.seen: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(outer.root), **kwargs)  # type: ignore[arg-type]

            def do_GET(self) -> None:
                outer.seen.append(self.path)
                body = outer.routes.get(self.path)
                if body is None:
                    super().do_GET()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ReplayServer:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections to it are refused at once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
