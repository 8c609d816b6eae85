"""serve: a page to draw a digit on and POST /predict, answered by the exported ONNX model (onnxruntime)."""

from __future__ import annotations

import functools
import ipaddress
from pathlib import Path

import click
import uvicorn
from uvicorn.supervisors import Multiprocess

from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.export.onnx_session import open_session
from pipeline.inference.http11 import Http11Connection
from pipeline.inference.prediction import DEFAULT_MODEL
from pipeline.inference.serving import app_for_model
from pipeline.inference.settings import CLIENT_SECONDS, Limits


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.command(help="""Serve the exported model over HTTP (FastAPI on uvicorn).

GET / is a page where you draw a digit (mouse or finger) and watch the prediction and the ten
probabilities change as you draw; GET /openapi.json describes the API. POST /predict takes an image
(image/*, or a form upload) or JSON {"pixels": [[...]]} and returns {"label", "probabilities"};
a bad request gets a 4xx JSON error, with limits on body size, image size and time. Binds to
127.0.0.1 unless --host says otherwise; --port 0 picks a free port. Prints the address it bound.""")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, type=click.Path(path_type=Path),
              help="The exported model (default: this project's, wherever serve is run from).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes sharing the port (each loads the model and starts its preparers).")
@click.option("--timeout", default=CLIENT_SECONDS, show_default=True, type=click.FloatRange(0.1, 600),
              help="Seconds a client has to send a request's headers, again its body, and to read an answer.")
@click.option("--prepare-seconds", default=Limits.prepare_seconds, show_default=True,
              type=click.FloatRange(0.01, 600), help="Seconds one image may take to prepare before it is stopped.")
@click.option("--max-connections", default=Limits.max_connections, show_default=True, type=click.IntRange(1),
              help="Connections open at once per worker; past it a new one gets a JSON 503.")
@reports_errors
def main(model: Path, host: str, port: int, workers: int, timeout: float, prepare_seconds: float,
         max_connections: int) -> None:
    setup_logging("serve")
    open_session(model)  # a missing or broken model stops here, in one line
    limits = Limits(client_seconds=timeout, prepare_seconds=prepare_seconds, max_connections=max_connections,
                    loopback_only=is_loopback(host))
    # the settings travel to every worker process inside these two (picklable) callables, read once there
    config = uvicorn.Config(functools.partial(app_for_model, model.resolve(), limits), factory=True, host=host,
                            port=port, workers=workers, http=functools.partial(Http11Connection, limits=limits),
                            ws="none", log_level="warning", access_log=False)
    socket = config.bind_socket()
    socket.listen(config.backlog)  # connections made once the line below is out wait for the server, not fail
    bound_host, bound_port = socket.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(f"serving {model} on http://{shown}:{bound_port}/ (Ctrl-C stops)")
    if workers > 1:
        Multiprocess(config, sockets=[socket]).run()
    else:
        uvicorn.Server(config).run(sockets=[socket])


if __name__ == "__main__":
    run(main)
