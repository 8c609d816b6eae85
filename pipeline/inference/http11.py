"""HTTP/1.1 connections for `serve`, framed by h11, with the deadlines and limits a public server needs.

uvicorn runs the processes, sockets, signals and the app's lifespan; this protocol class (uvicorn's `http=`
option) runs each connection. uvicorn's own protocols answer their errors in plain text, give a client no
deadline for its headers, its body or reading its answers, and serve a request that has both Content-Length
and Transfer-Encoding on a kept connection. Here:

- the request line and headers must arrive within `client_seconds` and fit in `max_header_bytes` (408, 431);
- a body must arrive within `client_seconds` of the app asking for it (408), in at most `max_chunks` chunks;
- Content-Length together with Transfer-Encoding is refused and the connection closed (RFC 9112 section 6.3);
- a client that stops reading its answers for `client_seconds` is disconnected;
- past `max_connections`, a new connection gets a 503;
- every answer the protocol writes itself is JSON, and after one the connection closes gracefully: what the
  client is still sending is read and dropped for a moment, so that its answer is not lost to a reset.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import h11

from pipeline.inference.settings import Limits

log = logging.getLogger("serve")
access = logging.getLogger("serve.access")  # one line per answer; `serve --no-access-log` silences it
HIGH_WATER = 64 * 1024  # body bytes held for the app before reading pauses
SEND_BUFFER = 64 * 1024  # the kernel's send buffer of a connection
LINGER_SECONDS = 2.0  # after an answer that closes the connection, what the client still sends is dropped
MAX_LINGERING = 256  # connections closing gracefully at once; past it they close at once
_lingering: set[Http11Connection] = set()  # in this server process


def json_response(status: int, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 answer `{"error": message}` that closes the connection."""
    body = json.dumps({"error": message}).encode()
    retry = f"retry-after: {retry_after}\r\n" if retry_after is not None else ""
    reason = reason_phrase(status)
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{retry}connection: close\r\n\r\n").encode() + body


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class _Exchange:
    """One request and its answer: the ASGI receive and send of the app's call."""

    def __init__(self, connection: Http11Connection, scope: dict[str, Any]) -> None:
        self.connection, self.scope = connection, scope
        self.body = bytearray()
        self.more_body = True
        self.arrived = asyncio.Event()  # body bytes, its end, or the connection's end
        self.asked = False  # the app has asked for the body: its deadline runs
        self.disconnected = False
        self.response_started = self.response_complete = False
        self.head = b""  # the answer's status line and headers, not yet written
        self.keep_alive = True
        self.chunks = 0
        self.started, self.status = time.perf_counter(), 0

    async def receive(self) -> dict[str, Any]:
        connection = self.connection
        if not self.asked:
            self.asked = True
            if connection.conn.they_are_waiting_for_100_continue:
                connection.write(connection.conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            if self.more_body:
                connection.set_timer(connection.limits.client_seconds, connection.body_late)
        if not self.disconnected and not self.response_complete and not self.body and self.more_body:
            connection.resume_reading()
            await self.arrived.wait()
            self.arrived.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body, self.body = bytes(self.body), bytearray()
        connection.resume_reading()
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict[str, Any]) -> None:
        connection = self.connection
        if not self.disconnected and not await connection.writable():
            self.disconnected = True
        if self.disconnected:
            return
        if message["type"] == "http.response.start" and not self.response_started:
            self.response_started = True
            headers = list(message.get("headers", []))
            if connection.conn.their_state is not h11.DONE or not self.keep_alive:
                headers.append((b"connection", b"close"))  # answered before its body arrived: closes after
            status = self.status = message["status"]
            # held until the first body part, so that a whole answer leaves in one write (one TCP segment)
            self.head = connection.conn.send(h11.Response(status_code=status, headers=headers,
                                                          reason=reason_phrase(status).encode()))
        elif message["type"] == "http.response.body" and self.response_started and not self.response_complete:
            data = b"" if self.scope["method"] == "HEAD" else message.get("body", b"")
            parts = [self.head, connection.conn.send(h11.Data(data=data)) if data else b""]
            self.head = b""
            if not message.get("more_body", False):
                self.response_complete = True
                self.arrived.set()
                parts.append(connection.conn.send(h11.EndOfMessage()))
            connection.write(b"".join(p for p in parts if p))
            if self.response_complete:
                connection.log_access(self.status, self)
                connection.response_done()
        else:
            raise RuntimeError(f"unexpected ASGI message {message['type']!r} for this response")


class Http11Connection(asyncio.Protocol):
    """One client connection, framed by h11; constructed by uvicorn with `limits` bound by functools.partial."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, limits: Limits) -> None:
        if not config.loaded:
            config.load()
        self.app, self.root_path = config.loaded_app, config.root_path
        self.loop = _loop or asyncio.get_event_loop()
        self.state, self.app_state, self.limits = server_state, app_state, limits
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.write_timer: asyncio.TimerHandle | None = None
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.heard = False  # bytes of the next request have arrived
        self.lingering = False
        self.reading_paused = False
        self.addresses: tuple[Any, Any] = (None, None)

    # asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        # asyncio sets TCP_NODELAY only on sockets made with proto=IPPROTO_TCP, and uvicorn's has proto 0: without
        # it, an answer written in two parts waits 40 ms for the client's delayed ACK
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # the kernel's own buffer for answers stays small (they are), so that a client that stops reading
            # fills it soon and meets the deadline below, instead of parking megabytes in the kernel
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        if len(self.state.connections) >= self.limits.max_connections:
            self.refuse(503, f"busy: {self.limits.max_connections} connections are open; try again in 1 s",
                        retry_after=1)
            return
        self.state.connections.add(self)
        self.addresses = (_address(transport.get_extra_info("sockname")),
                          _address(transport.get_extra_info("peername")))
        self.set_timer(self.limits.client_seconds, self.headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        _lingering.discard(self)
        self.cancel_timers()
        self.resumed.set()
        if self.exchange is not None and not self.exchange.response_complete:
            self.exchange.disconnected = True
            self.exchange.arrived.set()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        self.heard = True
        self.conn.receive_data(data)
        self.handle_events()

    def eof_received(self) -> bool:
        """The client has stopped sending (it may still read): its answer in progress is still written."""
        if not self.lingering:
            self.conn.receive_data(b"")
            self.handle_events()
        return self.exchange is not None and not self.exchange.response_complete

    def pause_writing(self) -> None:
        self.resumed.clear()
        self.write_timer = self.loop.call_later(self.limits.client_seconds, self.reader_late)

    def resume_writing(self) -> None:
        self.resumed.set()
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None

    # uvicorn's side
    def shutdown(self) -> None:
        """Close once the answer in progress, if any, is complete."""
        if self.exchange is None or self.exchange.response_complete:
            self.close()
        else:
            self.exchange.keep_alive = False

    # h11's events
    def handle_events(self) -> None:
        while self.transport is not None and not self.transport.is_closing():
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                what = (f"request line and headers over {self.limits.max_header_bytes:,} bytes" if status == 431
                        else f"invalid HTTP request: {exc}")
                self.refuse(status, what)
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:  # a pipelined request waits until this answer is written
                self.pause_reading()
                return
            if isinstance(event, h11.Request):
                self.start(event)
            elif isinstance(event, h11.Data):
                self.body_data(event)
            elif isinstance(event, h11.EndOfMessage):
                self.body_end()
            elif isinstance(event, h11.ConnectionClosed):
                if self.exchange is None or self.exchange.response_complete:
                    self.close()
                return

    def start(self, event: h11.Request) -> None:
        self.cancel_timer()
        # h11 bounds headers still arriving; headers that came whole in one read are measured here
        if len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers) > \
                self.limits.max_header_bytes:
            self.refuse(431, f"request line and headers over {self.limits.max_header_bytes:,} bytes")
            return
        names = {name for name, _ in event.headers}
        if b"transfer-encoding" in names and b"content-length" in names:
            self.refuse(400, "a request with both Content-Length and Transfer-Encoding is refused (RFC 9112 6.3)")
            return
        path, _, query = event.target.partition(b"?")
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": event.http_version.decode("ascii"), "method": event.method.decode("ascii"),
                 "scheme": "http", "path": self.root_path + unquote(path.decode("ascii")),
                 "raw_path": self.root_path.encode("ascii") + path, "query_string": query,
                 "root_path": self.root_path, "headers": list(event.headers), "server": self.addresses[0],
                 "client": self.addresses[1], "state": self.app_state.copy()}
        self.exchange = exchange = _Exchange(self, scope)
        task = self.loop.create_task(self.run_app(exchange))
        self.state.tasks.add(task)
        task.add_done_callback(self.state.tasks.discard)

    def body_data(self, event: h11.Data) -> None:
        exchange = self.exchange
        assert exchange is not None
        if event.chunk_start:
            exchange.chunks += 1
            if exchange.chunks > self.limits.max_chunks:
                self.refuse(400, f"chunked body in more than {self.limits.max_chunks:,} chunks is refused: "
                                 "send larger chunks, or a Content-Length")
                return
        if exchange.response_complete:  # answered early: the rest of the body is dropped as it comes
            return
        exchange.body += event.data
        if len(exchange.body) > HIGH_WATER:
            self.pause_reading()
        exchange.arrived.set()

    def body_end(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        if exchange.asked:
            self.cancel_timer()
        exchange.more_body = False
        exchange.arrived.set()
        if exchange.response_complete:  # the body of a request answered early is through: now it can close
            self.close()

    async def run_app(self, exchange: _Exchange) -> None:
        try:
            await self.app(exchange.scope, exchange.receive, exchange.send)
        except BaseException:
            log.exception("%s %s failed outside the app's handlers", exchange.scope["method"], exchange.scope["path"])
            if not exchange.response_started:
                self.refuse(500, "the server failed on this request; it is logged")
            else:
                self.close()
            return
        if not exchange.response_complete and not exchange.disconnected:
            self.refuse(500, "the server gave no answer to this request; it is logged")

    def response_done(self) -> None:
        """The answer is written: keep the connection for the next request, or close it."""
        exchange = self.exchange
        assert exchange is not None
        if self.conn.our_state is h11.MUST_CLOSE or not exchange.keep_alive:
            if self.conn.their_state is h11.SEND_BODY:  # its body is still coming: read it to its end, then close
                self.set_timer(self.limits.client_seconds, self.close)
                self.resume_reading()
            else:
                self.close()
            return
        self.conn.start_next_cycle()
        self.heard = bool(self.conn.trailing_data[0])
        self.set_timer(self.limits.client_seconds, self.headers_late)
        self.resume_reading()
        self.handle_events()  # a pipelined request already here

    # deadlines
    def headers_late(self) -> None:
        if self.exchange is not None and not self.exchange.response_complete:
            return
        if self.heard:
            self.refuse(408, f"no complete request headers within {self.limits.client_seconds:g} s")
        elif self.exchange is None:  # a connection that never sent anything
            self.refuse(408, f"no request within {self.limits.client_seconds:g} s")
        else:  # idle after an answer: kept alive long enough
            self.close()

    def body_late(self) -> None:
        self.refuse(408, f"the body did not arrive within {self.limits.client_seconds:g} s")

    def reader_late(self) -> None:
        log.info("a client read no answer for %g s: disconnected", self.limits.client_seconds)
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:  # a reset, not a FIN queued behind answers the client will never take
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    # plumbing
    async def writable(self) -> bool:
        """Whether the client takes its answer: waits while the transport's buffer is full."""
        if not self.resumed.is_set():
            await self.resumed.wait()
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes | None) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def log_access(self, status: int, exchange: _Exchange | None) -> None:
        """The access log's line for one answer: client, request, status and time since its headers."""
        if not access.isEnabledFor(logging.INFO):
            return
        client = self.addresses[1]
        who = f"{client[0]}:{client[1]}" if client else "-"
        if exchange is None:
            access.info('%s "-" %d', who, status)
            return
        scope = exchange.scope
        access.info('%s "%s %s" %d in %.0f ms', who, scope["method"], scope["path"], status,
                    (time.perf_counter() - exchange.started) * 1000)

    def refuse(self, status: int, message: str, retry_after: int | None = None) -> None:
        """Answer `message` as JSON (unless an answer has begun) and close, dropping what still comes in."""
        self.cancel_timer()
        if self.exchange is not None:
            self.exchange.disconnected = True
            self.exchange.arrived.set()
            started = self.exchange.response_started
        else:
            started = False
        if self.transport is None or self.transport.is_closing():
            return
        if started:
            self.transport.abort()
            return
        self.transport.write(json_response(status, message, retry_after))
        self.log_access(status, self.exchange)
        self.linger()

    def linger(self) -> None:
        if len(_lingering) >= MAX_LINGERING or self.transport is None:
            return self.close()
        self.lingering = True
        _lingering.add(self)
        self.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client sees the answer end; its own sending may go on a moment

        self.set_timer(LINGER_SECONDS, self.close)

    def close(self) -> None:
        """Close once what is written has gone; a client that does not take it is cut off at the deadline."""
        _lingering.discard(self)
        self.cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
            if self.transport.get_write_buffer_size() and self.write_timer is None:
                self.write_timer = self.loop.call_later(self.limits.client_seconds, self.reader_late)

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def set_timer(self, seconds: float, callback: Any) -> None:
        self.cancel_timer()
        self.timer = self.loop.call_later(seconds, callback)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def cancel_timers(self) -> None:
        self.cancel_timer()
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None


def _address(name: Any) -> tuple[str, int] | None:
    return (str(name[0]), int(name[1])) if isinstance(name, tuple) and len(name) >= 2 else None
