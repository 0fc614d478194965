"""ragim: Retrieval-Augmented Generation of Interpretable Models for clinical tabular data.

>>> import ragim
>>> ragim.__version__
'0.1.0'
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from ragim.errors import ArtifactError, GenerationError, RagimError, ValidationError  # noqa: E402
from ragim.params import ModelParams  # noqa: E402
from ragim.schema import Feature, FeatureSchema  # noqa: E402
from ragim.tasks import Task, TaskCollection  # noqa: E402

# Heavier parts are imported on first use, so `import ragim` stays fast.
_LAZY = {
    "TaskIndex": ("ragim.index", "TaskIndex"),
    "Neighbor": ("ragim.index", "Neighbor"),
    "StatisticalGenerator": ("ragim.generate.statistical", "StatisticalGenerator"),
    "AttentionGenerator": ("ragim.generate.attention", "AttentionGenerator"),
    "LMGenerator": ("ragim.generate.lm", "LMGenerator"),
    "ZeroShotClassifier": ("ragim.estimator", "ZeroShotClassifier"),
}
_SUBMODULES = {
    "datasets",
    "evaluate",
    "rewards",
    "train",
    "models",
    "explain",
    "embed",
    "io",
    "schema",
    "tasks",
    "params",
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"ragim.{name}")
    raise AttributeError(f"module 'ragim' has no attribute {name!r}")


__all__ = [
    "ArtifactError",
    "Feature",
    "FeatureSchema",
    "GenerationError",
    "ModelParams",
    "RagimError",
    "Task",
    "TaskCollection",
    "ValidationError",
    "__version__",
    *_LAZY,
]
