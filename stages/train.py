"""train stage: fit the chosen model on the prepared tensors; write models/model.pt and the training record."""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import click

from pipeline.atomic import atomic_dir, write_json
from pipeline.cli import reports_errors, setup_logging
from pipeline.distributed import destroy_process_group, init_process_group, process_info
from pipeline.figures import plot_learning_curves
from pipeline.model_file import save_model
from pipeline.models import count_parameters
from pipeline.params import describe, load_params
from pipeline.prepared import load_split, load_stats
from pipeline.training import TRAIN_KEYS, TrainConfig, fingerprint, fit, resolve_device

log = logging.getLogger("train")


def epoch_line(record: dict[str, float], epochs: int) -> str:
    """One plain log line per epoch."""
    return (f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}"
            f"  val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f}  lr {record['lr']:.2e}"
            f"  {record['seconds']:.1f}s")


@click.command(help=f"""Train a model on the prepared splits in DATA.

Writes MODEL_OUT (state dict + model name, normalization and classes; loads with
torch.load(weights_only=True)), METRICS (val loss/accuracy of the kept epoch, best epoch,
epochs run, seconds, images/s, parameters) and into RECORD_DIR the dvclive record of every
epoch (plots/) and curves.png. A checkpoint after every epoch lets
an interrupted run resume where it stopped. Several processes:
`torchrun --nproc_per_node N -m stages.train` (DDP; gloo on CPU, nccl on CUDA).

\b
Params read from params.yaml:
{describe(TRAIN_KEYS)}""")
@click.option("--params", "params_file", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--model-out", default="models/model.pt", show_default=True, type=click.Path(path_type=Path))
@click.option("--metrics", default="metrics/train.json", show_default=True, type=click.Path(path_type=Path))
@click.option("--record-dir", default="metrics/train", show_default=True, type=click.Path(path_type=Path))
@click.option("--checkpoint", default="models/checkpoint.pt", show_default=True, type=click.Path(path_type=Path))
@reports_errors
def main(params_file: Path, data: Path, model_out: Path, metrics: Path, record_dir: Path, checkpoint: Path) -> None:
    info = process_info()
    setup_logging("train" if info.world_size == 1 else f"train rank {info.rank}")
    cfg = TrainConfig(**load_params(TRAIN_KEYS, params_file))
    stats = load_stats(data)
    train, val = load_split(data / "train.pt"), load_split(data / "val.pt")
    device = resolve_device(cfg.device, info.local_rank)
    init_process_group(info, device)
    log.info("%s on %s, %d train / %d val images, %d process(es)", cfg.model, device, len(train), len(val),
             info.world_size)
    run_id = fingerprint(cfg, [data / "train.pt", data / "val.pt"], info.world_size)
    try:
        with contextlib.ExitStack() as stack:
            record_tmp = stack.enter_context(atomic_dir(record_dir)) if info.is_main else None
            live = None
            if record_tmp is not None:
                from dvclive import Live

                live = stack.enter_context(Live(str(record_tmp), dvcyaml=None, save_dvc_exp=False, report=None))

            def on_epoch(record: dict[str, float]) -> None:
                if live is None:
                    return
                for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
                    live.log_metric(key.replace("_", "/"), record[key])
                live.log_metric("lr", record["lr"])
                live.log_metric("epoch_seconds", record["seconds"])
                live.next_step()
                log.info(epoch_line(record, cfg.epochs))

            result = fit(cfg, train, val, stats["mean"], stats["std"], info, checkpoint, run_id, on_epoch,
                         show_progress=sys.stderr.isatty())
            if live is None:
                return
            best = result.state.history[result.state.best_epoch - 1]
            summary = {
                "val_loss": best["val_loss"], "val_acc": best["val_acc"], "best_epoch": result.state.best_epoch,
                "epochs_run": result.state.epoch, "parameters": count_parameters(result.model),
                "train_seconds": round(result.train_seconds, 2),
                "samples_per_second": round(result.samples_seen / result.train_seconds),
            }
            plot_learning_curves(result.state.history, record_tmp / "curves.png")
            write_json(metrics, summary)
            save_model(model_out, cfg.model, result.model, stats["mean"], stats["std"], stats["classes"],
                       asdict(cfg))
        checkpoint.unlink(missing_ok=True)
        log.info("best epoch %d: val acc %.4f, %.1fs training (%d img/s) -> %s", summary["best_epoch"],
                 summary["val_acc"], summary["train_seconds"], summary["samples_per_second"], model_out)
    except KeyboardInterrupt:
        log.info("interrupted: completed epochs are in %s; run again to resume", checkpoint)
        sys.exit(130)
    finally:
        destroy_process_group(info)


if __name__ == "__main__":
    main()
