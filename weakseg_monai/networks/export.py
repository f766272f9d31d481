"""``WeakInstanceSegNetExport``: the network form ``python -m monai.bundle ckpt_export`` scripts (and a later
bioimage.io export can reuse): a plain tensor-in, tuple-out module.

Why only the dense part: the second stage is data dependent (thresholds, top-k, NMS, a variable number of RoIs,
lists of per-image dicts) and RoIAlign takes flexible Python arguments; TorchScript rejects those. Anchors,
decoding, NMS and the mask head run in Python (``WeakInstanceSegNet.detect``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from weakseg_monai.networks.detector import WeakInstanceSegNet

EXPORT_OUTPUTS = ("cls_logits", "box_regression", "fine", "coarse")  # the order of the returned tuple


class WeakInstanceSegNetExport(nn.Module):
    """The nuclei model's dense network, wrapped: ``forward(images (N, 1, X, Y, Z))`` -> ``(cls_logits,
    box_regression, fine, coarse)`` in ``EXPORT_OUTPUTS`` order (shapes in ``bundle/configs/metadata.json``
    ``network_data_format``). ``X, Y, Z`` must be multiples of the model's ``size_divisor()`` (8, 8, 4).

    Takes ``WeakInstanceSegNet``'s arguments, and loads a whole ``model.pt`` (what ``ckpt_export --ckpt_file``
    passes): the file goes into the full model, which sizes the detection head from its anchor shapes, and only the
    dense network is kept. It wraps the dense network rather than subclassing the model, so TorchScript sees the
    dense network alone (``state_dict()`` keys ``network.*``).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.network = WeakInstanceSegNet(**kwargs).dense_network()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        model = WeakInstanceSegNet()
        result = model.load_state_dict(state_dict, strict=strict, assign=assign)
        self.network = model.dense_network()
        return result

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = self.network(images)
        return out["cls_logits"], out["box_regression"], out["fine"], out["coarse"]
