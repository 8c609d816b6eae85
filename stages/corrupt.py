"""corrupt stage: the robustness suite, a fixed sample of the test digits under every corruption, made once."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.data.corruptions import SUITE
from pipeline.data.prepared import load_split
from pipeline.robustness.generate import make_suite
from pipeline.robustness.suite_file import save_suite

log = logging.getLogger("corrupt")
IMAGES_PER_CORRUPTION = 400
SEED = 0


@click.command(help=f"""Make the robustness suite from the test split in DATA into OUT.

The same IMAGES test digits (a fixed, seeded sample) under each of {len(SUITE)}
corruptions at a fixed severity ({', '.join(e.name for e in SUITE)}), as uint8 images and as
predict's preparation turns them into its 28 x 28 input. Writes suite.npz and suite.json (the
corruptions, their families, and which of them training's augmentations apply). Reads no params.""")
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--out", default="data/corrupted", show_default=True, type=click.Path(path_type=Path))
@click.option("--images", default=IMAGES_PER_CORRUPTION, show_default=True, type=click.IntRange(1),
              help="Test digits per corruption (all of them, when the test split has fewer).")
@reports_errors
def main(data: Path, out: Path, images: int) -> None:
    setup_logging("corrupt")
    suite = make_suite(load_split(data / "test.npz"), images, SEED)
    save_suite(out, suite)
    log.info("%d corruptions x %d test digits -> %s", len(suite.images), len(suite.labels), out)


if __name__ == "__main__":
    run(main)
