"""The model as it is evaluated and exported: BatchNorm folded, the normalization inside, and the test-time shifts
whose logits it averages. The shifts are a param of export (`tta_shifts`), not of training: changing them reruns
export and what reads its files, and never retrains; so is the probability below which predict says "not a digit"
(`not_digit_below`), which export stores in the ONNX file."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.common.params import Param, choice, number
from pipeline.data.prepared import Normalization
from pipeline.model.model_file import ModelFile
from pipeline.model.networks import Normalized, fold_batchnorm, uses_channels_last

# test-time augmentation: the identity plus the 4 (or all 8) neighbouring whole-pixel shifts
TTA_OFFSETS = {0: ((0, 0),), 4: ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)),
               8: tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))}

TEST_TIME_PARAMS = {
    "tta_shifts": Param("0, 4 or 8", choice(*TTA_OFFSETS),
                        "test-time augmentation in the evaluated and exported model: average the logits of the image "
                        "and its 4 (or 8) one-pixel shifts; 0 is off"),
    "not_digit_below": Param("a number >= 0 and < 1", number(0.0, 1.0),
                             "predict and serve answer 'not a digit' when the likeliest digit's probability is below "
                             "this (stored in the exported model); 0 never refuses"),
}


class ShiftAveraged(nn.Module):
    """Test-time augmentation inside the graph: the mean logits over whole-pixel shifts of the input.

    Takes [0, 1] pixels (0 is the background, so the padding is too) and runs all shifted copies
    through the model as one batch. `shifts` is a key of TTA_OFFSETS.
    """

    def __init__(self, model: nn.Module, shifts: int) -> None:
        super().__init__()
        self.model = model
        self.offsets = TTA_OFFSETS[shifts]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        padded = F.pad(pixels, (1, 1, 1, 1))
        views = torch.cat([padded[:, :, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width] for dy, dx in self.offsets])
        logits = self.model(views)
        return logits.view(len(self.offsets), -1, logits.shape[-1]).mean(0)


def for_inference(model: nn.Module, name: str, normalization: Normalization, tta_shifts: int = 0) -> nn.Module:
    """A trained network as it is evaluated and exported, in eval mode: taking [0, 1] pixels, with the
    normalization and any test-time shifts inside, BatchNorm folded into the convolutions, and the CNN
    channels-last (about twice as fast on CPU)."""
    model = fold_batchnorm(model.eval())
    if uses_channels_last(name):
        model = model.to(memory_format=torch.channels_last)
    wrapped: nn.Module = Normalized(model, normalization.mean, normalization.std)
    if tta_shifts:
        wrapped = ShiftAveraged(wrapped, tta_shifts)
    return wrapped.eval()


def load_model(path: Path | str, tta_shifts: int = 0) -> tuple[nn.Module, ModelFile]:
    """The model of the file at `path` as `for_inference` makes it (with `tta_shifts`), and its file."""
    file = ModelFile.load(path)
    return for_inference(file.network(path), file.architecture, file.normalization, tta_shifts), file
