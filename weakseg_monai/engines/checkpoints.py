"""Crash-safe training checkpoints and the resume rule.

Why not MONAI's ``CheckpointSaver``: it hard-codes Ignite's ``DiskSaver(atomic=False)`` and, once
``n_saved`` files exist, Ignite deletes the previous checkpoint *before* writing the new one, so a kill
during the save leaves a truncated file and nothing else. ``AtomicCheckpointSaver`` writes a temporary file,
renames it into place, and only then removes the older ones. The file format is Ignite's (one dict of
``state_dict()``s), so MONAI's ``CheckpointLoader`` reads it unchanged; a ``run`` entry records what the run
was (dataset, plan, seed) so ``--resume`` can refuse another run's checkpoints.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

from weakseg_monai.engines.handlers import save_atomic
from weakseg_monai.families.loading import checkpoint_state
from weakseg_monai.networks.family import unwrap

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")


def checkpoint_name(epoch: int) -> str:
    return f"checkpoint_epoch={int(epoch)}.pt"


class AtomicCheckpointSaver:
    """Save ``{name: obj.state_dict()}`` (+ ``run``) every ``save_interval`` epochs as ``checkpoint_epoch=N.pt``,
    atomically; keep the newest ``n_saved`` files, removing older ones only after the new one is complete.

    DDP-wrapped modules are saved unwrapped (plain keys).
    """

    def __init__(
        self,
        save_dir: str | Path,
        save_dict: Mapping[str, object],
        save_interval: int = 1,
        n_saved: int = 1,
        run: Mapping | None = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.save_interval = max(1, int(save_interval))
        self.n_saved = max(1, int(n_saved))
        self.run = dict(run or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.save)

    def save(self, engine: Engine) -> Path:
        state = {name: getattr(obj, "module", obj).state_dict() for name, obj in self.save_dict.items()}
        state["run"] = self.run
        path = save_atomic(state, self.save_dir / checkpoint_name(engine.state.epoch))
        for old in list_checkpoints(self.save_dir)[: -self.n_saved]:
            old.unlink(missing_ok=True)
        logger.info("saved checkpoint %s", path)
        return path


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """``checkpoint_epoch=N.pt`` files of ``ckpt_dir``, oldest first."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_dir: str, run: Mapping | None = None) -> str:
    """The newest readable ``checkpoint_epoch=N.pt`` in ``ckpt_dir`` (what ``--resume true`` continues from).

    An unreadable newest file (e.g. a kill during a save by an older version) is skipped with a warning that
    names it. With ``run``, a checkpoint recording a different run (dataset, plan, seed, ...) is refused.
    """
    candidates = list_checkpoints(ckpt_dir)
    if not candidates:
        raise FileNotFoundError(f"--resume: no checkpoint_epoch=*.pt in {ckpt_dir}")
    for path in reversed(candidates):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is skipped, and said so
            logger.warning("--resume: skipping unreadable checkpoint %s (%s: %s)", path, type(err).__name__, err)
            continue
        if run is not None and state.get("run") and _jsonable(state["run"]) != _jsonable(run):
            differs = sorted(k for k in set(run) | set(state["run"]) if _jsonable(run.get(k)) != _jsonable(
                state["run"].get(k)))
            raise ValueError(
                f"--resume: {path} belongs to another run (it differs in {', '.join(differs)}); resume with the "
                f"same settings, or train into a new --output_dir / --ckpt_dir"
            )
        return str(path)
    raise FileNotFoundError(f"--resume: no readable checkpoint_epoch=*.pt in {ckpt_dir}")


# plan values a resumed run may change: its length, and the NMS threshold (used at validation and inference only)
RESUMABLE_PLAN_KEYS = ("iterations", "epochs", "nms_thresh")


def run_signature(plan: Mapping, dataset_dir: str | Path, **settings: object) -> dict:
    """What a checkpoint must match to be resumed (``AtomicCheckpointSaver`` stores it, ``latest_checkpoint``
    compares): the run's plan values except ``RESUMABLE_PLAN_KEYS``, the dataset folder (absolute) and ``settings``
    (seed, learning rate, ...). Built here from the config's ``plan`` so the configs list the planned ids once."""
    signature = {k: v for k, v in plan.items() if k not in RESUMABLE_PLAN_KEYS}
    return {**signature, "dataset_dir": os.path.abspath(str(dataset_dir)), **settings}


def checkpoint_to_resume(ckpt_dir: str, resume: bool, run: Mapping | None = None) -> str:
    """``CheckpointLoader``'s ``load_path`` in the training configs: ``latest_checkpoint(ckpt_dir, run)`` when
    resuming, else "" (nothing to load)."""
    return latest_checkpoint(ckpt_dir, run) if resume else ""


def checked_checkpoint(path: str | Path, network: torch.nn.Module | None = None) -> str:
    """``path`` (a string) after checking that it is a state dict (``families.checkpoint_state``: readable, tensors,
    finite) that this model can load, for ``CheckpointLoader``'s ``load_path`` in the evaluation configs.

    Accepts a plain state dict (``model.pt``) or a training checkpoint holding one under ``"model"``.
    """
    state = checkpoint_state(path)
    if network is not None:
        module = copy.deepcopy(unwrap(network)).cpu()
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as err:
            details = "; ".join(line.strip() for line in str(err).splitlines()[1:4] if line.strip())
            raise ValueError(
                f"checkpoint {path} does not fit {type(module).__name__} (another model's checkpoint?): {details}"
            ) from None
    return str(path)


class CheckedCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` that runs ``checked_checkpoint`` on its file when the engine starts, before
    loading: a broken, foreign or NaN checkpoint fails naming the file and what is wrong. (At construction time the
    file may not exist yet: property checks build the workflow without running it.)"""

    def __init__(self, load_path: str | Path, load_dict: dict, **kwargs) -> None:
        super().__init__(str(load_path), load_dict, **kwargs)

    def __call__(self, engine: Engine) -> None:
        model = self.load_dict.get("model", next(iter(self.load_dict.values()), None))
        checked_checkpoint(self.load_path, model if isinstance(model, torch.nn.Module) else None)
        super().__call__(engine)


def _jsonable(value: object) -> object:
    """Lists/tuples/tensors compared as nested lists of floats (a JSON round trip may change the type)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)
