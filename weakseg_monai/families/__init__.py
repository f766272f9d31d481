"""Model families: the contract every family's model keeps (``InstanceModel``), the registry, and ``load_model``."""

from weakseg_monai.families.loading import checkpoint_family, checkpoint_state, load_model, model_for_checkpoint
from weakseg_monai.families.registry import ModelFamily, family_ids, get_family, register_family
from weakseg_monai.networks.family import InstanceModel

__all__ = [
    "InstanceModel",
    "ModelFamily",
    "checkpoint_family",
    "checkpoint_state",
    "family_ids",
    "get_family",
    "load_model",
    "model_for_checkpoint",
    "register_family",
]
