"""A loopback TCP proxy that cuts connections halfway through a large upload: a push interrupted
by the network, for real, between the Docker daemon (or any client) and a real registry."""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType


class CuttingProxy:
    """Forward 127.0.0.1:<port> to ``upstream``; reset a connection once its client has sent more
    than ``cut_after`` bytes, at most ``cuts`` times (None: every time, until ``heal()``)."""

    def __init__(self, upstream: str, cut_after: int, cuts: int | None = 1) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.cut_after = cut_after
        self.remaining = cuts
        self.cut = 0
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._closed = False

    def heal(self) -> None:
        with self._lock:
            self.remaining = 0

    def _should_cut(self) -> bool:
        with self._lock:
            if self.remaining is not None and self.remaining <= 0:
                return False
            if self.remaining is not None:
                self.remaining -= 1
            self.cut += 1
            return True

    def _serve(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counting: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                sent += len(data)
                if counting and sent > self.cut_after and self._should_cut():
                    for s in (src, dst):  # RST, not FIN: the peer sees a connection reset mid-body
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        s.close()
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> CuttingProxy:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._closed = True
        self._server.close()
