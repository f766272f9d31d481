"""Ignite engines (MONAI ``SupervisedTrainer`` with a detection iteration; evaluation is MONAI's own
``SupervisedEvaluator`` with ``weakseg_monai.inference.WeakSegInferer``) and handlers for training and evaluating
``WeakInstanceSegNet``."""

from weakseg_monai.engines.checkpoints import (
    AtomicCheckpointSaver,
    CheckedCheckpointLoader,
    checked_checkpoint,
    checkpoint_to_resume,
    latest_checkpoint,
    run_signature,
)
from weakseg_monai.engines.evaluator import InstanceMetricsWriter
from weakseg_monai.engines.family_switch import train_planned_family
from weakseg_monai.engines.handlers import ModelSaver, ScoreThresholdCalibrator, TrainingProgress
from weakseg_monai.engines.setup import (
    attach_training_handlers,
    end_process_group,
    prepare_training_data,
    save_training_plan,
)
from weakseg_monai.engines.trainer import WeakSegTrainer, prepare_detection_batch

__all__ = [
    "AtomicCheckpointSaver",
    "CheckedCheckpointLoader",
    "ModelSaver",
    "ScoreThresholdCalibrator",
    "TrainingProgress",
    "attach_training_handlers",
    "InstanceMetricsWriter",
    "WeakSegTrainer",
    "checked_checkpoint",
    "checkpoint_to_resume",
    "end_process_group",
    "latest_checkpoint",
    "prepare_detection_batch",
    "prepare_training_data",
    "run_signature",
    "save_training_plan",
    "train_planned_family",
]
