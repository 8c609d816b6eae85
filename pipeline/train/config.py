"""The train stage's params: the frozen config the trainer takes, each field declared with its rule and help."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.errors import PipelineError
from pipeline.common.params import (
    MAX_SEED,
    boolean,
    choice,
    integer,
    number,
    param,
    read_params_file,
    schema_of,
    validate,
)
from pipeline.model.networks import MODELS

OPTIMIZERS = ("sgd", "adam", "adamw", "muon")
SCHEDULERS = ("none", "onecycle", "cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _one_of(options: tuple[str, ...]) -> str:
    return f"one of {', '.join(options)}"


@dataclass(frozen=True)
class TrainConfig:
    """The train stage's params, validated: each field is a key of params.yaml, with what it allows and does."""

    model: str = param(_one_of(tuple(MODELS)), choice(*MODELS),
                       "cnn (default), mlp (784-128-10) or mlp2 (784-128-64-10), the tutorials' baselines")
    width: int = param("an integer from 4 to 256", integer(4, 256),
                       "CNN channels of the first convolution (the others are 2x and the hidden layer 4x); "
                       "MLPs ignore it")
    optimizer: str = param(_one_of(OPTIMIZERS), choice(*OPTIMIZERS),
                           "sgd (with momentum), adam, adamw, or muon (Muon for the weight matrices, AdamW for "
                           "the rest)")
    lr: float = param("a number > 0 and < 10", number(0.0, 10.0, low_open=True), "peak learning rate")
    momentum: float = param("a number >= 0 and < 1", number(0.0, 1.0),
                            "SGD momentum; sgd only: adam, adamw and muon (which uses 0.95) ignore it, so under them "
                            "a change retrains to the same weights")
    nesterov: bool = param("true or false", boolean,
                           "Nesterov momentum (needs momentum > 0); sgd only, as momentum")
    weight_decay: float = param("a number >= 0 and < 1", number(0.0, 1.0),
                                "weight decay: an L2 penalty for sgd and adam, decoupled for adamw and muon")
    scheduler: str = param(_one_of(SCHEDULERS), choice(*SCHEDULERS), "learning-rate schedule, stepped every batch")
    label_smoothing: float = param("a number >= 0 and < 1", number(0.0, 1.0), "cross-entropy label smoothing")
    augment: bool = param("true or false", boolean,
                          "shift each training image by its own random whole-pixel offset (up to 2 px each way)")
    rotate_deg: float = param("a number >= 0 and < 90", number(0.0, 90.0),
                              "rotate each training image by its own random angle up to this many degrees; 0 is off")
    zoom: float = param("a number >= 0 and < 0.5", number(0.0, 0.5),
                        "scale each training image by its own random factor in 1 ± zoom; 0 is off")
    standardize: bool = param("true or false", boolean,
                              "standardize each image inside the model (zero mean, unit variance, ink positive), "
                              "so that background level, contrast and polarity change nothing")
    corrupt_fraction: float = param("a number >= 0 and < 1", number(0.0, 1.0),
                                    "corrupt this share of the training images, each by one corruption drawn from the "
                                    "suite's trained kinds (docs/results.md, Robustness) at a random level; 0 is off")
    non_digits: float = param("a number >= 0 and < 1", number(0.0, 1.0),
                              "add this share of each batch in drawn non-digits (letters, symbols, scribbles), "
                              "trained towards no digit in particular, so that predict can say 'not a digit'; 0 is off")
    ema_decay: float = param("a number >= 0 and < 1", number(0.0, 1.0),
                             "keep an exponential moving average of the weights, updated every batch, as the model "
                             "that is validated and saved; its decay warms up as min(ema_decay, (1 + n) / (10 + n)) "
                             "after n batches (0.988 at the default run's last), so a larger value changes a short "
                             "run nothing; 0 is off")
    select_fraction: float = param("a number >= 0 and < 1", number(0.0, 1.0),
                                   "selective backprop: after select_after full epochs, each epoch trains on this "
                                   "fraction of the images, three quarters the hardest at their last visit and "
                                   "the rest at random; 0 is off")
    select_after: int = param("an integer from 1 to 1000", integer(1, 1000),
                              "full epochs before selective backprop starts")
    batch_size: int = param("an integer from 1 to 65536", integer(1, 65536),
                            "global batch size (split across processes)")
    epochs: int = param("an integer from 1 to 1000", integer(1, 1000), "maximum number of epochs")
    patience: int = param("an integer from 0 to 1000", integer(0, 1000),
                          "stop after this many epochs without a better validation loss; 0 never stops early")
    seed: int = param(f"an integer from 0 to {MAX_SEED}", integer(0, MAX_SEED),
                      "seed of initialisation, batch order and augmentation (the validation split has split_seed)")
    device: str = param(_one_of(DEVICES), choice(*DEVICES),
                        "where to train; auto picks cuda, else cpu (mps only when asked: it has no deterministic mode)")

    @classmethod
    def from_params(cls, params: dict[str, Any], source: str) -> TrainConfig:
        """The config of validated `params`, their combination checked."""
        if params["optimizer"] == "sgd" and params["nesterov"] and params["momentum"] == 0:
            raise PipelineError(f"{source}: 'nesterov' needs 'momentum' > 0")
        return cls(**params)


TRAIN_PARAMS = schema_of(TrainConfig)


def load_train_config(path: Path | str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The train stage's config from the file at `path`, with `overrides` (raw YAML values, as `-S` gives)
    applied before validation; errors name the file, and the overrides when there are any. Other stages' keys
    are theirs to check; a key that no stage reads is refused by the verdict stage, which reads the whole file."""
    source = f"{path} with -S" if overrides else str(path)
    params = validate({**read_params_file(path), **(overrides or {})}, TRAIN_PARAMS, source)
    return TrainConfig.from_params(params, source)
