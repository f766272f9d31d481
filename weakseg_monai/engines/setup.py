"""The steps a training config runs around ``trainer.run()``, as components the configs call by ``_target_``.

Why in Python: ``train.json``, ``train_baseline.json`` and ``multi_gpu_train.json`` each listed the same seven to
fourteen ``$`` steps (the last with rank guards). Now ``train.json`` names ``prepare_training_data``,
``save_training_plan`` and ``attach_training_handlers`` once, with a ``distributed`` id; the baseline and multi-GPU
configs override only the values that differ (issue 28); ``multi_gpu_train.json`` sets ``distributed`` and needs no
steps of its own.

- ``prepare_training_data``: with ``distributed``, torchrun's process group first; then the excepthook that makes a
  failure's last line say what to do, determinism, the bundle's embedded synthetic dataset when ``dataset_dir`` is
  the default (rank 0 writes it, the other ranks wait at a barrier), then the dataset check. It runs before
  anything reads the dataset (the planner, the data loaders).
- ``save_training_plan``: the plan table and ``plan.json`` (rank 0), after the planner's ``check`` has checked every
  planned value a user set -- before the trainer is built from them, so a bad flag fails naming itself.
- ``attach_training_handlers``: the checkpoint saver and the best-model saver (rank 0 only), and the checkpoint
  loader when resuming (every rank).
- ``end_process_group`` (``finalize``): closes the process group of a distributed run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from ignite.engine import Engine
from monai.utils import set_determinism

from weakseg_monai.data.synthetic import ensure_embedded_dataset
from weakseg_monai.data.validate import check_dataset
from weakseg_monai.utils.errors import install_excepthook


def is_main_process(distributed: bool) -> bool:
    """Whether this process writes shared files: always without ``distributed``, else only rank 0."""
    return not distributed or torch.distributed.get_rank() == 0


def start_process_group() -> None:
    """torchrun's process group (NCCL on GPUs, each rank on the device ``LOCAL_RANK`` names; gloo on CPU), unless one
    is running already."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def end_process_group(distributed: bool = False) -> None:
    """The ``finalize`` step: with ``distributed``, close the process group ``start_process_group`` opened."""
    if distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def prepare_training_data(
    dataset_dir: str | Path, embedded_dir: str | Path, seed: int = 0, distributed: bool = False
) -> None:
    """Before anything reads ``dataset_dir``: with ``distributed`` the process group (``start_process_group``), then
    excepthook, determinism (``seed``), the embedded synthetic dataset when ``dataset_dir`` is ``embedded_dir`` (rank
    0 writes it; with ``distributed`` the others wait for it), and the dataset check (a run needs ``training``
    items)."""
    if distributed:
        start_process_group()
    install_excepthook()
    set_determinism(seed=int(seed))
    torch.backends.cudnn.benchmark = True
    ensure_embedded_dataset(dataset_dir, embedded_dir, generate=is_main_process(distributed))
    if distributed:
        torch.distributed.barrier()
    check_dataset(dataset_dir, require_training=True)


def save_training_plan(planner, output_dir: str | Path, plan: Mapping, distributed: bool = False) -> None:
    """Check the values this run uses, log the plan table and write ``plan.json`` (``planner.save``; the main
    process only, but every process checks)."""
    if is_main_process(distributed):
        planner.save(output_dir, plan)
    else:
        planner.check(plan)


def attach_training_handlers(
    trainer: Engine,
    checkpoint_saver,
    checkpoint_loader,
    resuming: bool,
    model_saver=None,
    evaluator: Engine | None = None,
    distributed: bool = False,
) -> None:
    """Attach the checkpoint saver and the best-model saver (``model_saver``, to the trainer and to ``evaluator``;
    skipped when None) on the main process, and the checkpoint loader on every process when ``resuming``."""
    if is_main_process(distributed):
        checkpoint_saver.attach(trainer)
        if model_saver is not None:
            model_saver.attach(trainer)
            if evaluator is not None:
                model_saver.attach_evaluator(evaluator)
    if resuming:
        checkpoint_loader.attach(trainer)


__all__ = [
    "attach_training_handlers",
    "end_process_group",
    "is_main_process",
    "prepare_training_data",
    "save_training_plan",
    "start_process_group",
]
