"""``load_model(path)``: the model of any family from its ``model.pt`` (or a training checkpoint).

The file is read with ``torch.load(..., weights_only=True)``; its family id is the ``family_code`` entry (a uint8
buffer of ``InstanceModel``), and a file from before families (no id) is a ``nuclei`` model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

import weakseg_monai.networks  # noqa: F401  (registers the built-in families before get_family is asked)
from weakseg_monai.families.registry import get_family
from weakseg_monai.networks.family import FAMILY_KEY, LEGACY_FAMILY, decode_family


def checkpoint_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The model state dict in ``path`` (``model.pt``, or the ``model`` entry of a training checkpoint), read with
    ``weights_only=True`` and checked: a broken or foreign file fails here with its name and what is wrong, instead
    of torch's own text (which names no file and may suggest ``weights_only=False``; never do that with a file you
    did not write), and NaN or inf weights are refused instead of giving no objects."""
    path = Path(str(path))
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist (--ckpt_path): train a model first (train.json writes "
            "models/model.pt) or pass the path of an existing model.pt"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a broken or foreign file
        if "allowed global" in str(err) or "Unsupported global" in str(err):
            reason = "it holds Python objects other than tensors, which are not loaded (refused for safety)"
        else:
            reason = "it is corrupt, truncated or not a PyTorch file"
        raise ValueError(f"checkpoint {path} cannot be read as a state dict: {reason}") from None
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        kind = type(state).__name__ if not isinstance(state, Mapping) else "a dict with non-tensor entries"
        raise ValueError(f"checkpoint {path} holds {kind}, not a state dict of tensors (a model.pt)")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"checkpoint {path}: tensor {name!r} holds NaN or inf values (a diverged training?); use another "
                "checkpoint, e.g. the best-validation model.pt of that run"
            )
    return dict(state)


def checkpoint_family(state: dict) -> str:
    """The family id a state dict carries (``nuclei`` for checkpoints from before families)."""
    code = state.get(FAMILY_KEY)
    return decode_family(code) if isinstance(code, torch.Tensor) else LEGACY_FAMILY


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The model in ``path``, of the family the file names, with its weights and plan, on ``device``, in eval mode."""
    state = checkpoint_state(path)
    model = get_family(checkpoint_family(state)).build()
    model.load_state_dict(state)
    return model.to(device).eval()


def model_for_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The bundle configs' ``network_def``: ``load_model(path)`` when the file exists; before it does (MONAI's
    property checks build a workflow without running it), the ``nuclei`` family's default model, untrained. The
    configs' ``CheckedCheckpointLoader`` loads the file when the run starts, and fails naming it if it is missing."""
    if not Path(str(path)).is_file():
        return get_family(LEGACY_FAMILY).build().to(device)
    return load_model(path, device)


__all__ = ["checkpoint_family", "checkpoint_state", "load_model", "model_for_checkpoint"]
