"""What every generator shares: retrieval, provenance and the returned model.

A generator maps a task description (plus retrieved neighbours) to
:class:`~ragim.params.ModelParams`. :class:`Generator` implements the parts that
do not depend on how the parameters are produced: turning queries into
neighbours, attaching provenance, and wrapping the parameters in a ready
:class:`~ragim.models.LogisticModel` or :class:`~ragim.models.GAMModel`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from ragim.errors import ValidationError
from ragim.params import ModelParams
from ragim.tasks import Task

GENERATORS: dict[str, type] = {}


def register_generator(name: str):
    """Class decorator adding a generator to the registry (``"attention"``, ``"lm"``)."""

    def deco(cls):
        GENERATORS[name] = cls
        cls.generator_name = name
        return cls

    return deco


def provenance_records(neighbors, weights) -> list[dict[str, Any]]:
    """JSON-safe provenance: which neighbours shaped a generated model, and how much."""
    return [
        {"task_id": nb.task_id, "description": nb.description, "similarity": round(float(nb.score), 6),
         "weight": round(float(w), 6)}
        for nb, w in zip(neighbors, weights, strict=True)
    ]


class Generator(ABC):
    """Base class: subclasses implement :meth:`generate_params`."""

    generator_name = "base"
    index_ = None

    def _resolve_index(self, index):
        index = index if index is not None else getattr(self, "index_", None)
        if index is None:
            raise ValidationError(
                f"{type(self).__name__} has no index to retrieve from: a generator remembers the "
                "index it was "
                "fitted on only until it is saved; after load(), pass it: generate(description, "
                "index=TaskIndex.load(path))"
            )
        return index

    @abstractmethod
    def generate_params(self, query: str | Task | Sequence[str | Task], index=None, *, k: int | None = None,
                        exclude=None) -> ModelParams | list[ModelParams]:
        """Generated parameters for one query, or a list for a batch of queries."""

    def generate(self, query: str | Task, index=None, *, k: int | None = None, exclude=None):
        """A ready interpretable model for a new task description (zero-shot).

        Returns a :class:`~ragim.models.LogisticModel` or :class:`~ragim.models.GAMModel`
        whose ``provenance`` lists the neighbours that shaped it.
        """
        from ragim.models import model_from_params

        if not isinstance(query, str | Task):
            raise ValidationError("generate() takes one description or Task; use generate_params() for a batch")
        return model_from_params(self.generate_params(query, index, k=k, exclude=exclude))
