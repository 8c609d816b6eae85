"""draw stage: the non-digits training answers with no digit in particular, drawn once."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np

from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.data.non_digits import FAMILIES, NON_DIGITS, draw_non_digits
from pipeline.data.prepared_arrays import save_arrays

log = logging.getLogger("draw")


@click.command(help=f"""Draw COUNT non-digits into OUT, the same ones every time.

Letters and symbols (drawn from strokes, and typed in the font Pillow carries), {', '.join(list(FAMILIES)[1:])},
each placed as MNIST placed its digits. OUT is a split file: 'images' uint8 N x 28 x 28 and 'labels' the kind
of each drawing (0-{len(FAMILIES)}, the last: typed). The train stage adds them to its batches when
non_digits > 0. Reads no params.""")
@click.option("--out", default="data/non_digits.npz", show_default=True, type=click.Path(path_type=Path))
@click.option("--count", default=NON_DIGITS, show_default=True, type=click.IntRange(1))
@reports_errors
def main(out: Path, count: int) -> None:
    setup_logging("draw")
    images, kinds = draw_non_digits(count)
    save_arrays(out, images, kinds.astype(np.int64))
    log.info("%d non-digits -> %s", count, out)


if __name__ == "__main__":
    run(main)
