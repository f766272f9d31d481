"""Self-configuration: a dataset fingerprint and, per model family, the training plan derived from it."""

from weakseg_monai.planning.fingerprint import DatasetFingerprint, dataset_fingerprint
from weakseg_monai.planning.planner import (
    BaselinePlanner,
    BoundaryPlanner,
    ExperimentPlanner,
    NucleiPlanner,
    TrainingPlanner,
    format_plan,
    plan_family,
    planner_for,
)

__all__ = [
    "BaselinePlanner",
    "BoundaryPlanner",
    "DatasetFingerprint",
    "ExperimentPlanner",
    "NucleiPlanner",
    "TrainingPlanner",
    "dataset_fingerprint",
    "format_plan",
    "plan_family",
    "planner_for",
]
