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

import contextlib
import functools
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np

from ragim.checks import config_from, repeated
from ragim.errors import DataWarning, ValidationError, name_some, user_stacklevel
from ragim.params import ModelParams, param_names
from ragim.schema import FeatureSchema
from ragim.tasks import Task

GENERATORS: dict[str, type] = {}

#: the saved index the command line generates from, while it does (:func:`advice_for_cli`):
#: advice to refit a generator is then a command, not Python
_CLI_INDEX: ContextVar[str | None] = ContextVar("ragim_cli_index", default=None)


@contextlib.contextmanager
def advice_for_cli(index_path: str) -> Iterator[None]:
    """Within it, a generator's advice to refit or retrain names the ``ragim`` command that
    does it on the index saved at ``index_path`` (:meth:`Generator.refit_advice`)."""
    token = _CLI_INDEX.set(str(index_path))
    try:
        yield
    finally:
        _CLI_INDEX.reset(token)


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


def mix_provenance(parts: Sequence[tuple[float, Sequence[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """The provenance of a model mixed from others: ``parts`` pairs each component's share of
    the mix with its provenance records. A task's weight is the sum over the components of
    the share times its weight there (a task in two components adds up); its ``description``
    and ``similarity`` are those of the first record naming it. Tasks of zero weight are left
    out; the records come largest weight (in size) first, with the fields of
    :func:`provenance_records`. Shares that sum to 1 over components whose weights sum to 1
    give weights that sum to 1.

    >>> base = [{"task_id": "a", "description": "A", "similarity": 0.9, "weight": 0.6},
    ...         {"task_id": "b", "description": "B", "similarity": 0.8, "weight": 0.4}]
    >>> attn = [{"task_id": "c", "description": "C", "similarity": 0.7, "weight": 1.0}]
    >>> [(r["task_id"], r["weight"]) for r in mix_provenance([(0.9, base), (0.1, attn)])]
    [('a', 0.54), ('b', 0.36), ('c', 0.1)]
    """
    out: dict[str, dict[str, Any]] = {}
    for share, records in parts:
        for r in records:
            rec = out.setdefault(r["task_id"], {**r, "weight": 0.0})
            rec["weight"] += float(share) * float(r["weight"])
    recs = [{**r, "weight": round(r["weight"], 6)} for r in out.values()]
    return sorted((r for r in recs if r["weight"] != 0), key=lambda r: -abs(r["weight"]))


def fit_state(gen: Generator) -> dict[str, Any]:
    """What a fitted generator was fitted on, as its saved ``state.json`` holds it:
    ``model_kind``, ``param_names``, ``schema`` (:meth:`FeatureSchema.to_dict`), ``embedder``
    (the embedder's identity), ``index_ids`` (the ids of the tasks the index held, when
    known) and ``index_digests`` (a hash of each one's parameters: :func:`fitted_tasks_state`).
    :func:`read_fit_state`, :func:`read_fitted_ids` and :func:`read_fitted_digests` read it
    back."""
    return {
        "model_kind": gen.model_kind_,
        "param_names": gen.param_names_,
        "schema": gen.schema_.to_dict(),
        "embedder": gen.embedder_identity_,
        **fitted_tasks_state(gen),
    }


def fitted_tasks_state(gen: Generator) -> dict[str, Any]:
    """``index_ids`` and ``index_digests`` (:attr:`Generator.fitted_digests_` in the order of
    the ids) as ``state.json`` holds them; empty when they are not known."""
    ids = getattr(gen, "fitted_ids_", None)
    if ids is None:
        return {}
    digests = getattr(gen, "fitted_digests_", None)
    out: dict[str, Any] = {"index_ids": list(ids)}
    if digests is not None:
        out["index_digests"] = [digests.get(t, "") for t in ids]
    return out


def record_fit_state(gen: Generator, index: Any) -> None:
    """Make ``index`` what ``gen`` was fitted on: its ``model_kind_``, ``schema_``,
    ``param_names_`` and ``embedder_identity_`` (the fields :func:`fit_state` saves) become the
    index's, ``fitted_ids_`` the ids of the tasks it holds and ``fitted_digests_`` a hash of
    each one's parameters (:meth:`ragim.index.TaskIndex.task_digests`; what
    :meth:`Generator.check_index_unchanged` compares the index with at generation); every
    generator's training calls it.

    >>> from types import SimpleNamespace
    >>> from ragim import TaskIndex, datasets
    >>> index = TaskIndex.build(datasets.synthetic_family(n_tasks=4, n_features=2, seed=0),
    ...                         embedder="hashing", progress=False)
    >>> gen = SimpleNamespace()
    >>> record_fit_state(gen, index)
    >>> gen.model_kind_, gen.param_names_, gen.embedder_identity_["kind"], len(gen.fitted_ids_)
    ('logistic', ['intercept', 'x01', 'x02'], 'hashing', 4)
    """
    gen.model_kind_, gen.schema_ = index.model, index.schema
    gen.param_names_ = param_names(index.model, index.schema)
    gen.embedder_identity_ = index.embedder.identity
    gen.fitted_ids_ = index.ids
    gen.fitted_digests_ = index.task_digests()


def read_fitted_ids(state: Any) -> list[str] | None:
    """The ids of the tasks a saved generator was fitted on (``state.json``'s ``index_ids``),
    or None for a generator saved before they were kept (its index is then not checked).

    Raises
    ------
    ValueError
        ``index_ids`` is not a list of strings; the loader names the file.

    >>> read_fitted_ids({"index_ids": ["a", "b"]}), read_fitted_ids({})
    (['a', 'b'], None)
    """
    ids = state.get("index_ids")
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(t, str) for t in ids):
        raise ValueError("its index_ids must be a list of task ids")
    if twice := repeated(ids):  # an index holds each task once
        raise ValueError(f"its index_ids list {name_some(twice)} more than once")
    return ids


def read_fitted_digests(state: Any) -> dict[str, str] | None:
    """Task id -> the hash of its parameters when a saved generator was fitted
    (``state.json``'s ``index_digests``, beside ``index_ids``), or None for a generator saved
    before they were kept (a task replaced under the same id is then not seen).

    Raises
    ------
    ValueError
        ``index_digests`` is not a list of strings, one per id; the loader names the file.

    >>> read_fitted_digests({"index_ids": ["a", "b"], "index_digests": ["1f", "2e"]})
    {'a': '1f', 'b': '2e'}
    >>> read_fitted_digests({"index_ids": ["a"]}) is None
    True
    """
    ids, digests = read_fitted_ids(state), state.get("index_digests")
    if ids is None or digests is None:
        return None
    if (
        not isinstance(digests, list)
        or len(digests) != len(ids)
        or not all(isinstance(d, str) for d in digests)
    ):
        raise ValueError("its index_digests must be a list of strings, one per index id")
    return dict(zip(ids, digests, strict=True))


def read_fit_state(state: Any) -> tuple[str, list[str], FeatureSchema, Any]:
    """``(model_kind, param_names, schema, embedder identity)`` from a saved ``state.json``
    (:func:`fit_state`'s fields).

    Raises
    ------
    KeyError, TypeError, ValueError or ValidationError
        A field is missing or malformed, or the parameter names are not the schema's; the
        loader names the file.

    >>> import pandas as pd
    >>> from ragim.schema import Feature
    >>> schema = FeatureSchema([Feature("age", "continuous")]).fit(pd.DataFrame({"age": [50.0]}))
    >>> saved = {"model_kind": "logistic", "param_names": ["intercept", "age"],
    ...          "schema": schema.to_dict(), "embedder": {"kind": "hashing"}}
    >>> kind, names, _, embedder = read_fit_state(saved)
    >>> kind, names, embedder
    ('logistic', ['intercept', 'age'], {'kind': 'hashing'})
    >>> read_fit_state({**saved, "param_names": ["intercept"]})
    Traceback (most recent call last):
    ...
    ValueError: its 1 param_names are not the 2 of its schema
    """
    model_kind, names = state["model_kind"], list(state["param_names"])
    try:
        schema = FeatureSchema.from_dict(state["schema"])
    except ValidationError as exc:
        raise ValidationError(f"schema: {exc}") from None
    expected = param_names(model_kind, schema)
    if names != expected:
        raise ValueError(f"its {len(names)} param_names are not the {len(expected)} of its schema")
    return model_kind, names, schema, state["embedder"]


def config_with(cls: type, config: Any, overrides: dict[str, Any]) -> Any:
    """A generator's config: a new ``cls`` with the fields of ``config`` (a ``cls``, a dict of
    its fields, or None for the defaults) and the keyword ``overrides``, checked by ``cls``
    (``AttentionGenerator(config, k=5)``); :func:`ragim.checks.config_from`."""
    return config_from(cls, config, overrides)


def _with_coverage(generate_params):
    """``generate_params`` that also attaches the index's coverage of each query."""

    @functools.wraps(generate_params)
    def wrapper(self, query, index=None, *args, exclude=None, **kwargs):
        from ragim.domain import attach
        from ragim.index import normalize_exclude

        exclude = normalize_exclude(exclude)  # read more than once: by the search and here
        if not isinstance(query, str | Task | bytes | bytearray) and isinstance(query, Iterable):
            query = list(query)  # a generator of queries is read twice too
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
        check(model.params_, description=text)
        return model

    wrapper.__wrapped_for_coverage__ = True
    return wrapper


def check_task_index(index: Any, what: str = "index") -> None:
    """Raise a :class:`~ragim.errors.ValidationError` naming the fix unless ``index`` is a
    :class:`~ragim.index.TaskIndex` (a saved index's folder must be loaded first)."""
    from pathlib import Path

    from ragim.index import TaskIndex

    if isinstance(index, TaskIndex):
        return
    hint = (
        f"; load the saved one first: TaskIndex.load({str(index)!r})"
        if isinstance(index, str | Path)
        else ""
    )
    raise ValidationError(f"{what} must be a TaskIndex, got {type(index).__name__}{hint}")


class Generator(ABC):
    """Base class. A subclass implements ``_is_fitted`` and ``_generate`` (the parameters of a
    batch of embedded queries), which :meth:`generate_params` calls after resolving the index,
    checking it and embedding the queries; or it overrides :meth:`generate_params`."""

    generator_name = "base"
    index_ = None
    #: the ids of the tasks the index held when the generator was fitted (None: not known,
    #: e.g. a generator saved before they were kept)
    fitted_ids_: list[str] | None = None
    #: task id -> a hash of its parameters when fitted (:meth:`TaskIndex.task_digests
    #: <ragim.index.TaskIndex.task_digests>`; None: not known): a task replaced under the
    #: same id counts as removed and added
    fitted_digests_: dict[str, str] | None = None
    #: whether generation leaves out tasks the index no longer holds by refitting without
    #: them (:meth:`check_index_unchanged`); otherwise such an index is refused
    leaves_out_removed = False
    #: how to refit it on an index, in Python and with the ``ragim`` command (None: no command
    #: trains it; ``INDEX`` stands for the index's path)
    refit_python = "refit it on this index (fit(index))"
    refit_command: str | None = None

    def refit_advice(self) -> str:
        """How to refit this generator on the index it is used with: the ``ragim`` command
        inside :func:`advice_for_cli`, else Python."""
        path = _CLI_INDEX.get()
        if path is not None and self.refit_command is not None:
            return self.refit_command.replace("INDEX", path)
        return self.refit_python + (" in Python" if path is not None else "")

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
        check_task_index(index)
        return index

    def _check_layout(self, index, trained: str = "fitted") -> None:
        """Raise unless ``index`` has the model family and parameters the generator was
        ``trained`` ("fitted", "trained") on (``model_kind_``, ``param_names_``)."""
        names = param_names(index.model, index.schema)
        if index.model != self.model_kind_ or names != self.param_names_:
            own = list(self.param_names_)
            at = [i for i in range(max(len(names), len(own))) if names[i : i + 1] != own[i : i + 1]]
            differ = (
                f"; its parameters differ from the generator's at {len(at)} place(s), first: "
                + ", ".join(
                    f"{names[i] if i < len(names) else '(none)'} where the generator has "
                    f"{own[i] if i < len(own) else '(none)'}"
                    for i in at[:3]
                )
                if at
                else ""
            )
            raise ValidationError(
                f"the index ({index.model}, {len(names)} params) does not match the generator "
                f"({self.model_kind_}, {len(own)} params){differ}; use the index it was "
                f"{trained} on"
            )

    def _check_fitted_on(self, index, fitted: bool) -> None:
        """Raise unless the generator is fitted and ``index`` has the model family, parameters
        and embedder it was fitted with (``model_kind_``, ``param_names_``,
        ``embedder_identity_``)."""
        from ragim.embed import check_identity

        name = type(self).__name__
        if not fitted:
            raise ValidationError(f"this {name} is not fitted; call fit(index) or load() first")
        self._check_layout(index)
        check_identity(self.embedder_identity_, index.embedder, generator=type(self).__name__)

    def index_changes(self, index) -> tuple[list[str], list[str]]:
        """``(removed, added)``: the tasks the generator was fitted on that ``index`` no longer
        holds (``index.remove()``, or an index built without them), and the tasks ``index``
        holds that it was not fitted on (``index.add()``). A task removed and added again under
        the same id with other parameters (:attr:`fitted_digests_`) is in both. Both empty when
        the fitted tasks are not known (:attr:`fitted_ids_` is None)."""
        fitted = self.fitted_ids_
        if fitted is None:
            return [], []
        ids = index.ids
        digests = self.fitted_digests_
        changed: set[str] = set()
        if digests is not None:
            now_digests = index.task_digests()
            changed = {
                t for t, d in digests.items() if t in now_digests and d and now_digests[t] != d
            }
        if ids == fitted and not changed:
            return [], []
        now, then = set(ids), set(fitted) - changed
        return [t for t in fitted if t not in now or t in changed], [
            t for t in ids if t not in then
        ]

    def _rescaled(self, index) -> bool:
        """Whether ``index`` scales the features otherwise than the index the generator was
        fitted on (an index rebuilt on other tasks: every task's parameters are refitted)."""
        schema = getattr(self, "schema_", None)
        return schema is not None and index.schema != schema

    def check_schema_unchanged(self, index) -> None:
        """Raise unless ``index`` has the fitted feature schema the generator was fitted with
        (``schema_``; not checked when it is not known).

        The schema turns a patient's values into the model's terms (medians, means, scales,
        bins), so a model learned over one schema means something else over another: a
        generator fitted on an index rebuilt since, or either of them edited (a generator's
        ``state.json`` keeps the schema it was fitted with), is refused in one line naming
        the first difference.
        """
        from ragim.schema import schema_difference

        schema = getattr(self, "schema_", None)
        if schema is None or index.schema == schema:
            return
        raise ValidationError(
            f"the index's feature schema differs from the one this {type(self).__name__} was "
            f"fitted with ({schema_difference(index.schema, schema, 'the index', 'the generator')}"
            f"), so its models would read patients' values otherwise than the index's tasks "
            f"do; use the index it was fitted on, or {self.refit_advice()}"
        )

    def check_index_unchanged(self, index) -> list[str]:
        """Compare ``index`` with the tasks the generator was fitted on (:meth:`index_changes`)
        and return the tasks it no longer holds, which a generator that
        :attr:`leaves_out_removed` treats as excluded.

        Raises
        ------
        ValidationError
            When ``index`` no longer holds tasks the generator was fitted on and it cannot
            leave them out (it learned from them): refit it on this index; or when its feature
            schema is not the one the generator was fitted with (:meth:`check_schema_unchanged`).

        Warns
        -----
        DataWarning
            When ``index`` holds tasks added since the generator was fitted.
        """
        removed, added = self.index_changes(index)
        name = type(self).__name__
        advice = self.refit_advice()
        removed_set = set(removed)
        changed = [t for t in added if t in removed_set]
        what = "added" if not changed else "changed" if changed == added else "added or changed"
        rebuilt = bool(changed) and self._rescaled(index)
        if removed and not self.leaves_out_removed:
            changed_set = set(changed)
            gone = [t for t in removed if t not in changed_set]
            new = [t for t in added if t not in removed_set]
            if rebuilt:  # the scaling is learned from every task's rows: each was refitted
                raise ValidationError(
                    f"the index was rebuilt since this {name} was fitted: its feature scaling, "
                    "learned from the tasks' rows, differs, so every task was refitted"
                    + (
                        f"; it no longer holds {len(gone)} task(s) ({name_some(gone)})"
                        if gone
                        else ""
                    )
                    + (f"; it holds {len(new)} new task(s) ({name_some(new)})" if new else "")
                    + f"; {advice}"
                )
            raise ValidationError(
                f"the index no longer holds {len(gone)} task(s) this {name} was fitted on "
                f"({name_some(gone)})"
                + (
                    f" and holds {len(changed)} changed since ({name_some(changed)})"
                    if changed
                    else ""
                )
                + f" and it learned from them; {advice}"
                if gone
                else f"the index holds {len(changed)} task(s) changed since this {name} was "
                f"fitted on them ({name_some(changed)}: removed and added again with other data) "
                f"and it learned from their old models; {advice}"
            )
        self.check_schema_unchanged(index)
        if added:
            warnings.warn(
                f"the index holds {len(added)} task(s) {what} since this {name} was fitted "
                f"({name_some(added)}); it was not fitted on them"
                + (" (their old models are left out)" if changed else "")
                + f": {advice} to learn from them",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
        return removed

    def generate_params(
        self,
        query: str | Task | Sequence[str | Task],
        index=None,
        *,
        k: int | None = None,
        exclude=None,
        **options: Any,
    ) -> ModelParams | list[ModelParams]:
        """Generated parameters with provenance for one query, or a list for a batch of queries.

        Parameters
        ----------
        query : a description, a Task (its description is used) or a list of either.
        index : the TaskIndex to retrieve from (default: the one it was fitted on).
        k : neighbours (default: the generator's own).
        exclude : task ids or a predicate over index records (e.g.
            :func:`ragim.index.leak_free`), or one of these per query.
        options : the generator's own keywords: ``uncertainty`` of the attention and
            statistical generators, ``own`` and ``own_rows`` of rag-im-2024, ``rerank``,
            ``reward_model``, ``num_candidates``/``n`` and ``temperature`` of the LM generator
            (its class docstring).

        Returns
        -------
        ModelParams (a list for a batch) whose ``metadata`` names the generator, the neighbours
        that shaped it (``provenance``), the query's ``task_id`` when the query is a Task, and
        how well the index covers the description (``coverage``).

        Raises
        ------
        ValidationError
            An unfitted generator, an index of another model family, schema or embedder, an
            index that no longer holds tasks the generator learned from
            (:meth:`check_index_unchanged`), a bad ``k`` or option, or no neighbour left after
            the exclusions.

        Warns
        -----
        DataWarning
            When the index holds tasks added since the generator was fitted.
        """
        fitted = self._is_fitted()
        if not fitted:  # before the index: an unfitted generator has none to blame
            self._check_fitted_on(index, fitted)
        index = self._resolve_index(index)
        self._check_fitted_on(index, fitted)
        self.check_index_unchanged(index)
        vectors, items, single = index.embed_queries(query)
        out = self._generate(index, vectors, items, single, k=k, exclude=exclude, **options)
        for params, item in zip(out, items, strict=True):
            if isinstance(item, Task):
                params.metadata["task_id"] = item.task_id
        return out[0] if single else out

    generate_params = _with_coverage(generate_params)

    @abstractmethod
    def save(self, path) -> Any:
        """Save the fitted generator atomically into the folder ``path`` (no pickle); returns
        the folder."""

    @abstractmethod
    def _is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has run (always True for a generator that
        needs no fitting)."""

    @abstractmethod
    def _generate(
        self, index, vectors: np.ndarray, items: list, single: bool, *, k, exclude, **options
    ) -> list[ModelParams]:
        """One ModelParams per query for :meth:`generate_params`: ``vectors`` (Q, E) are the
        embedded ``items`` (descriptions or Tasks; ``single``: one query was given), ``index``
        is checked against what the generator was fitted on."""

    def _search(self, index, vectors: np.ndarray, k: int, exclude) -> list:
        """The neighbours of each query (:meth:`TaskIndex.search_vectors`); a ValidationError
        when the exclusions leave a query none."""
        hits = index.search_vectors(vectors, k, exclude=exclude)
        empty = [i for i, hs in enumerate(hits) if not hs]
        if empty:
            raise ValidationError(
                f"no neighbours left after exclusions for queries {empty[:5]}; relax `exclude` "
                "or grow the index"
            )
        return hits

    def generate(
        self, query: str | Task, index=None, *, k: int | None = None, exclude=None, **options
    ):
        """A ready interpretable model for a new task description (zero-shot).

        Returns a :class:`~ragim.models.LogisticModel` or :class:`~ragim.models.GAMModel`
        whose ``provenance`` lists the neighbours that shaped it and whose
        ``params_.metadata["coverage"]`` says how well the index covers the description.
        ``options`` go to :meth:`generate_params` (e.g. the LM generator's ``rerank``).

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
        params = self.generate_params(query, index, k=k, exclude=exclude, **options)
        model = model_from_params(params)
        check(model.params_, description=query.description if isinstance(query, Task) else query)
        return model


#: Names that moved to :mod:`ragim.generate.hypernetwork` (0.2); importing them from here still
#: works, with a DeprecationWarning.
MOVED_TO_HYPERNETWORK = (
    "HypernetworkConfig",
    "SavedNet",
    "heads_problems",
    "read_saved_net",
    "weights_mismatch_error",
)


def __getattr__(name: str) -> Any:
    if name in MOVED_TO_HYPERNETWORK:
        from ragim.generate import hypernetwork  # imported late: it imports this module

        warnings.warn(
            f"ragim.generate.base.{name} moved to ragim.generate.hypernetwork.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(hypernetwork, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
