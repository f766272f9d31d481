"""What a failing bundle command says last.

MONAI's ``ConfigExpression.evaluate`` wraps every error in ``RuntimeError: Failed to evaluate
ConfigExpression ...``, so a failing ``python -m monai.bundle run`` ends with that wrapper after a long
traceback and the real message sits in the middle. ``install_excepthook`` (the first ``initialize`` step of
our configs) keeps the traceback and adds the innermost message as the final line.
"""

from __future__ import annotations

import sys
from types import TracebackType

# MONAI's config evaluation and its ``apply_transform`` ("applying transform <...ToWorkingGridd object at 0x...>")
WRAPPER_MARKERS = (
    "Failed to evaluate",
    "Failed to instantiate",
    "Component to instantiate must represent",
    "applying transform",
)


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception below MONAI's config-evaluation wrappers (``__cause__`` / ``__context__`` chain)."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = error.__cause__ or error.__context__
        if inner is None or not any(m in str(error) for m in WRAPPER_MARKERS):
            break
        error = inner
    return error


def _hook(previous):
    def excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        previous(kind, value, tb)
        cause = root_cause(value)
        if cause is not value:
            sys.stderr.write(f"\nweakseg-monai error: {type(cause).__name__}: {cause}\n")

    excepthook.weakseg = True  # type: ignore[attr-defined]
    return excepthook


def install_excepthook() -> None:
    """Print the real error as the last line of a failing run (idempotent)."""
    if not getattr(sys.excepthook, "weakseg", False):
        sys.excepthook = _hook(sys.excepthook)
