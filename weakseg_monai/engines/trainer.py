"""``WeakSegTrainer``: MONAI's ``SupervisedTrainer`` with a detection iteration.

MONAI's default iteration computes ``loss_function(network(inputs), targets)``; a detector computes its
losses inside ``forward(images, targets)`` (torchvision / MONAI RetinaNet contract), so the iteration is
overridden and the output holds every loss part for ``StatsHandler`` / ``TensorBoardStatsHandler``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

from weakseg_monai.data.datalist import flatten_items

TARGET_KEYS = ("box", "label", "mask_annotated", "instance_id", "box_ignore")


def prepare_detection_batch(batchdata, device: str | torch.device, non_blocking: bool = False, **kwargs):
    """Crops from ``DataLoader(collate_fn=no_collation)`` -> ``(images (N, 1, X, Y, Z), targets)``.

    Every crop of every loaded volume is one sample (MONAI's detection bundles use the crop's
    ``num_samples`` as the batch). Targets follow ``WeakInstanceSegNet``'s contract.
    """
    items = flatten_items(batchdata)
    images = torch.stack([torch.as_tensor(d["image"]).float() for d in items]).to(device, non_blocking=non_blocking)
    targets = []
    for d in items:
        target = {}
        for key in TARGET_KEYS:
            if key in d:
                value = torch.as_tensor(d[key])
                target[key] = value.reshape(-1, 6).float() if key == "box" else value.reshape(-1)
        target["mask_annotated"] = target.get("mask_annotated", torch.zeros(len(target["box"]))).bool()
        if "box_ignore" in target:
            target["box_ignore"] = target["box_ignore"].bool()
        target["instances"] = torch.as_tensor(d["instances"])[0].to(torch.int32)
        targets.append({k: v.to(device, non_blocking=non_blocking) for k, v in target.items()})
    return images, targets


def sum_losses(losses: dict[str, torch.Tensor], *_) -> torch.Tensor:
    """L = L_box + L_mask (the sum of every part the model returns)."""
    return sum(losses.values())


class WeakSegTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` whose iteration runs ``inferer(images, network, targets)`` (MONAI's default
    ``SimpleInferer``: ``network(images, targets) -> loss dict``) and steps.

    ``engine.state.output`` = ``{"loss": L, "loss_cls": ..., "loss_box_reg": ..., "loss_mask": ...}`` (floats).
    AMP (CUDA only) uses MONAI's scaler. All other arguments are ``SupervisedTrainer``'s.
    """

    def __init__(self, *args, loss_function=sum_losses, prepare_batch=prepare_detection_batch, **kwargs) -> None:
        kwargs.setdefault("decollate", False)
        super().__init__(*args, loss_function=loss_function, prepare_batch=prepare_batch, **kwargs)

    def _iteration(self, engine: WeakSegTrainer, batchdata: Sequence) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images, targets = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        use_amp = engine.amp and torch.device(engine.state.device).type == "cuda"
        with torch.autocast("cuda", enabled=use_amp):
            losses = engine.inferer(images, engine.network, targets)  # SimpleInferer: network(images, targets)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            loss = engine.loss_function(losses)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if use_amp and engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        engine.state.output = {Keys.LOSS: loss.item(), **{k: v.item() for k, v in losses.items()}}
        return engine.state.output
