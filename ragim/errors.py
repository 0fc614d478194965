"""The exception hierarchy of ragim.

Every error that ragim raises on purpose derives from :class:`RagimError`, so a
service can catch one type. The subclasses also derive from the matching
built-in exception (``ValueError``, ``OSError``) so that generic handlers keep
working.

Examples
--------
>>> from ragim.errors import ValidationError, RagimError
>>> issubclass(ValidationError, RagimError) and issubclass(ValidationError, ValueError)
True
"""

from __future__ import annotations

import inspect
import os
import sys


class RagimError(Exception):
    """Base class of every error raised by ragim."""


class ValidationError(RagimError, ValueError):
    """Input data, parameters or configuration are invalid.

    The message names every offending item and, where possible, the fix.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class ArtifactError(RagimError, OSError):
    """An artifact directory is missing, damaged, foreign or of an unknown version."""


class GenerationError(RagimError, RuntimeError):
    """A generator produced output that cannot be turned into a valid model."""


class DependencyError(RagimError, ImportError):
    """An optional dependency (for example FAISS) is not installed."""


class DataWarning(UserWarning):
    """Input was used, but part of it was ignored or changed: categorical levels the model
    does not know (scored as none of the levels), invisible characters removed from a description,
    text beyond what the embedder reads. The message counts what was affected."""


class ExcludedAfterFitWarning(DataWarning):
    """A fitted generator left out tasks it was fitted on (``exclude=``, or tasks removed from
    the index since): the models it generates no longer learn from them, but the few numbers
    it validated across the whole index (stack weights, intercept shift, interval scale,
    adaptation policy) saw them. Fine for a prompt's prior or an explanation; for a held-out
    evaluation build the index without those tasks, as :mod:`ragim.evaluate` does."""


class AdaptationWarning(UserWarning):
    """Few-shot adaptation changed the model a lot, or worked from rows that can say little:
    a coefficient crossed zero, the log-odds scale moved by more than a set factor, or the
    labelled rows hold one class only. The fitted estimator's ``adaptation_report_`` records
    the same."""


class DomainWarning(UserWarning):
    """A description lies outside what the index covers: its nearest indexed task is less
    similar than the index's own tasks are to each other (see :mod:`ragim.domain`)."""


class IntervalWarning(UserWarning):
    """A bootstrap confidence interval is not what it claims to be: fewer than the stated
    share of the requested resamples gave a value, it is unbounded, or it does not contain
    its own point estimate (see :func:`ragim.validation.score_predictions`). The message
    names the metric and counts the resamples."""


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a :func:`warnings.warn` call, made by the caller of this
    function, point at the first frame outside the ragim package and scikit-learn's wrappers
    (``fit`` runs inside them): the user's line, however deep in ragim the warning is raised
    (pandas' ``find_stack_level`` does the same). Without such a frame (a worker process), the
    first frame outside ragim, else the outermost.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("here", DataWarning, stacklevel=user_stacklevel())
    >>> caught[0].filename.startswith("<doctest")
    True
    """
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    sklearn = sys.modules.get("sklearn")  # its wrappers around fit/transform pass through too
    wrappers = os.path.dirname(os.path.abspath(sklearn.__file__)) + os.sep if sklearn else None
    frame = inspect.currentframe().f_back  # the caller, which calls warnings.warn
    level, outside = 1, None
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(package):
            if wrappers is None or not filename.startswith(wrappers):
                return level
            outside = level if outside is None else outside
        frame = frame.f_back
        # warnings.warn does not count the import machinery's frames (a warning raised while a
        # module is imported), so neither does this
        while frame is not None and _import_machinery(frame.f_code.co_filename):
            frame = frame.f_back
        level += 1
    return outside if outside is not None else level - 1  # no caller outside: the outermost


def _import_machinery(filename: str) -> bool:
    """The frames warnings.warn skips when it counts ``stacklevel`` (its ``_is_internal_frame``)."""
    return "importlib" in filename and "_bootstrap" in filename


def name_some(items, n: int = 3, *, sep: str = ", ") -> str:
    """The first ``n`` of ``items`` joined by ``sep``, with ``sep`` and "..." when there are
    more: how a message or warning names a list of tasks (or, with ``sep="/"``, of codes).

    >>> name_some(["a", "b"]), name_some(["a", "b", "c", "d"]), name_some("FMU", 2, sep="/")
    ('a, b', 'a, b, c, ...', 'F/M/...')
    """
    items = [str(t) for t in items]
    return sep.join(items[:n]) + (f"{sep}..." if len(items) > n else "")


__all__ = [
    "RagimError",
    "ValidationError",
    "ArtifactError",
    "GenerationError",
    "DependencyError",
    "DataWarning",
    "ExcludedAfterFitWarning",
    "AdaptationWarning",
    "DomainWarning",
    "IntervalWarning",
    "name_some",
    "user_stacklevel",
]
