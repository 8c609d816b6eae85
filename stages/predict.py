"""predict: label digit images with the exported ONNX model (onnxruntime only, no PyTorch)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import click

from pipeline.common.errors import PipelineError
from pipeline.export.onnx_session import class_names, open_session
from pipeline.inference.prediction import DEFAULT_MODEL, predict_files


@click.command(help="""Print the predicted label and its probability for each image FILE.

Any size, any pen, dark-on-light or light-on-dark, gray or colour, PNG/JPEG/TIFF/...: the ink
is measured against the local paper (lighting, gradients and haze removed), specks are ignored,
the stroke width is brought to MNIST's, and the digit is fitted into 20x20 and centred by mass
in 28x28 as MNIST digits were, then run through the ONNX model with onnxruntime. Files that
cannot be read are reported and the others still predicted; the exit status is 1 if any file
failed.""")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", default=DEFAULT_MODEL, show_default=True, type=click.Path(path_type=Path),
              help="The exported model (default: this project's, wherever predict is run from).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of lines.")
def main(files: tuple[Path, ...], model: Path, as_json: bool) -> None:
    try:
        session = open_session(model)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    failed = False
    if as_json:
        click.echo("[")
    for index, result in enumerate(predict_files(session, class_names(session), list(files))):
        failed = failed or "error" in result
        if as_json:  # a list printed an item at a time, so results appear as they come and the JSON stays valid
            item = textwrap.indent(json.dumps(result, indent=2), "  ")
            click.echo(f"{item}," if index < len(files) - 1 else item)
        if "error" in result:
            click.echo(f"error: {result['error']}", err=True)
        elif not as_json:
            click.echo(f"{result['file']}: {result['label']} ({result['probability']:.3f})")
    if as_json:
        click.echo("]")
    sys.exit(1 if failed else 0)

if __name__ == "__main__":
    main()
