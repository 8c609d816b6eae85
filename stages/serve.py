"""serve: a page to draw a digit on and POST /predict, answered by the exported ONNX model (onnxruntime)."""

from __future__ import annotations

import os
from pathlib import Path

import click
import uvicorn
from uvicorn.supervisors import Multiprocess

from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.export.onnx_session import open_session
from pipeline.inference.http_protocol import CLIENT_SECONDS, GuardedH11Protocol
from pipeline.inference.prediction import DEFAULT_MODEL
from pipeline.inference.serving import MODEL_VARIABLE, TIMEOUT_VARIABLE

# connections held open at once (idle keep-alive ones included); past it uvicorn answers 503 at once
MAX_CONNECTIONS = 1024


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
              help="Server processes sharing the port (each loads the model).")
@click.option("--timeout", default=CLIENT_SECONDS, show_default=True, type=click.FloatRange(0.1, 600),
              help="Seconds a client has to send a request's headers, and again its body.")
@reports_errors
def main(model: Path, host: str, port: int, workers: int, timeout: float) -> None:
    setup_logging("serve")
    open_session(model)  # a missing or broken model stops here, in one line
    os.environ[MODEL_VARIABLE], os.environ[TIMEOUT_VARIABLE] = str(model.resolve()), str(timeout)
    config = uvicorn.Config("pipeline.inference.serving:app_from_environment", factory=True, host=host, port=port,
                            workers=workers, http=GuardedH11Protocol, ws="none", limit_concurrency=MAX_CONNECTIONS,
                            timeout_keep_alive=5, log_level="warning", access_log=False)
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
