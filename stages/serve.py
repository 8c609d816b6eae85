"""serve: a page to draw a digit on and POST /predict, answered by the exported ONNX model (onnxruntime)."""

from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import uvicorn
from uvicorn.supervisors import Multiprocess

from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.common.errors import PipelineError
from pipeline.export.onnx_session import open_session
from pipeline.inference.http11 import Http11Connection
from pipeline.inference.prediction import DEFAULT_MODEL
from pipeline.inference.serving import app_for_model
from pipeline.inference.settings import (
    ENV_PREFIX,
    SETTINGS,
    Limits,
    default_shown,
    env_name,
    option_name,
    resolve_limits,
    shown,
)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


LOG_LEVELS = ["debug", "info", "warning", "error"]


def url_host(host: str) -> str:
    """The host as a URL or an address with a port writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def check_free(host: str, port: int) -> None:
    """Refuse, in one line naming the address and the way out, a port something already listens on (uvicorn would
    print only its errno). The probe binds as uvicorn does (SO_REUSEADDR) and lets go at once."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
            raise PipelineError(f"{url_host(host)}:{port}: {reason}; stop what listens there, or pick another "
                                "--port (--port 0 takes a free one)") from None


def limit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per setting of `Limits` (values are checked by the settings object, so that a bad one is one
    line naming it), each also read from its environment variable."""
    for name in reversed(SETTINGS):
        names = [option_name(name), "--timeout"] if name == "client_seconds" else [option_name(name)]
        field = Limits.model_fields[name]
        command = click.option(*names, name, default=None, metavar="NUMBER",
                               help=f"{field.description[0].upper()}{field.description[1:]}. "
                                    f"[default: {default_shown(name)}; env: {env_name(name)}]")(command)
    return command


@click.command(help=f"""Serve the exported model over HTTP (FastAPI on uvicorn).

GET / is a page where you draw a digit (mouse or finger) and watch the prediction and the ten
probabilities change as you draw; GET /openapi.json describes the API. POST /predict takes an image
(image/*, or a form upload) or JSON {{"pixels": [[...]]}} and returns {{"label", "probability", "probabilities"}};
a bad request gets a 4xx JSON error, with limits on body size, image size and time. Binds to
127.0.0.1 unless --host says otherwise; --port 0 picks a free port. Prints the address it bound.

Each limit below comes from its option, else from its environment variable ({ENV_PREFIX}<NAME>),
else its default; a bad value stops serve at start-up with one line (exit status 2).""")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, type=click.Path(path_type=Path),
              help="The exported model (default: this project's, wherever serve is run from).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes sharing the port (each loads the model and starts its preparers).")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(LOG_LEVELS),
              help="The least severe log lines shown (stderr); warning hides the access log too.")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One line per answer on stderr: client, request, status and milliseconds.")
@limit_options
@reports_errors
def main(model: Path, host: str, port: int, workers: int, log_level: str, access_log: bool,
         **options: str | None) -> None:
    setup_logging("serve")
    for name in ("serve", "pipeline"):
        logging.getLogger(name).setLevel(log_level.upper())
    if not access_log:
        logging.getLogger("serve.access").setLevel(logging.WARNING)
    try:
        limits = resolve_limits(options, loopback_only=is_loopback(host))
    except PipelineError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    open_session(model)  # a missing or broken model stops here, in one line
    check_free(host, port)
    # the settings travel to every worker process inside these two (picklable) callables, read once there
    config = uvicorn.Config(functools.partial(app_for_model, model.resolve(), limits), factory=True, host=host,
                            port=port, workers=workers, http=functools.partial(Http11Connection, limits=limits),
                            ws="none", log_level="warning", access_log=False)
    socket = config.bind_socket()
    socket.listen(config.backlog)  # connections made once the line below is out wait for the server, not fail
    bound_host, bound_port = socket.getsockname()[:2]
    click.echo(f"serving {model} on http://{url_host(bound_host)}:{bound_port}/ (Ctrl-C stops)")
    click.echo("limits: " + ", ".join(f"{name}={shown(getattr(limits, name))}" for name in SETTINGS))
    if workers > 1:
        Multiprocess(config, sockets=[socket]).run()
    else:
        uvicorn.Server(config).run(sockets=[socket])


if __name__ == "__main__":
    run(main)
