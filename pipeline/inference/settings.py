"""What `serve` may spend on one request, one connection and one crowd: one settings object, read at start-up from
`serve`'s options, then the environment (`MNIST_SERVE_<NAME>`), then these defaults, and handed to the app and to
the HTTP protocol of every server process."""

from __future__ import annotations

import difflib
import os

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.common.errors import PipelineError

ENV_PREFIX = "MNIST_SERVE_"
CLIENT_SECONDS = 10.0  # default time a client has for a request's headers, again for its body, and to read
# peak resident memory, whatever the crowd (tests/test_serve.py holds them): one server process, which holds at
# most `concurrent` bodies, and one preparer, which holds one body and one image of at most `max_pixels`
SERVER_MB, PREPARER_MB = 350, 200


def one_per_core() -> int:
    """Preparers by default: one per core (they are the work), at most 4 (each may take PREPARER_MB)."""
    return max(1, min(4, os.cpu_count() or 1))


class Limits(BaseSettings):
    """The server's limits; every one is checked before the work it bounds.

    Memory: at most SERVER_MB + preparers x PREPARER_MB per server process (`serve --workers N`: N times that).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    max_body: int = Field(10 * 1024 * 1024, ge=1024, le=1 << 30,
                          description="bytes of a request body, counted while it is read; past it, a 413")
    max_json: int = Field(2 * 1024 * 1024, ge=1024, le=1 << 30,
                          description="bytes of a JSON body that is parsed (a large image goes as PNG)")
    max_pixels: int = Field(4_000_000, ge=784, le=100_000_000,
                            description="pixels of a request's image, checked before it is decoded")
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1 << 20, description="bytes of request line and headers")
    max_chunks: int = Field(4096, ge=1, le=1 << 20,
                            description="pieces of one chunked body (tiny chunks cost parsing time, not bandwidth)")
    client_seconds: float = Field(CLIENT_SECONDS, ge=0.1, le=600,
                                  description="seconds a client has to send a request's headers, again its body, "
                                              "and to read an answer")
    concurrent: int = Field(8, ge=1, le=1024,
                            description="requests admitted at once (their bodies read, prepared, predicted); the "
                                        "rest wait before their bodies are read, so bodies in memory never exceed "
                                        "this many")
    queue_seconds: float = Field(10.0, ge=0, le=600,
                                 description="seconds a request waits for its turn before a 503")
    preparers: int = Field(default_factory=one_per_core, ge=1, le=64,
                           description="processes per server process that decode and prepare images")
    prepare_seconds: float = Field(1.0, ge=0.01, le=600,
                                   description="seconds one image may take to prepare before it is stopped (422)")
    max_connections: int = Field(1024, ge=1, le=1 << 20,
                                 description="connections open at once per server process, idle ones included; "
                                             "past it, a JSON 503")
    loopback_only: bool = Field(True, exclude=True,
                                description="accept only loopback Host names (no DNS rebinding of a local "
                                            "server); set from --host, not from the environment")


SETTINGS = [name for name, field in Limits.model_fields.items() if not field.exclude]  # what users may set


def option_name(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def env_name(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def default_shown(name: str) -> str:
    """A setting's default as --help shows it."""
    field = Limits.model_fields[name]
    return "one per core, at most 4" if field.default_factory is not None else shown(field.default)


def shown(value: float) -> str:
    """A setting's value as serve prints it: an integer as it is, a float without trailing zeros."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def refuse_unknown_variables() -> None:
    """A variable with the settings' prefix that names no setting is a typo: refused, with the closest name."""
    known = {env_name(name) for name in SETTINGS}
    for variable in sorted(v for v in os.environ if v.startswith(ENV_PREFIX) and v not in known):
        close = difflib.get_close_matches(variable, sorted(known), n=1)
        hint = f"did you mean {close[0]}?" if close else f"the settings are {', '.join(sorted(known))}"
        raise PipelineError(f"{variable}: not a setting of serve ({hint})")


def resolve_limits(options: dict[str, object], loopback_only: bool) -> Limits:
    """The limits from `options` (the command line's, None where not given), then the environment, then the
    defaults; a bad value is a PipelineError naming the option or variable and what is allowed."""
    given = {name: value for name, value in options.items() if value is not None}
    refuse_unknown_variables()
    try:
        return Limits(**given, loopback_only=loopback_only)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "?"
        where = option_name(name) if name in given else env_name(name)
        raise PipelineError(f"{where}: {error['msg'].lower()} (got {error.get('input')!r})") from None
