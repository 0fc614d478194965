"""What every generator shares: retrieval, provenance and the returned model.

A generator maps a task description (plus retrieved neighbours) to
:class:`~ragim.params.ModelParams`. :class:`Generator` implements the parts that
do not depend on how the parameters are produced: turning queries into
neighbours, attaching provenance, and wrapping the parameters in a ready
:class:`~ragim.models.LogisticModel` or :class:`~ragim.models.GAMModel`.

Every subclass's ``generate_params`` is wrapped (in ``__init_subclass__``) so that each
generated model carries ``metadata["coverage"]``: how well the index covers its description
(:mod:`ragim.domain`), whatever the generator. ``generate`` (and a subclass's own
``generate``) warns with :class:`~ragim.errors.DomainWarning` when the description lies
outside the index's domain.
"""

from __future__ import annotations

import functools
import numbers
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
        {
            "task_id": nb.task_id,
            "description": nb.description,
            "similarity": round(float(nb.score), 6),
            "weight": round(float(w), 6),
        }
        for nb, w in zip(neighbors, weights, strict=True)
    ]


def heads_problems(hidden: Any, heads: Any) -> list[str]:
    """Why an attention width ``hidden`` cannot be split over ``heads`` heads: ``[]`` when it
    can, or when either is not a positive integer (the field checks report that).

    >>> heads_problems(64, 5), heads_problems(64, 4), heads_problems(64, 0)
    (['hidden (64) must be divisible by heads (5)'], [], [])
    """
    sizes = (hidden, heads)
    if not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in sizes
    ):
        return []
    return [f"hidden ({hidden}) must be divisible by heads ({heads})"] if hidden % heads else []


def _with_coverage(generate_params):
    """``generate_params`` that also attaches the index's coverage of each query."""

    @functools.wraps(generate_params)
    def wrapper(self, query, index=None, *args, exclude=None, **kwargs):
        from ragim.domain import attach

        out = generate_params(self, query, index, *args, exclude=exclude, **kwargs)
        target = index if index is not None else getattr(self, "index_", None)
        if target is None or not hasattr(target, "search_vectors"):
            return out  # no index to measure coverage against (e.g. a fixed model)
        queries = list(query) if isinstance(out, list) else query
        return attach(out, queries, target, exclude=exclude)

    wrapper.__wrapped_for_coverage__ = True
    return wrapper


def _warn_out_of_domain(generate):
    """``generate`` that warns when the model's description is outside the index's domain."""

    @functools.wraps(generate)
    def wrapper(self, query, *args, **kwargs):
        from ragim.domain import check

        model = generate(self, query, *args, **kwargs)
        text = query.description if isinstance(query, Task) else query
        check(model.params_, description=text, stacklevel=2)
        return model

    wrapper.__wrapped_for_coverage__ = True
    return wrapper


class Generator(ABC):
    """Base class: subclasses implement :meth:`generate_params`."""

    generator_name = "base"
    index_ = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("generate_params")
        if (
            own is not None
            and not getattr(own, "__isabstractmethod__", False)
            and not getattr(own, "__wrapped_for_coverage__", False)
        ):
            cls.generate_params = _with_coverage(own)
        gen = cls.__dict__.get("generate")
        if gen is not None and not getattr(gen, "__wrapped_for_coverage__", False):
            cls.generate = _warn_out_of_domain(gen)

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

    def _check_fitted_on(self, index, fitted: bool) -> None:
        """Raise unless the generator is fitted and ``index`` has the model family, parameters
        and embedder it was fitted with (``model_kind_``, ``param_names_``,
        ``embedder_identity_``)."""
        from ragim.embed import check_identity
        from ragim.params import param_names

        name = type(self).__name__
        if not fitted:
            raise ValidationError(f"this {name} is not fitted; call fit(index) or load() first")
        names = param_names(index.model, index.schema)
        if index.model != self.model_kind_ or names != self.param_names_:
            raise ValidationError(
                f"the index ({index.model}, {len(names)} params) does not match the generator "
                f"({self.model_kind_}, {len(self.param_names_)} params); use the index it was "
                "fitted on"
            )
        check_identity(self.embedder_identity_, index.embedder)

    @abstractmethod
    def generate_params(
        self,
        query: str | Task | Sequence[str | Task],
        index=None,
        *,
        k: int | None = None,
        exclude=None,
    ) -> ModelParams | list[ModelParams]:
        """Generated parameters for one query, or a list for a batch of queries."""

    def generate(self, query: str | Task, index=None, *, k: int | None = None, exclude=None):
        """A ready interpretable model for a new task description (zero-shot).

        Returns a :class:`~ragim.models.LogisticModel` or :class:`~ragim.models.GAMModel`
        whose ``provenance`` lists the neighbours that shaped it and whose
        ``params_.metadata["coverage"]`` says how well the index covers the description.

        Warns
        -----
        DomainWarning
            When the description is outside the index's domain (:func:`ragim.domain.check`).
        """
        from ragim.domain import check
        from ragim.models import model_from_params

        if not isinstance(query, str | Task):
            raise ValidationError(
                "generate() takes one description or Task; use generate_params() for a batch"
            )
        model = model_from_params(self.generate_params(query, index, k=k, exclude=exclude))
        check(model.params_, description=query.description if isinstance(query, Task) else query)
        return model
