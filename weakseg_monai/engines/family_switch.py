"""``train.json`` trains the family the plan chooses: when it is not the config's own, the same command runs again
with that family's override config added (issue 25).

A bundle config cannot swap its own components once parsed, and the families differ in network, loss, targets,
trainer and predictor, so the switch is a rerun: the same ``python -m monai.bundle run`` command line with the
registry's ``train_config`` of the family appended to ``--config_file`` and ``--family`` set, in a child process
whose exit code becomes this one's. Every other flag the user gave is passed on as typed. From Python (a
``ConfigWorkflow`` the caller built, e.g. napari's training widget), the caller is told which configs to use.
"""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path

from weakseg_monai.families.registry import get_family
from weakseg_monai.planning.planner import ExperimentPlanner, plan_family

logger = logging.getLogger(__name__)


def train_planned_family(family: str, planner: ExperimentPlanner, distributed: bool = False) -> None:
    """Nothing when ``family`` (``train.json``'s ``family`` id: ``planner.model_family()``, or the user's
    ``--family``) is the config's own (``planner.family``); else rerun this command with ``family``'s training
    config, and exit with its code."""
    family, config_family = str(family), planner.family
    if family == config_family:
        return
    extra = get_family(family).train_config  # an unknown id fails here, listing the registered ones
    if not extra or extra == "train.json":
        return
    choice = plan_family(planner.fingerprint)
    why = choice["why"] if choice["family"] == family else "set by --family"
    hint = (
        f"the plan chose the '{family}' model family for this dataset ({why}); its training "
        f"config is train.json + {extra}: pass --config_file \"['.../train.json','.../{extra}']\", or set "
        f"--family {config_family} to train the '{config_family}' family anyway"
    )
    argv = rerun_argv(sys.argv, extra, family)
    if distributed or argv is None:
        raise RuntimeError(hint)
    logger.warning("model family '%s' (%s): running train.json + %s", family, why, extra)
    sys.stdout.flush()
    sys.stderr.flush()
    code = subprocess.run([sys.executable, *argv]).returncode
    raise SystemExit(code)


def rerun_argv(argv: list[str], extra_config: str, family: str) -> list[str] | None:
    """``python -m monai.bundle run ...``'s arguments (``argv`` as ``sys.argv`` holds them) with ``extra_config``
    (found beside the first config file) appended to ``--config_file`` and ``--family`` set; None when ``argv`` is
    not a bundle command line."""
    if not argv or Path(argv[0]).parts[-3:] != ("monai", "bundle", "__main__.py"):
        return None
    args = list(argv[1:])
    index, files = _config_files(args)
    if index is None or not files:
        return None
    files.append(str(Path(files[0]).parent / extra_config))
    args[index : index + 2] = ["--config_file", repr(files)]
    args = _without_flag(args, "family") + ["--family", family]
    return ["-m", "monai.bundle", *args]


def _config_files(args: list[str]) -> tuple[int | None, list[str]]:
    """Where ``--config_file VALUE`` sits in ``args`` (``--config_file=VALUE`` is split in place) and its files (a
    path, a comma-separated list or a Python list literal, as MONAI reads them)."""
    for i, arg in enumerate(args):
        if arg.startswith("--config_file="):
            args[i : i + 1] = ["--config_file", arg.split("=", 1)[1]]
        if args[i] == "--config_file" and i + 1 < len(args):
            value = args[i + 1].strip()
            if value.startswith("["):
                files = [str(f) for f in ast.literal_eval(value)]
            else:
                files = [f for f in value.split(",") if f]
            return i, files
    return None, []


def _without_flag(args: list[str], name: str) -> list[str]:
    """``args`` without ``--name VALUE`` / ``--name=VALUE``."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == f"--{name}":
            skip = True
            continue
        if arg.startswith(f"--{name}="):
            continue
        out.append(arg)
    return out


__all__ = ["rerun_argv", "train_planned_family"]
