"""Self-configuration: a dataset fingerprint and the training plan derived from it."""

from weakseg_monai.planning.fingerprint import DatasetFingerprint, dataset_fingerprint
from weakseg_monai.planning.planner import TrainingPlanner, format_plan

__all__ = ["DatasetFingerprint", "TrainingPlanner", "dataset_fingerprint", "format_plan"]
