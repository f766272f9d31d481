"""Self-configuration: a dataset fingerprint and, per model family, the training plan derived from it."""

from weakseg_monai.planning.fingerprint import DatasetFingerprint, dataset_fingerprint
from weakseg_monai.planning.planner import (
    BaselinePlanner,
    ExperimentPlanner,
    NucleiPlanner,
    TrainingPlanner,
    format_plan,
    planner_for,
)

__all__ = [
    "BaselinePlanner",
    "DatasetFingerprint",
    "ExperimentPlanner",
    "NucleiPlanner",
    "TrainingPlanner",
    "dataset_fingerprint",
    "format_plan",
    "planner_for",
]
