"""``PredictionWriter``: the Ignite handler of an inference run. It writes each prediction (``save_prediction``),
warns on an implausible object scale, turns SIGTERM into a clean exit while the run lasts, and raises at the end
naming every input that failed (a failed input does not stop the others).

The inference workflow is split by job: inputs (``inference.inputs``), outputs (``inference.outputs``), failure
reports (``inference.failures``), this handler, and the workflow ``inference.json`` composes, built in Python
(``inference.workflow``). The names this module held before the split stay importable from it.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from ignite.engine import Engine, Events
from monai.utils.enums import CommonKeys as Keys

from weakseg_monai.conventions import as_flag
from weakseg_monai.inference.failures import failure_outcome, failure_table
from weakseg_monai.inference.inputs import LoadInputd, input_items, list_inputs, load_input
from weakseg_monai.inference.outputs import (
    OUTPUT_SUFFIX,
    check_output_dir,
    output_stem,
    save_prediction,
    write_boxes_json,
)
from weakseg_monai.inference.predictor import scale_mismatch
from weakseg_monai.networks.family import unwrap

logger = logging.getLogger(__name__)


class PredictionWriter:
    """Ignite handler of an inference evaluator: write each prediction next to its input's geometry
    (``save_prediction``), warn on an implausible object scale, and raise at the end if any input failed.

    Reads ``engine.state.output``: ``image`` (the loaded volumes), ``label`` (the items' ``path``, ``spacing``,
    ``affine``, ``error``, from ``prepare_instance_batch``) and ``pred`` (``WeakSegInferer`` predictions).
    The output folder is checked before the first prediction; while the engine runs, SIGTERM exits through
    the writers' clean-up (no temporary file left behind).
    """

    def __init__(self, output_dir: str | Path, preview: bool = True) -> None:
        self.output_dir = Path(str(output_dir))
        self.preview = as_flag(preview, "preview")
        self.summaries: list[dict] = []
        self.failures: list[str] = []
        self.outcomes: list[tuple[str, str]] = []  # (input, what became of it), in order, for the final table
        self._previous_handler = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write)
        engine.add_event_handler(Events.COMPLETED, self.completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def started(self, engine: Engine) -> None:
        check_output_dir(self.output_dir)
        self.summaries, self.failures, self.outcomes = [], [], []
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, exit_on_signal)

    def write(self, engine: Engine) -> None:
        output = engine.state.output
        for image, item, pred in zip(output[Keys.IMAGE], output[Keys.LABEL], output[Keys.PRED]):
            path = Path(item["path"])
            error = item.get("error") or (pred or {}).get("error")
            number = f"[{len(self.summaries) + len(self.failures) + 1}/{engine.state.epoch_length}]"
            if not error:
                try:
                    array = item.get("input_image", image)[0].cpu().numpy()
                    spacing, affine = item["spacing"], item["affine"]
                    written = save_prediction(pred, array, path, self.output_dir, spacing, affine, self.preview)
                except (OSError, ValueError, RuntimeError) as err:
                    error = str(err)
            if error:
                message, outcome = failure_outcome(path, error)
                logger.error("%s %s", number, message)
                self.failures.append(message)
                self.outcomes.append((str(path), outcome))
                continue
            shape = tuple(pred["instances"].shape[-3:]) if "instances" in pred else None
            warning = scale_mismatch(pred["boxes"], item["spacing"], unwrap(engine.network), shape)
            if warning:
                logger.warning("%s: %s", path, warning)
            n, seconds = len(pred["boxes"]), float(pred.get("seconds", float("nan")))
            logger.info("%s %s: %d instances in %.1f s -> %s", number, path.name, n, seconds, written["instances"])
            self.summaries.append({"image": str(path), "instances": n, "seconds": seconds})
            self.outcomes.append((str(path), f"{n} instances -> {written['instances']}"))

    def restore_signal(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def completed(self, engine: Engine) -> None:
        self.restore_signal()
        if self.failures:
            total = len(self.failures) + len(self.summaries)
            raise RuntimeError(failure_table(len(self.failures), total, self.outcomes))

    def exception_raised(self, engine: Engine, err: Exception) -> None:
        self.restore_signal()
        raise err


def exit_on_signal(signum, _frame):
    """SIGTERM (a scheduler's kill, Ctrl-C's cousin) raises SystemExit, so ``finally`` blocks clean up."""
    raise SystemExit(128 + signum)


def __getattr__(name: str):
    """``inference_evaluator`` and ``run_inference`` (now ``inference.workflow``, which imports this module), still
    importable from here."""
    if name in ("inference_evaluator", "run_inference"):
        from weakseg_monai.inference import workflow

        return getattr(workflow, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "OUTPUT_SUFFIX",
    "LoadInputd",
    "PredictionWriter",
    "check_output_dir",
    "exit_on_signal",
    "failure_outcome",
    "failure_table",
    "input_items",
    "list_inputs",
    "load_input",
    "output_stem",
    "save_prediction",
    "write_boxes_json",
]
