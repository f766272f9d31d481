"""Train on a saved weak dataset through the bundle's own train workflow, in the background, with progress, loss and a
clean stop (no Qt here; ``widgets.TrainWidget`` runs ``train_steps`` in napari's ``thread_worker``).

Nothing here is a training loop: ``bundle/configs/train.json`` runs in MONAI's ``ConfigWorkflow`` exactly as
``python -m monai.bundle run --config_file bundle/configs/train.json`` runs it, with ``dataset_dir``, ``output_dir``,
``ckpt_dir`` and optionally ``iterations`` overridden. We attach one Ignite handler (``ProgressRelay``) to the
bundle's trainer (``train#trainer``): after each iteration it reports the iteration, the total and the loss terms,
and calls ``trainer.terminate()`` once a stop was asked for.

The output folder is laid out like a bundle, so Segment takes it as a model choice: ``OUT/models/model.pt`` (the
best-validation weights, else the final ones), ``OUT/models/model_final.pt``, ``OUT/models/checkpoint_epoch=N.pt``
and ``OUT/runs/train`` (``plan.json``, TensorBoard logs).

A stop leaves a loadable model: ``terminate()`` ends the run after the current iteration, Ignite then fires
``TERMINATE`` and ``COMPLETED``, and the bundle's own ``ModelSaver`` writes ``model_final.pt`` (and ``model.pt`` when
no validation improved) on ``COMPLETED``.

``train.json`` is in the repository's ``bundle/``, which a wheel does not carry: training from napari needs the source
checkout installed editable (``pip install -e ".[napari]"``), as Segment's default model does.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from weakseg_monai.engines.handlers import FINAL_MODEL_FILE, MODEL_FILE
from weakseg_monai.napari.segment import BUNDLE_DIR

TRAIN_CONFIG = BUNDLE_DIR / "configs" / "train.json"
MODELS_SUBDIR = "models"
RUNS_SUBDIR = "runs/train"


@dataclass(frozen=True)
class TrainProgress:
    """One finished iteration of the trainer: its number, the run's total and the loss terms (``loss`` their sum)."""

    iteration: int
    total: int
    losses: dict[str, float] = field(default_factory=dict)

    @property
    def loss(self) -> float:
        return float(self.losses.get("loss", math.nan))

    def text(self) -> str:
        return f"iteration {self.iteration}/{self.total}  loss {self.loss:.4f}"


@dataclass(frozen=True)
class TrainResult:
    """A finished (or stopped) run: the ``model.pt`` to segment with, and how far it went."""

    model: Path
    output_dir: Path
    iterations: int
    total: int
    stopped: bool

    def summary(self) -> str:
        if self.stopped:
            return f"stopped at iteration {self.iterations}/{self.total}"
        return f"{self.iterations} iterations"

    def text(self) -> str:
        return f"trained ({self.summary()}): {self.model}"


def train_config() -> Path:
    """``bundle/configs/train.json`` of the source checkout (a wheel does not carry ``bundle/``)."""
    if not TRAIN_CONFIG.is_file():
        raise FileNotFoundError(
            f"the bundle's train workflow is not at {TRAIN_CONFIG}: training from napari needs the source checkout "
            "installed with pip install -e \".[napari]\" (a wheel does not carry bundle/); or run "
            "python -m monai.bundle run --config_file bundle/configs/train.json --dataset_dir DIR from a checkout"
        )
    return TRAIN_CONFIG


def output_paths(output_dir: str | Path) -> dict[str, Path]:
    """Where a run into ``output_dir`` writes: ``ckpt_dir`` (the models) and ``output_dir`` (plan, logs)."""
    root = Path(output_dir)
    return {"ckpt_dir": root / MODELS_SUBDIR, "output_dir": root / RUNS_SUBDIR}


def bundle_workflow(dataset_dir: str | Path, output_dir: str | Path, iterations: int | None = None,
                    **overrides: Any) -> Any:
    """``train.json`` in a ``ConfigWorkflow`` on ``dataset_dir`` into ``output_dir`` (not initialised yet).
    ``iterations``: ``None`` or 0 for the planned schedule; ``overrides``: other ids of ``train.json``.

    The family the plan chooses for the data (``overrides["family"]`` to force one) trains: its override config is
    added to ``train.json`` here, as the command line's rerun does (``engines.family_switch``).

    The bundle's ``logging.conf`` is not applied: it would reconfigure the host application's (napari's) logging."""
    from monai.bundle import ConfigWorkflow

    from weakseg_monai.families import get_family
    from weakseg_monai.planning import ExperimentPlanner

    config = train_config()
    family = str(overrides.pop("family", "") or ExperimentPlanner(dataset_dir).model_family())
    extra = get_family(family).train_config
    files = [str(config)] + ([str(config.parent / extra)] if extra and extra != config.name else [])
    paths = output_paths(output_dir)
    values: dict[str, Any] = {
        "bundle_root": str(BUNDLE_DIR),
        "dataset_dir": str(Path(dataset_dir).resolve()),
        "output_dir": str(paths["output_dir"].resolve()),
        "ckpt_dir": str(paths["ckpt_dir"].resolve()),
    }
    if iterations:
        values["iterations"] = int(iterations)
    values.update(overrides, family=family)
    return ConfigWorkflow(config_file=files, logging_file=False, workflow_type=None, **values)


class ProgressRelay:
    """Ignite handler on the bundle's trainer: after each iteration, ``report`` a ``TrainProgress``; when ``stop`` is
    set, ``terminate()`` the run (``COMPLETED`` still fires, so the model files are written)."""

    def __init__(self, report: Callable[[TrainProgress], None], stop: threading.Event) -> None:
        self.report = report
        self.stop = stop
        self.stopped = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output if isinstance(engine.state.output, dict) else {}
        losses = {str(k): float(v) for k, v in output.items() if isinstance(v, (int, float))}
        self.report(TrainProgress(engine.state.iteration, total_iterations(engine), losses))
        if self.stop.is_set() and not self.stopped:
            self.stopped = True
            engine.terminate()


def total_iterations(engine: Engine) -> int:
    """The iterations the trainer runs: epochs x epoch length (``train.json``: ``val_interval`` steps an epoch)."""
    return int((engine.state.max_epochs or 0) * (engine.state.epoch_length or 0))


def train_dataset(
    dataset_dir: str | Path,
    output_dir: str | Path,
    iterations: int | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
    stop: threading.Event | None = None,
    **overrides: Any,
) -> TrainResult:
    """Run the bundle's train workflow on ``dataset_dir`` into ``output_dir`` (blocking). ``on_progress`` gets a
    ``TrainProgress`` after each iteration (in the training thread); setting ``stop`` ends the run after the current
    iteration with a loadable ``model.pt``."""
    stop = stop or threading.Event()
    workflow = bundle_workflow(dataset_dir, output_dir, iterations, **overrides)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    relay = ProgressRelay(on_progress or (lambda _: None), stop)
    relay.attach(trainer)
    try:
        workflow.run()
    finally:
        workflow.finalize()
    ckpt_dir = output_paths(output_dir)["ckpt_dir"]
    model = ckpt_dir / MODEL_FILE
    if not model.is_file() or not (ckpt_dir / FINAL_MODEL_FILE).is_file():
        raise RuntimeError(f"the train workflow ended without writing {model} and {FINAL_MODEL_FILE}")
    return TrainResult(model, Path(output_dir), int(trainer.state.iteration), total_iterations(trainer), relay.stopped)


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def train_steps(
    dataset_dir: str | Path,
    output_dir: str | Path,
    iterations: int | None = None,
    stop: threading.Event | None = None,
    **overrides: Any,
) -> Iterator[TrainProgress | TrainResult]:
    """``train_dataset`` in a thread of its own: yields each ``TrainProgress`` as it arrives, then the ``TrainResult``
    (the shape napari's ``thread_worker`` wants: Ignite reports from inside ``trainer.run()``, which cannot yield).
    Closing the generator early sets ``stop`` and waits for the run to end cleanly."""
    stop = stop or threading.Event()
    events: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            events.put(train_dataset(dataset_dir, output_dir, iterations, events.put, stop, **overrides))
        except BaseException as error:  # handed to the consuming thread, which raises it
            events.put(_Failed(error))

    thread = threading.Thread(target=run, name="weakseg-train", daemon=True)
    thread.start()
    try:
        while True:
            event = events.get()
            if isinstance(event, _Failed):
                raise event.error
            yield event
            if isinstance(event, TrainResult):
                return
    finally:
        if thread.is_alive():  # closed early: stop the run, and let it write its model files
            stop.set()
            thread.join()


__all__ = [
    "BUNDLE_DIR", "TRAIN_CONFIG", "ProgressRelay", "TrainProgress", "TrainResult", "bundle_workflow", "output_paths",
    "total_iterations", "train_config", "train_dataset", "train_steps",
]
