"""The train stage's params: their schema (rules and help) and the frozen config the trainer takes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.common.errors import PipelineError
from pipeline.common.params import MAX_SEED, Param, boolean, choice, integer, load_params, number
from pipeline.model.networks import MODELS, TTA_OFFSETS

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "onecycle", "cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _one_of(options: tuple[str, ...]) -> str:
    return f"one of {', '.join(options)}"


TRAIN_PARAMS = {
    "model": Param(_one_of(tuple(MODELS)), choice(*MODELS),
                   "cnn (default), mlp (784-128-10) or mlp2 (784-128-64-10), the tutorials' baselines"),
    "width": Param("an integer from 4 to 256", integer(4, 256),
                   "CNN channels of the first convolution (the others are 2x and the hidden layer 4x); MLPs ignore it"),
    "optimizer": Param(_one_of(OPTIMIZERS), choice(*OPTIMIZERS), "sgd (with momentum), adam or adamw"),
    "lr": Param("a number > 0 and < 10", number(0.0, 10.0, low_open=True), "peak learning rate"),
    "momentum": Param("a number >= 0 and < 1", number(0.0, 1.0), "SGD momentum (ignored by adam/adamw)"),
    "nesterov": Param("true or false", boolean, "Nesterov momentum for SGD (needs momentum > 0)"),
    "weight_decay": Param("a number >= 0 and < 1", number(0.0, 1.0), "L2 penalty (decoupled for adamw)"),
    "scheduler": Param(_one_of(SCHEDULERS), choice(*SCHEDULERS), "learning-rate schedule, stepped every batch"),
    "label_smoothing": Param("a number >= 0 and < 1", number(0.0, 1.0), "cross-entropy label smoothing"),
    "augment": Param("true or false", boolean,
                     "shift each training image by its own random whole-pixel offset (up to 2 px each way)"),
    "rotate_deg": Param("a number >= 0 and < 90", number(0.0, 90.0),
                        "rotate each training image by its own random angle up to this many degrees; 0 is off"),
    "zoom": Param("a number >= 0 and < 0.5", number(0.0, 0.5),
                  "scale each training image by its own random factor in 1 ± zoom; 0 is off"),
    "ema_decay": Param("a number >= 0 and < 1", number(0.0, 1.0),
                       "keep an exponential moving average of the weights, updated every batch, as the model "
                       "that is validated and saved; 0 is off"),
    "tta_shifts": Param("0, 4 or 8", choice(*TTA_OFFSETS),
                        "test-time augmentation in the saved and exported model: average the logits of the image "
                        "and its 4 (or 8) one-pixel shifts; 0 is off"),
    "batch_size": Param("an integer from 1 to 65536", integer(1, 65536), "global batch size (split across processes)"),
    "epochs": Param("an integer from 1 to 1000", integer(1, 1000), "maximum number of epochs"),
    "patience": Param("an integer from 0 to 1000", integer(0, 1000),
                      "stop after this many epochs without a better validation loss; 0 never stops early"),
    "seed": Param(f"an integer from 0 to {MAX_SEED}", integer(0, MAX_SEED),
                  "seed of initialisation, batch order and augmentation (the validation split has split_seed)"),
    "device": Param(_one_of(DEVICES), choice(*DEVICES),
                    "where to train; auto picks cuda, else cpu (mps only when asked: it has no deterministic mode)"),
}


@dataclass(frozen=True)
class TrainConfig:
    """The train stage's params, validated (see TRAIN_PARAMS for meaning and allowed values)."""

    model: str
    width: int
    optimizer: str
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    scheduler: str
    label_smoothing: float
    augment: bool
    rotate_deg: float
    zoom: float
    ema_decay: float
    tta_shifts: int
    batch_size: int
    epochs: int
    patience: int
    seed: int
    device: str



def load_train_config(path: Path | str = "params.yaml") -> TrainConfig:
    """The train stage's params from params.yaml, each key and their combination checked."""
    params = load_params(TRAIN_PARAMS, path)
    if params["optimizer"] == "sgd" and params["nesterov"] and params["momentum"] == 0:
        raise PipelineError(f"{path}: 'nesterov' needs 'momentum' > 0")
    return TrainConfig(**params)
