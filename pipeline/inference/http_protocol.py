"""uvicorn's HTTP/1.1 protocol (h11) with the guards it lacks: a deadline and a size limit for a request's
headers, and JSON for the errors it answers itself.

uvicorn times out an idle connection only after a response. A client that connects and sends nothing, or
trickles its headers a byte at a time, or speaks TLS to a plain-HTTP port, would hold its connection for ever;
here it gets a 408 (or 400) JSON answer and is closed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol

CLIENT_SECONDS = 10.0  # default time a client has for a request's headers, and again for its body
MAX_HEADER_BYTES = 16 * 1024  # request line and headers
TIMEOUT_VARIABLE = "MNIST_SERVE_TIMEOUT"  # set by `serve --timeout`, read in every worker process


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode() + body


class GuardedH11Protocol(H11Protocol):
    """H11Protocol whose connections must deliver each request's headers within the client timeout."""

    _header_timer: asyncio.TimerHandle | None = None
    _head = b""  # what has come of the next request's headers, up to MAX_HEADER_BYTES
    _in_headers = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # asyncio sets TCP_NODELAY only on sockets made with proto=IPPROTO_TCP, and uvicorn's bound socket has
        # proto 0: without it, a keep-alive answer written in two parts waits 40 ms for the client's delayed ACK
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.header_seconds = float(os.environ.get(TIMEOUT_VARIABLE, CLIENT_SECONDS))
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._head = (self._head + data)[:MAX_HEADER_BYTES + 4]
            if b"\r\n\r\n" in self._head:
                self._in_headers = False
            elif len(self._head) > MAX_HEADER_BYTES:
                self._refuse(431, "Request Header Fields Too Large",
                             f"request line and headers over {MAX_HEADER_BYTES:,} bytes")
                return
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # the headers are in: the app's own limits govern the body

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse (malformed, or TLS on a plain-HTTP port)."""
        self._refuse(400, "Bad Request", f"invalid HTTP request: {msg}")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_raw_response(status, reason, message))
            self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._head, self._in_headers = b"", True
        self._header_timer = self.loop.call_later(self.header_seconds, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self._refuse(408, "Request Timeout", f"no complete request headers within {self.header_seconds:g} s")
