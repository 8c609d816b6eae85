"""Model definitions: the tutorials' MLP baselines and the default CNN, built by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
CNN_WIDTH = 16


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
    """Conv (no bias: BatchNorm has one) -> BatchNorm -> ReLU."""
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def build_cnn(width: int = CNN_WIDTH) -> nn.Sequential:
    """A small CNN sized for accuracy per second on a 2-core CPU (docs/results.md, "Why this CNN").

    The first two convolutions stride 2, so no layer runs at 28x28 with more than one input channel,
    and the third adds depth where it is cheapest, at 7x7. At the default width w=16:
    28x28x1 -> 14x14x16 -> 7x7x32 -> 7x7x32 -> 64 -> 10, 115k parameters.
    """
    return nn.Sequential(
        *conv_bn_relu(1, width, 5, 2),
        *conv_bn_relu(width, 2 * width, 3, 2),
        *conv_bn_relu(2 * width, 2 * width, 3, 1),
        nn.Flatten(),
        nn.Linear(2 * width * 7 * 7, 4 * width),
        nn.ReLU(inplace=True),
        nn.Linear(4 * width, NUM_CLASSES),
    )


def build_mlp(*hidden: int) -> nn.Sequential:
    """The tutorials' fully connected baseline: 784 -> hidden... -> 10 with ReLU."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = 28 * 28
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, NUM_CLASSES))


MODELS: dict[str, Callable[[int], nn.Sequential]] = {  # name -> builder of the model at a width
    "cnn": build_cnn,
    "mlp": lambda width: build_mlp(128),  # the tutorials' baselines have one size
    "mlp2": lambda width: build_mlp(128, 64),
}


class Standardized(nn.Module):
    """Each image to zero mean and unit variance, its ink on the positive side, so that lighting (a grey or
    bright background, low contrast) and polarity (dark ink on light paper) change nothing the layers after
    it see. A digit covers a minority of its image, so its ink is the side of the positive third moment."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        centred = images - images.mean(dim=(1, 2, 3), keepdim=True)
        # the floor keeps a blank image finite; a digit's variance is about 1 in the dataset's normalized units
        scaled = centred * torch.rsqrt(centred.square().mean(dim=(1, 2, 3), keepdim=True) + 1e-4)
        skew = scaled.pow(3).mean(dim=(1, 2, 3), keepdim=True)
        return torch.where(skew < 0, -scaled, scaled)


def build_model(name: str, width: int = CNN_WIDTH, standardize: bool = False) -> nn.Sequential:
    """A freshly initialised model by name (one of MODELS); `width` sets the CNN's channels; `standardize`
    puts `Standardized` in front."""
    model = MODELS[name](width)
    return nn.Sequential(Standardized(), *model) if standardize else model


def fold_batchnorm(model: nn.Sequential) -> nn.Sequential:
    """For inference: each Conv -> BatchNorm pair as one convolution with the BatchNorm's scale and shift
    folded into its weights (the same logits to float rounding, 10-25 % faster on CPU).

    Uses the running statistics, so `model` must be in eval mode. The folded convolutions are new modules;
    the other layers are shared with `model`.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (it folds the running statistics)")
    layers, folded = list(model), []
    while layers:
        layer = layers.pop(0)
        if isinstance(layer, nn.Conv2d) and layers and isinstance(layers[0], nn.BatchNorm2d):
            layer = fuse_conv_bn_eval(layer, layers.pop(0))
        folded.append(layer)
    return nn.Sequential(*folded).eval()


def uses_channels_last(name: str) -> bool:
    """Channels-last is 1.3-1.6x faster for the CNN on CPU and on CUDA; MLPs flatten anyway."""
    return name == "cnn"


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Normalized(nn.Module):
    """A model that takes pixels in [0, 1] and normalizes inside the graph (what export ships)."""

    def __init__(self, model: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - self.mean) / self.std)
