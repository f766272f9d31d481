"""``WeakInstanceSegNetExport``: the network form ``python -m monai.bundle ckpt_export`` scripts (and a later
bioimage.io export can reuse): a plain tensor-in, tuple-out module.

Why only the dense part: the second stage is data dependent (thresholds, top-k, NMS, a variable number of RoIs,
lists of per-image dicts) and RoIAlign takes flexible Python arguments; TorchScript rejects those. Anchors,
decoding, NMS and the mask head run in Python (``WeakInstanceSegNet.detect``).
"""

from __future__ import annotations

from torch import Tensor

from weakseg_monai.networks.detector import WeakInstanceSegNet

EXPORT_OUTPUTS = ("cls_logits", "box_regression", "fine", "coarse")  # the order of the returned tuple


class WeakInstanceSegNetExport(WeakInstanceSegNet):
    """Same arguments and state-dict keys as ``WeakInstanceSegNet`` (the bundle's ``model.pt`` loads as is);
    ``forward(images (N, 1, X, Y, Z))`` -> ``(cls_logits, box_regression, fine, coarse)``, the dense network's
    outputs in ``EXPORT_OUTPUTS`` order (shapes in ``bundle/configs/metadata.json`` ``network_data_format``).
    ``X, Y, Z`` must be multiples of ``size_divisor()`` (8, 8, 4).
    """

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # type: ignore[override]
        out = self.network(images)
        return out["cls_logits"], out["box_regression"], out["fine"], out["coarse"]
