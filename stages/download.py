"""download stage: fetch the dataset's four IDX files into data/raw, verified against published MD5s."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from pipeline.common.atomic import atomic_dir
from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.common.params import describe, load_params
from pipeline.data.raw import write_manifest
from pipeline.data.sources import DOWNLOAD_PARAMS, dataset_spec, fetch_dataset, manifest

log = logging.getLogger("download")


@click.command(help=f"""Fetch the IDX files into OUT, decompressed and checksum-verified.

Sources, in order: `data_dir`, system folders (Debian's /usr/share/datasets/fashion-mnist),
the MNIST copy bundled in data/bundled/, and last the official mirrors (torchvision's).
Each file is streamed: its header is checked first (28x28 images or labels, at most a million),
then it is copied while its MD5 is computed, so a file never costs more memory than one chunk.
Whatever the source, the files written are byte-identical. Beside them, dataset.json
names the dataset, its classes, credit and checksums for the stages after this one.

\b
Params read from params.yaml:
{describe(DOWNLOAD_PARAMS)}""")
@click.option("--params", "params_file", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option("--out", default="data/raw", show_default=True, type=click.Path(path_type=Path))
@click.option("--offline", is_flag=True, envvar="MNIST_OFFLINE",
              help="Skip the mirrors (also set by MNIST_OFFLINE=1).")
@reports_errors
def main(params_file: Path, out: Path, offline: bool) -> None:
    setup_logging("download")
    params = load_params(DOWNLOAD_PARAMS, params_file)
    spec = dataset_spec(params["dataset"], params["data_dir"])
    with atomic_dir(out) as tmp:
        source = fetch_dataset(spec, params["data_dir"], tmp, offline=offline)
        write_manifest(tmp, manifest(spec))
    log.info("%s: 4 files verified from %s -> %s", spec.name, source, out)


if __name__ == "__main__":
    run(main)
