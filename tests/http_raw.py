"""Raw HTTP over a socket, for requests no polite client sends; every read has a deadline."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)


def read_answer(sock: socket.socket, deadline: float) -> Answer:
    """Read one HTTP response (status line, headers, Content-Length body) before `deadline`."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += receive(sock, deadline)
    head, body = data.split(b"\r\n\r\n", 1)
    status, headers = parsed_head(head)
    while len(body) < int(headers.get("content-length", 0)):
        body += receive(sock, deadline)
    return Answer(status, headers, body)


def parsed_head(head: bytes) -> tuple[int, dict[str, str]]:
    """An answer's status and headers (names in lower case), from the bytes before its empty line."""
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split()[1]), {k.strip().lower(): v.strip() for k, v in (line.split(":", 1)
                                                                               for line in lines[1:])}


def receive(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection without an answer")
    return chunk


def exchange(port: int, raw: bytes, seconds: float = 30) -> Answer:
    """Send `raw` on a new connection and read the answer within `seconds`."""
    deadline = time.monotonic() + seconds
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.sendall(raw)
        return read_answer(sock, deadline)


def request(method: str, path: str, body: bytes = b"", content_type: str | None = None,
            extra: str = "") -> bytes:
    """A well-formed HTTP/1.1 request, as bytes."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return (head + extra + "\r\n").encode() + body


def answers_until_closed(sock: socket.socket, deadline: float) -> list[Answer]:
    """Every answer the server writes on `sock` until it closes the connection (before `deadline`)."""
    data = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    answers = []
    while data:
        head, rest = data.split(b"\r\n\r\n", 1)
        status, headers = parsed_head(head)
        length = int(headers.get("content-length", 0))
        answers.append(Answer(status, headers, rest[:length]))
        data = rest[length:]
    return answers
