"""preprocess stage: IDX files -> uint8/int64 tensor splits (train/val/test) and their stats."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from pipeline.common.atomic import atomic_dir, write_json
from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.common.params import describe, load_params
from pipeline.data.preparation import PREPROCESS_PARAMS, prepare
from pipeline.data.prepared import PreparedData, save_split
from pipeline.data.prepared_arrays import SUFFIX

log = logging.getLogger("preprocess")


@click.command(help=f"""Turn the IDX files in RAW into tensor splits in OUT.

Writes train.npz, val.npz, test.npz (arrays 'images': uint8 Nx28x28, 'labels': int64 N) and
stats.json (dataset, classes, split sizes, class counts, training mean/std, source MD5s).

\b
Params read from params.yaml:
{describe(PREPROCESS_PARAMS)}""")
@click.option("--params", "params_file", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option("--raw", default="data/raw", show_default=True, type=click.Path(path_type=Path))
@click.option("--out", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@reports_errors
def main(params_file: Path, raw: Path, out: Path) -> None:
    setup_logging("preprocess")
    params = load_params(PREPROCESS_PARAMS, params_file)
    splits, stats = prepare(raw, params["val_size"], params["split_seed"])
    with atomic_dir(out) as tmp:
        for name, split in splits.items():
            save_split(tmp / f"{name}{SUFFIX}", split)
        write_json(tmp / "stats.json", stats)
    prepared = PreparedData.load(out)  # read back as the stages after this one will read it
    log.info("train %d / val %d / test %d, mean %.4f std %.4f -> %s", *prepared.stats["sizes"].values(),
             prepared.normalization.mean, prepared.normalization.std, out)


if __name__ == "__main__":
    run(main)
