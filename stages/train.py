"""train stage: fit the chosen model on the prepared tensors; write models/model.pt and the training record."""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from pathlib import Path

import click

from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.common.code_deps import code_digest
from pipeline.common.params import describe
from pipeline.data.prepared import PreparedData
from pipeline.model.model_file import ModelFile
from pipeline.model.networks import build_model, count_parameters
from pipeline.train.checkpoint import Checkpoint, fingerprint
from pipeline.train.config import TRAIN_PARAMS, load_train_config
from pipeline.train.distributed import destroy_process_group, init_process_group, process_info
from pipeline.train.loop import fit
from pipeline.train.platform_info import describe_platform
from pipeline.train.record import clear_epoch_signal, plot_learning_curves, write_progress
from pipeline.train.setup import TrainingData, resolve_device

log = logging.getLogger("train")


def epoch_line(record: dict[str, float], epochs: int) -> str:
    """One plain log line per epoch."""
    return (f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}"
            f"  val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f}  lr {record['lr']:.2e}"
            f"  {record['seconds']:.1f}s")


@click.command(help=f"""Train a model on the prepared splits in DATA.

Writes MODEL_OUT (state dict + model name, normalization and classes; loads with
torch.load(weights_only=True)), METRICS (val loss/accuracy of the kept epoch, best epoch,
epochs run, parameters, platform) and into RECORD_DIR one TSV per chart (loss, accuracy: train
and val; learning rate) and curves.png. METRICS and the TSVs are rewritten after every epoch,
so `dvc exp show` and the VS Code DVC extension follow a running experiment. Timings go to the
log only, so that the outputs are a pure function of data, params and code. A checkpoint after
every epoch lets an interrupted run resume where it stopped. Several processes:
`torchrun --nproc_per_node N -m stages.train` (DDP; gloo on CPU, nccl on CUDA).

\b
Params read from params.yaml:
{describe(TRAIN_PARAMS)}""")
@click.option("--params", "params_file", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--non-digits", default="data/non_digits.npz", show_default=True, type=click.Path(path_type=Path),
              help="The draw stage's non-digits, read when non_digits > 0.")
@click.option("--model-out", default="models/model.pt", show_default=True, type=click.Path(path_type=Path))
@click.option("--metrics", default="metrics/train.json", show_default=True, type=click.Path(path_type=Path))
@click.option("--record-dir", default="metrics/train", show_default=True, type=click.Path(path_type=Path))
@click.option("--checkpoint", default="models/checkpoint.pt", show_default=True, type=click.Path(path_type=Path))
@reports_errors
def main(params_file: Path, data: Path, non_digits: Path, model_out: Path, metrics: Path, record_dir: Path,
         checkpoint: Path) -> None:
    info = process_info()
    setup_logging("train" if info.world_size == 1 else f"train rank {info.rank}")
    cfg = load_train_config(params_file)
    prepared = PreparedData.load(data)
    splits = TrainingData.of(prepared, non_digits if cfg.non_digits > 0 else None)
    device = resolve_device(cfg.device, info.local_rank)
    init_process_group(info, device)
    log.info("%s on %s, %d train / %d val images, %d process(es)", cfg.model, device, len(splits.train),
             len(splits.val), info.world_size)
    platform = describe_platform(device)
    inputs = [data / "train.npz", data / "val.npz", *([non_digits] if cfg.non_digits > 0 else [])]
    run_id = fingerprint(cfg, inputs, info.world_size, code_digest(Path(__file__)), platform)

    parameters = count_parameters(build_model(cfg.model, cfg.width, cfg.standardize))
    history: list[dict[str, float]] = []

    def on_epoch(record: dict[str, float]) -> None:
        if info.is_main:
            history.append(record)
            best_epoch = min(history, key=lambda r: r["val_loss"])["epoch"]  # the first of equals, as fit keeps
            write_progress(metrics, record_dir, history, best_epoch, parameters, platform)
            log.info(epoch_line(record, cfg.epochs))

    try:
        result = fit(cfg, splits, info, Checkpoint(checkpoint, run_id), on_epoch, show_progress=sys.stderr.isatty(),
                     device=device)
    except KeyboardInterrupt:
        log.info("interrupted: completed epochs are in %s; run again to resume", checkpoint)
        sys.exit(130)
    finally:
        destroy_process_group(info)
    if not info.is_main:
        return

    best = result.state.history[result.state.best_epoch - 1]  # METRICS and the TSVs hold it since its epoch
    plot_learning_curves(result.state.history, record_dir / "curves.png")
    clear_epoch_signal()
    ModelFile.of(cfg.model, result.model, prepared.normalization, prepared.classes, asdict(cfg)).save(model_out)
    checkpoint.unlink(missing_ok=True)
    log.info("best epoch %d: val acc %.4f; %.1fs training (%d images/s) -> %s", result.state.best_epoch,
             best["val_acc"], result.train_seconds, result.samples_seen / result.train_seconds, model_out)


if __name__ == "__main__":
    run(main)
