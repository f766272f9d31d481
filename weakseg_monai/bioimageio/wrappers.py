"""The two modules the bioimage.io packages run. bioimage.io orders axes (batch, channel, z, y, x); ours are
(x, y, z), so both transpose at their edges and nowhere else.

- ``DenseZYX``: the dense network as TorchScript, ``(N, 1, Z, Y, X)`` -> ``(cls_logits, box_regression)``.
- ``PredictorZYX``: the whole predictor (detector, NMS, mask head, paste-back), ``(N, 1, Z, Y, X)`` at a declared
  spacing -> int32 instance labels ``(N, 1, Z, Y, X)``; it loads ``model.pt`` itself (any family).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from weakseg_monai.families.loading import checkpoint_family
from weakseg_monai.families.registry import get_family
from weakseg_monai.inference.predictor import WeakSegPredictor
from weakseg_monai.networks.family import LEGACY_FAMILY

DENSE_OUTPUTS = ("cls_logits", "box_regression")  # what a consumer needs to decode detections (see DenseZYX)


def zyx_to_xyz(t: Tensor) -> Tensor:
    """``(N, C, Z, Y, X)`` <-> ``(N, C, X, Y, Z)`` (its own inverse)."""
    return t.permute(0, 1, 4, 3, 2)


class DenseZYX(nn.Module):
    """The dense network in bioimage.io's axis order: ``(N, 1, Z, Y, X)`` normalised input (sizes multiples of the
    model's size divisor, read in z, y, x) -> ``(cls_logits (N, A * 2, Z/sz, Y/sy, X/sx), box_regression
    (N, A * 6, ...))`` at the detection stride.

    Why two of the network's four outputs: ``fine`` and ``coarse`` feed the mask head, which is not part of the
    dense network (it runs per detected box, in Python), so a consumer could do nothing with them; the class logits
    and box deltas, with the anchors and box coder in the package's ``config``, are a complete detector.
    """

    def __init__(self, dense: nn.Module) -> None:
        super().__init__()
        self.dense = dense

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.dense(zyx_to_xyz(images))
        return zyx_to_xyz(out["cls_logits"]), zyx_to_xyz(out["box_regression"])


class PredictorZYX(nn.Module):
    """``WeakSegPredictor`` as a module: ``forward(images (N, 1, Z, Y, X))`` raw intensities at ``spacing``
    (x, y, z) µm -> ``(N, 1, Z, Y, X)`` int32 instance labels (0 background, k instance k). It resamples to the
    model's working spacing and normalises by its percentiles itself (no preprocessing in the package).

    ``load_state_dict(model.pt's state dict)`` builds the model of the family the file names, so the file is loaded
    unchanged (the same bytes as the bundle's); before that the module holds the ``nuclei`` family's default model.
    """

    def __init__(self, spacing: Sequence[float] = (0.5, 0.5, 1.0)) -> None:
        super().__init__()
        self.spacing = tuple(float(v) for v in spacing)
        self.model = get_family(LEGACY_FAMILY).build().eval()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        device = next(self.model.parameters()).device
        model = get_family(checkpoint_family(dict(state_dict))).build()
        result = model.load_state_dict(state_dict, strict=strict, assign=assign)
        self.model = model.to(device).eval()
        return result

    def state_dict(self, *args, **kwargs):  # the keys of model.pt, not "model.*"
        return self.model.state_dict(*args, **kwargs)

    @torch.inference_mode()
    def forward(self, images: Tensor) -> Tensor:
        predictor = WeakSegPredictor(self.model, device=images.device)
        labels = []
        for image in zyx_to_xyz(images.float()):
            instances = predictor(image.cpu(), self.spacing)["instances"]
            labels.append(torch.as_tensor(instances, dtype=torch.int32)[None])
        return zyx_to_xyz(torch.stack(labels)).to(images.device)
