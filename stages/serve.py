"""serve: a page to draw a digit on and POST /predict, answered by the exported ONNX model (onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.export.onnx_session import class_names, open_session
from pipeline.inference.prediction import DEFAULT_MODEL
from pipeline.inference.serving import make_server


@click.command(help="""Serve the exported model over HTTP.

GET / is a page where you draw a digit (mouse or finger) and watch the prediction and the ten
probabilities change as you draw. POST /predict takes an image (image/*, or a form upload) or JSON
{"pixels": [[...]]} and returns {"label", "probabilities"}; a bad request gets a 4xx JSON error.
Binds to 127.0.0.1 unless --host says otherwise.""")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, type=click.Path(path_type=Path),
              help="The exported model (default: this project's, wherever serve is run from).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@reports_errors
def main(model: Path, host: str, port: int) -> None:
    setup_logging("serve")
    session = open_session(model)
    server = make_server(session, class_names(session), host, port)
    click.echo(f"serving {model} on http://{host}:{server.server_port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()


if __name__ == "__main__":
    run(main)
