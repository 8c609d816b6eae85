"""What `serve` may spend on one request, one connection and one crowd: set once at start-up and handed to
the app and to the HTTP protocol of every server process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

CLIENT_SECONDS = 10.0  # default time a client has for a request's headers, again for its body, and to read
# peak resident memory, whatever the crowd (tests/test_serve.py holds them): one server process, which holds at
# most `concurrent` bodies, and one preparer, which holds one body and one image of at most `max_pixels`
SERVER_MB, PREPARER_MB = 350, 200


def one_per_core() -> int:
    """Preparers by default: one per core (they are the work), at most 4 (each may take PREPARER_MB)."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Limits:
    """The server's limits; every one is checked before the work it bounds.

    Memory: at most SERVER_MB + preparers x PREPARER_MB per server process (`serve --workers N`: N times that).
    """

    max_body: int = 10 * 1024 * 1024  # bytes, counted while the body is read
    max_json: int = 2 * 1024 * 1024  # bytes of a JSON body that is parsed (a large image goes as PNG)
    max_pixels: int = 4_000_000  # a request's image, checked before it is decoded
    max_header_bytes: int = 16 * 1024  # request line and headers
    max_chunks: int = 4096  # pieces of one chunked body: tiny chunks cost parsing time, not bandwidth
    client_seconds: float = CLIENT_SECONDS  # for a request's headers, again for its body, and to take an answer
    # requests admitted at once: reading their bodies, preparing and predicting. The rest wait before their
    # bodies are read (the client's upload stalls in TCP), so bodies in memory never exceed this many
    concurrent: int = 8
    queue_seconds: float = 10.0  # how long a request waits for its turn before a 503
    preparers: int = field(default_factory=one_per_core)  # processes that decode and prepare images
    prepare_seconds: float = 1.0  # a request's preparation is stopped past this, and answered 422
    max_connections: int = 1024  # open at once, idle keep-alive ones included; past it, a JSON 503
    loopback_only: bool = True  # accept only loopback Host names (no DNS rebinding of a local server)
