"""TaskIndex: retrieval of prior tasks and their fitted interpretable models.

``TaskIndex.build`` fits one interpretable model per task (or accepts given
parameters), embeds every description, and stores vectors, :class:`ModelParams`,
descriptions, metadata and fit statistics. ``search`` turns a description (or a
Task, or a batch of either) into :class:`Neighbor` records, with exclusions that
make zero-shot evaluation leak-free.

Examples
--------
>>> from ragim import TaskIndex, datasets
>>> tasks = datasets.synthetic_family(n_tasks=30, n_features=4, seed=0)
>>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
>>> hits = index.search(tasks.descriptions[0], k=3, exclude=[tasks.ids[0]])
>>> len(hits), hits[0].task_id != tasks.ids[0]
(3, True)
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ragim.canonical import (
    canonical_level,
    invisible_characters,
    strip_invisible,
    warn_patient_id_near_misses,
    warn_shared_descriptions,
)
from ragim.checks import check_int, check_loaded, setting
from ragim.data_checks import TrainingRowChecks, warn_added_rows
from ragim.embed import (
    MAX_EMBED_DIM,
    Embedder,
    check_identity,
    embedder_from_identity,
    get_embedder,
)
from ragim.errors import ArtifactError, DataWarning, ValidationError, name_some, user_stacklevel
from ragim.index_records import Record, RecordStore
from ragim.params import ModelParams, param_names
from ragim.schema import FeatureSchema
from ragim.tasks import (
    Task,
    TaskCollection,
    canonical_metadata,
    check_patient_id_rows,
    patient_id_set,
)
from ragim.vector_store import (
    STORAGES,
    TRAIN_SIZE,
    VectorStore,
    auto_factory,
    check_index_file,
    needs_training,
)

FORMAT = "ragim.task-index"
#: tasks fitted, embedded and added at a time by :meth:`TaskIndex.build`
CHUNK_TASKS = 65_536
Exclude = Iterable[str] | Callable[[Record], bool] | None


#: records whose descriptions a loaded index embeds again, on the embedder's first use, to
#: check them against their stored vectors; the cosine they must reach with an exact index
#: (float32, and a GPU and a CPU embed slightly differently) and with a compressed one
VERIFY_ROWS = 3
EXACT_COSINE = 0.999
LOSSY_COSINE = 0.9


@dataclass
class IndexConfig:
    """Configuration of a :class:`TaskIndex` (saved as ``config.json``)."""

    model: str = setting("logistic", "model family: 'logistic', 'gam' or another registered one")
    index: str = setting("auto", "'auto', 'Flat' or a FAISS factory string")
    nprobe: int = setting(32, "IVF lists visited per query")
    ef_search: int = setting(128, "HNSW search breadth")
    factory: str = setting("", "the FAISS index actually built (set at build)")
    excluded: dict[str, list[str]] = field(
        default_factory=dict,
        metadata={
            "help": "tasks deliberately left out of the index: metadata key -> values "
            "(ragim index build --exclude)"
        },
    )
    storage: str = setting("memory", "'memory', or 'ondisk' (IVF lists in index.ivfdata)")

    def __post_init__(self):
        # the registry; ragim.models loads on first use, installed plugin families on a miss
        from ragim.models.family import FAMILIES, PLUGIN_GROUP, family_of

        try:
            family_of(self.model)
        except ValidationError:
            names = [repr(k) for k in FAMILIES]
            choices = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
            raise ValidationError(
                f"model must be {choices}, got {self.model!r} (a custom family is known once "
                "registered: import the module that calls register_model_family, or install a "
                f"package that declares it under the {PLUGIN_GROUP!r} entry-point group)"
            ) from None
        if not isinstance(self.excluded, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
            for k, v in self.excluded.items()
        ):
            raise ValidationError(
                f"excluded must map metadata keys to lists of values, got {self.excluded!r}"
            )
        if self.storage not in STORAGES:
            raise ValidationError(f"storage must be one of {list(STORAGES)}, got {self.storage!r}")
        for name in ("nprobe", "ef_search"):
            check_int(getattr(self, name), name, ge=1)
        for name in ("index", "factory"):
            if not isinstance(getattr(self, name), str):
                raise ValidationError(
                    f"{name} must be a FAISS factory string, got {getattr(self, name)!r}"
                )

    def _store_options(self, device: str | None) -> dict[str, Any]:
        """The :class:`VectorStore` keywords this configuration sets (its search breadths and
        storage), with ``device``: the same when the index is built and when it is loaded."""
        return dict(
            nprobe=self.nprobe, ef_search=self.ef_search, device=device, storage=self.storage
        )


@dataclass
class Neighbor:
    """One retrieved task: its id, similarity score, description, parameters and metadata."""

    task_id: str
    score: float
    description: str
    params: ModelParams
    metadata: dict
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "task_id": self.task_id,
            "score": self.score,
            "description": self.description,
            "metadata": {k: v for k, v in self.metadata.items() if k != "patient_ids"},
            "stats": self.stats,
            "params": self.params.as_dict(decimals=4),
        }


# ---------------------------------------------------------------------- exclusion predicates
def _target_info(target: Task | Record) -> tuple[str | None, dict]:
    if isinstance(target, Task):
        return target.task_id, target.metadata
    return target.get("task_id"), target.get("metadata", {})


def same_group(target: Task | Record, key: str) -> Callable[[Record], bool]:
    """Predicate: records whose ``metadata[key]`` is the target's (e.g. the same site), comparing
    group codes in canonical form (``"01"``, ``1`` and ``1.0`` are one site)."""
    _, meta = _target_info(target)
    if key not in meta:
        raise ValidationError(f"target has no metadata {key!r}; cannot exclude by it")
    value = canonical_level(meta[key])
    return lambda rec: canonical_level(rec["metadata"].get(key)) == value


def shares_patients(target: Task | Record) -> Callable[[Record], bool]:
    """Predicate: the target itself and every record that shares a patient id with it.

    Ids compare in canonical text form (:func:`~ragim.canonical.canonical_id`); records of a
    :class:`TaskIndex` hold them in that form already.
    """
    tid, meta = _target_info(target)
    pids = patient_id_set(meta)
    return lambda rec: (
        rec["task_id"] == tid
        or (bool(pids) and not pids.isdisjoint(rec["metadata"].get("patient_ids") or ()))
    )


def _stored_ids(rec: dict):
    """A record's patient ids as stored: canonical text already (older indices' integer ids
    are made canonical through :func:`patient_id_set`)."""
    ids = rec["metadata"].get("patient_ids") or ()
    return ids if all(isinstance(i, str) for i in ids) else patient_id_set(rec["metadata"])


def leak_free(target: Task | Record, *, group: str | None = None) -> Callable[[Record], bool]:
    """Predicate for zero-shot use: excludes the target, every task sharing its patients,
    and, with ``group`` (e.g. ``"site"``), every task of the target's group."""
    preds = [shares_patients(target)] + ([same_group(target, group)] if group else [])
    return lambda rec: any(p(rec) for p in preds)


def as_predicate(exclude: Exclude) -> Callable[[Record], bool] | None:
    """``exclude`` (None, task ids, one id, or a predicate over records) as a predicate or None."""
    if exclude is None:
        return None
    if callable(exclude):
        return exclude
    ids = frozenset(exclude_ids(exclude))
    return lambda rec: rec["task_id"] in ids


def exclude_ids(exclude: str | Iterable[str]) -> list[str]:
    """``exclude`` given as task ids (one id, or a collection of ids) as a list of ids.

    Raises
    ------
    ValidationError
        When ``exclude`` is neither a string nor a collection of strings (e.g. ``5``).
    """
    if isinstance(exclude, str):
        return [exclude]
    if isinstance(exclude, np.ndarray):
        exclude = exclude.tolist()
    if isinstance(exclude, bytes | bytearray | Mapping) or not isinstance(exclude, Iterable):
        raise ValidationError(
            "exclude must be task ids (a string or a list of strings) or a predicate over "
            f"index records, got {type(exclude).__name__}"
        )
    ids = list(exclude)
    bad = [t for t in ids if not isinstance(t, str)]
    if bad:
        raise ValidationError(
            f"exclude must hold task ids as strings, got {bad[0]!r} ({type(bad[0]).__name__}); "
            "one exclusion per query is a list of lists (or of predicates)"
        )
    return ids


def is_query_exclusion(e: Any) -> bool:
    """Whether an item of a list given to ``exclude`` is a whole exclusion (None, a predicate
    or a collection of ids), which makes the list one exclusion per query."""
    return e is None or callable(e) or (isinstance(e, Iterable) and not isinstance(e, str))


def normalize_exclude(exclude: Any) -> Any:
    """``exclude`` in a form that can be read more than once: None, a predicate, a list of
    task ids, or a list of those (one per query). A generator or an array of ids would
    otherwise be used up, or misread, by the first of the searches that share it.

    Raises
    ------
    ValidationError
        When ``exclude`` is not task ids, a predicate, or a list of those.

    Examples
    --------
    >>> normalize_exclude(t for t in ("a", "b")), normalize_exclude(np.array(["a"]))
    (['a', 'b'], ['a'])
    >>> normalize_exclude([["a"], None, ("b", "c")])
    [['a'], None, ['b', 'c']]
    """
    if exclude is None or callable(exclude) or isinstance(exclude, str):
        return exclude if not isinstance(exclude, str) else [exclude]
    if isinstance(exclude, np.ndarray):
        exclude = exclude.tolist()
    if isinstance(exclude, bytes | bytearray | Mapping) or not isinstance(exclude, Iterable):
        return exclude_ids(exclude)  # raises, naming the type
    items = list(exclude)
    if any(is_query_exclusion(e) for e in items):
        return [normalize_exclude(e) for e in items]
    return exclude_ids(items)


def per_query_excludes(exclude, n: int) -> list:
    """``exclude`` for a batch of ``n`` queries as one exclusion per query.

    A list or tuple whose items are exclusions themselves (None, predicates or id
    collections) is one per query; anything else (a list of ids included) applies to every
    query.
    """
    per_query = isinstance(exclude, list | tuple) and any(is_query_exclusion(e) for e in exclude)
    if not per_query:
        return [exclude] * n
    if len(exclude) != n:
        raise ValidationError(f"got {len(exclude)} exclusions for {n} queries")
    return list(exclude)


# ---------------------------------------------------------------------- the index
class TaskIndex:
    """Prior tasks, their fitted models and their description vectors; see the module docstring.

    Build with :meth:`build`, open with :meth:`load`.
    """

    def __init__(
        self,
        config: IndexConfig,
        schema: FeatureSchema,
        embedder: Embedder,
        store: VectorStore,
        records: RecordStore | Sequence[Record | None],
        params: np.ndarray,
        tasks: TaskCollection | None = None,
    ):
        self.config = config
        self.schema = schema
        self._embedder = embedder
        self._unverified = False  # set by load: the stored vectors are checked on first use
        self._loaded_from: Path | None = None
        self.store = store
        # one per FAISS row (None once removed), kept as compact JSON
        self._records = (
            records if isinstance(records, RecordStore) else RecordStore.from_records(records)
        )
        self._params = params
        self.tasks = tasks
        self._lock = threading.Lock()
        self._id_to_row = self._rows_by_id()
        self._removed: set[str] = set()  # ids removed from this object (exclusions accept them)
        # the patients of removed tasks (an exclusion naming one still leaves out their tasks)
        self._removed_patients: dict[str, frozenset[str]] = {}
        self._owners: dict[str, list[str]] | None = None  # patient id -> its tasks, when asked
        self._digests: dict[str, str] | None = None  # task id -> its parameters' hash, when asked
        self.skipped: dict[str, str] = {}  # tasks build() left out, with the reason (saved)
        # their rows (keep_tasks): no model, but the statistical generator validates on them
        self.skipped_tasks: TaskCollection | None = None

    # an index travels to other processes (joblib workers, e.g. cross_val_score(n_jobs=2) on
    # a ZeroShotClassifier) without its lock, made anew there. This is for processes of one
    # session; artifacts are saved with save(), never pickled
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_removed_patients", {})
        self.__dict__.setdefault("_owners", None)
        self.__dict__.setdefault("_digests", None)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        tasks: TaskCollection | Sequence[Task],
        model: str = "logistic",
        embedder: Embedder | str | None = None,
        index: str = "auto",
        device: str | None = "auto",
        *,
        schema: FeatureSchema | None = None,
        params: dict[str, ModelParams] | None = None,
        n_jobs: int = 1,
        progress: bool = True,
        keep_tasks: bool = True,
        chunk_size: int = CHUNK_TASKS,
        storage: str = "memory",
        **fit_kwargs: Any,
    ) -> TaskIndex:
        """Fit (or accept) each task's model, embed each description and index them.

        Parameters
        ----------
        tasks : the prior tasks (a lazy collection is read chunk by chunk).
        model : "logistic" or "gam".
        embedder : an :class:`~ragim.embed.Embedder`, a spec for :func:`~ragim.embed.get_embedder`
            ("minilm", "hashing", a local sentence-transformers folder) or None (MiniLM).
        index : "auto" (exact Flat up to 100k tasks, else IVF over 8-bit codes, e.g.
            ``"IVF4096,SQ8"``: 384 bytes per 384-d vector), or a FAISS factory string:
            ``"IVF4096,Flat"`` keeps full vectors, ``"IVF4096,PQ32"`` (32 bytes) compresses
            them further (recall in docs/scaling.md).
        device : where FAISS searches: "auto" uses every GPU when FAISS sees one.
        schema : a fitted schema; default: :func:`ragim.models.fit_schema` on the rows of ``tasks``.
        params : precomputed parameters by task id (skips fitting those tasks).
        keep_tasks : keep a reference to ``tasks`` (generators train on their rows), and the
            rows of the tasks that could not be fitted as ``index.skipped_tasks`` (the
            statistical generator validates its stack on them too: new tasks are often as
            small as they are).
        chunk_size : tasks fitted, embedded and added at a time. Peak memory grows with the
            chunk, not with the collection: what stays per task is its parameters, its
            record and its (possibly compressed) vector.
        storage : "memory", or "ondisk" (IVF indices: the inverted lists live in a file, FAISS
            ``OnDiskInvertedLists``; saved as ``index.ivfdata`` beside ``index.faiss``).
        fit_kwargs : passed to :func:`ragim.models.fit_many` (``C``, ``backend``, ``cv``...).

        Tasks that cannot be fitted (too few rows, one class) are left out with a
        warning naming them; ``index.skipped`` lists them with the reason.

        The rows of the fitted tasks are checked as they are fitted
        (:class:`ragim.data_checks.TrainingRowChecks`): values far outside the rest of a
        column (a typo, rows in another unit), a column that separates the outcome on its own
        in most tasks (a recoding of the outcome) and a column that varies only between tasks
        each get one :class:`~ragim.errors.DataWarning` naming the column and the tasks.

        An IVF / PQ / SQ index is first trained on the vectors of up to 200,000 tasks
        drawn at random (seed 0); those vectors are kept until their chunk is added, so
        no description is embedded twice.

        Raises
        ------
        ValidationError
            For zero tasks, no fittable task, parameters that do not match the index
            layout, a bad ``chunk_size`` or ``storage``, or an invalid FAISS factory string.
        """
        from ragim.models import fit_many, fit_schema
        from ragim.models.family import fit_constant_terms

        if not isinstance(tasks, TaskCollection):
            tasks = TaskCollection(list(tasks))
        n = len(tasks)
        if n == 0:
            raise ValidationError("cannot build an index from zero tasks")
        chunk_size = check_int(chunk_size, "chunk_size", ge=1)
        index = index.strip() if isinstance(index, str) else index  # " IVF16,SQ8 " from a config
        config = IndexConfig(model=model, index=index, storage=storage)
        emb = get_embedder(embedder)
        given = dict(params or {})
        ids = tasks.ids
        if len(set(ids)) != len(
            ids
        ):  # fit_many sees one chunk at a time, so check the whole collection here
            seen: set[str] = set()
            dupes = sorted({t for t in ids if t in seen or seen.add(t)})
            raise ValidationError(f"duplicate task ids: {dupes[:10]}; every task needs its own id")
        fit = np.array([tid not in given for tid in ids])
        if fit.any():
            if schema is None or not schema.is_fitted:
                schema = fit_schema(tasks.take(np.flatnonzero(fit)), schema)
        elif schema is None:
            schema = next(iter(given.values())).schema
        names = param_names(model, schema)

        factory = auto_factory(n, emb.dim) if index == "auto" else index
        sample_pos, sample_vecs = np.zeros(0, np.int64), np.zeros((0, emb.dim), np.float32)
        if needs_training(factory, emb.dim):
            rng = np.random.default_rng(0)
            sample_pos = (
                np.arange(n)
                if n <= TRAIN_SIZE
                else np.sort(rng.choice(n, TRAIN_SIZE, replace=False))
            )
            sample_vecs = emb.embed(
                [tasks.info(int(i))["description"] for i in sample_pos], progress=progress
            )
        store = VectorStore.create(
            emb.dim, factory, train=sample_vecs, **config._store_options(device)
        )
        config.factory = store.factory

        mat = np.empty((n, len(names)))
        checks = TrainingRowChecks(schema)
        records = RecordStore()
        kept: list[int] = []
        skipped: dict[str, str] = {}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="building index", unit="task", disable=None)
        try:
            for start in range(0, n, int(chunk_size)):
                pos = np.arange(start, min(n, start + int(chunk_size)))
                stats: dict[str, dict] = {}
                chunk_params = {ids[i]: given[ids[i]] for i in pos if not fit[i]}
                todo = pos[fit[pos]]
                if len(todo):
                    rows = [tasks[int(i)] for i in todo]  # read once: fitted and checked
                    result = fit_many(
                        rows,
                        model=model,
                        schema=schema,
                        n_jobs=n_jobs,
                        progress=False,
                        device=device,
                        **fit_kwargs,
                    )
                    chunk_params.update(result.params)
                    stats = result.stats
                    skipped.update((t, st) for t, st in result.status.items() if st != "ok")
                    for t in rows:
                        if result.status.get(t.task_id) == "ok":
                            checks.observe(t)
                    del rows
                keep = [int(i) for i in pos if ids[i] in chunk_params]
                infos = [tasks.info(i) for i in keep]
                row0 = len(kept)
                for j, inf in enumerate(infos):
                    p = chunk_params[inf["task_id"]]
                    if p.kind != model or p.names != names:
                        raise ValidationError(
                            f"parameters of task {inf['task_id']!r} do not match the {model} "
                            "layout of the index schema"
                        )
                    mat[row0 + j] = p.vector
                constant = {t: fit_constant_terms(p) for t, p in chunk_params.items()}
                del chunk_params
                vectors = np.empty((len(keep), emb.dim), np.float32)
                where = np.searchsorted(sample_pos, keep)
                cached = (
                    (where < len(sample_pos))
                    & (sample_pos[np.minimum(where, len(sample_pos) - 1)] == keep)
                    if len(sample_pos)
                    else np.zeros(len(keep), bool)
                )
                if cached.any():
                    vectors[cached] = sample_vecs[where[cached]]
                if len(sample_pos):  # chunks come in order: free this chunk's sample rows
                    used = int(np.searchsorted(sample_pos, pos[-1], side="right"))
                    sample_pos, sample_vecs = sample_pos[used:], sample_vecs[used:].copy()
                if not cached.all():
                    vectors[~cached] = emb.embed(
                        [infos[j]["description"] for j in np.flatnonzero(~cached)]
                    )
                store.add(vectors)
                del vectors
                records.extend(_task_record(inf, stats, constant[inf["task_id"]]) for inf in infos)
                kept.extend(keep)
                if bar is not None:
                    bar.update(len(pos))
        finally:
            if bar is not None:
                bar.close()
        del sample_vecs
        warn_shared_descriptions((r["task_id"], r["description"]) for _, r in records.live())
        warn_patient_id_near_misses((r["task_id"], _stored_ids(r)) for _, r in records.live())
        if not kept:
            raise ValidationError(
                "no task could be fitted:", [f"{t}: {st}" for t, st in skipped.items()]
            )
        checks.warn()
        if skipped:
            warnings.warn(
                f"{len(skipped)} task(s) left out of the index: "
                + "; ".join(f"{t}: {st}" for t, st in list(skipped.items())[:5]),
                stacklevel=user_stacklevel(),
            )
        mat = mat[: len(kept)] if len(kept) < n else mat
        obj = cls(
            config, schema, emb, store, records, mat, tasks.take(kept) if keep_tasks else None
        )
        obj.skipped = skipped
        if keep_tasks and skipped:
            obj.skipped_tasks = tasks.take([i for i, t in enumerate(ids) if t in skipped])
        return obj

    # ------------------------------------------------------------------ content
    @property
    def embedder(self) -> Embedder:
        """The embedder of the descriptions. On its first use after :meth:`load`, a few
        records' descriptions (3, chosen with a fixed seed) are embedded again and compared
        with their stored vectors, so that an artifact whose embedder identity or descriptions
        were changed after it was built is refused (:class:`~ragim.errors.ArtifactError`)
        instead of searching with vectors from another embedder."""
        if self._unverified:
            self._unverified = False
            self._verify_vectors(self._embedder)
        return self._embedder

    @embedder.setter
    def embedder(self, embedder: Embedder) -> None:
        self._embedder = embedder

    def _verify_vectors(self, embedder: Embedder, n: int = VERIFY_ROWS) -> None:
        live = [row for row, _ in self._records.live()]
        if not live or embedder.identity.get("kind") == "precomputed":
            return  # precomputed vectors are the user's: they may hold only the queries'

        rng = np.random.default_rng(0)
        rows = sorted(rng.choice(live, size=min(n, len(live)), replace=False).tolist())
        texts = [self._records.get(r)["description"] for r in rows]
        fresh = np.asarray(embedder.embed(texts), np.float32)
        stored = self.store.stored_vectors(rows)
        norms = np.linalg.norm(fresh, axis=1) * np.linalg.norm(stored, axis=1)
        cos = np.einsum("ij,ij->i", fresh, stored) / np.maximum(norms, 1e-12)
        tol = LOSSY_COSINE if self.store.lossy else EXACT_COSINE
        bad = [(r, c) for r, c in zip(rows, cos, strict=True) if not c >= tol]
        if bad:
            row, c = bad[0]
            raise ArtifactError(
                f"{self._loaded_from}: the index's stored vectors do not match its embedder "
                f"and descriptions: the description of task {self._records.task_id(row)!r} "
                f"embeds to a vector with cosine {c:.3f} to its stored one (at least {tol} "
                f"expected; {len(bad)} of {len(rows)} checked differ); the embedder in "
                "config.json or the descriptions in records.jsonl were changed after the "
                "index was built"
            )

    def __len__(self) -> int:
        return len(self._id_to_row)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._id_to_row

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def ids(self) -> list[str]:
        return list(self._id_to_row)  # row order: rows are only appended, or compacted in order

    @property
    def records(self) -> list[Record]:
        return [r for _, r in self._records.live()]

    def record(self, task_id: str) -> Record:
        return self._records.get(self.row(task_id))

    def row(self, task_id: str) -> int:
        """The vector-store row of a task: its position in :attr:`row_params`,
        :attr:`row_records` and ``store.reconstruct_all()``.

        Raises
        ------
        KeyError
            When the task is not in the index.
        """
        try:
            return self._id_to_row[task_id]
        except KeyError:
            raise KeyError(f"task {task_id!r} is not in the index") from None

    def known_ids(self, exclude: str | Iterable[str]) -> list[str]:
        """Task ids given to ``exclude`` that the index holds, with a
        :class:`~ragim.errors.DataWarning` naming the others.

        An id the index never held excludes nothing: a misspelt target id would leave the
        target among its own neighbours, so it is named. Tasks this index left out at build
        (``skipped``) or removed since are known, and pass silently.

        Raises
        ------
        ValidationError
            When ``exclude`` is not task ids.
        """
        ids = exclude_ids(exclude)
        known = self._id_to_row
        unknown = [
            t
            for t in ids
            if t not in known and t not in self._removed and t not in getattr(self, "skipped", {})
        ]
        if unknown:
            some = name_some([repr(t) for t in unknown])
            example = next(iter(known), None)
            warnings.warn(
                f"exclude names {len(unknown)} task id(s) the index does not hold: {some}; "
                "they exclude nothing (a task the index never held needs no exclusion; "
                "otherwise check the spelling: ids compare exactly"
                + (f", e.g. {example!r} is indexed)" if example else ")"),
                DataWarning,
                stacklevel=user_stacklevel(),
            )
        return [t for t in ids if t in known]

    def sharing_patients(self, ids: str | Iterable[str]) -> list[str]:
        """Indexed tasks, other than those ``ids`` names, that share a patient with one of them,
        in index order.

        The patients of a named task come from its record, or, for a task the index no longer
        holds, from :attr:`skipped_tasks` (left out at build) or from what :meth:`remove`
        kept. A task without ``metadata["patient_ids"]`` shares no patient that ragim can see.

        Raises
        ------
        ValidationError
            When ``ids`` is not task ids.

        Examples
        --------
        >>> import pandas as pd
        >>> from ragim import Task, TaskIndex
        >>> X = pd.DataFrame({"age": [float(a) for a in range(40, 80, 2)]})
        >>> y = [0, 1] * 10
        >>> def task(tid, rows, first):
        ...     ids = list(range(first, first + len(rows)))
        ...     return Task(tid, tid, X.iloc[rows], [y[i] for i in rows], {"patient_ids": ids})
        >>> whole, old = task("all", range(20), 0), task("old", range(10, 20), 10)
        >>> other = task("other", range(20), 100)
        >>> index = TaskIndex.build([whole, old, other], embedder="hashing", progress=False)
        >>> index.sharing_patients(["old"]), index.sharing_patients("other")
        (['all'], [])
        """
        ids = exclude_ids(ids)
        patients: set[str] = set()
        for t in ids:
            patients |= self._patients_of(t)
        if not patients:
            return []
        owners = self._patient_owners()
        named, hits = set(ids), set()
        for p in patients:
            hits.update(owners.get(p, ()))
        return sorted(hits - named, key=self._id_to_row.__getitem__)

    def held_out_ids(self, exclude: str | Iterable[str]) -> list[str]:
        """The indexed tasks an exclusion by task ids leaves out: those it names
        (:meth:`known_ids`, which warns about ids the index never held) and every indexed
        task sharing a patient with one of them (:meth:`sharing_patients`), since a task held
        out for zero-shot use must not be seen through another task holding its patients.

        Raises
        ------
        ValidationError
            When ``exclude`` is not task ids.

        Warns
        -----
        DataWarning
            Naming the tasks left out for sharing patients (pass a predicate over records,
            e.g. ``lambda rec: rec["task_id"] in ids``, to leave out only the named tasks).
        """
        ids = exclude_ids(exclude)
        known = self.known_ids(ids)
        shared = self.sharing_patients(ids)
        if shared:
            some = name_some(shared)
            warnings.warn(
                f"exclude also leaves out {len(shared)} task(s) sharing patients with the "
                f"excluded task(s): {some}; to leave out only the named tasks, exclude them by "
                "a predicate (lambda rec: rec['task_id'] in ids)",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
        return known + shared

    def _patients_of(self, task_id: str) -> frozenset[str]:
        """The canonical patient ids of a task the index holds, skipped or removed."""
        if task_id in self._id_to_row:
            return patient_id_set(self.record(task_id)["metadata"])
        if task_id in self._removed_patients:
            return self._removed_patients[task_id]
        small = getattr(self, "skipped_tasks", None)
        if small is not None and task_id in small:
            return patient_id_set(small.info(small.ids.index(task_id))["metadata"])
        return frozenset()

    def _patient_owners(self) -> dict[str, list[str]]:
        """Patient id -> the indexed tasks holding it (built on first use, dropped by
        :meth:`add` and :meth:`remove`)."""
        owners = self._owners
        if owners is None:
            owners = {}
            for _, rec in self._records.live():
                for p in patient_id_set(rec["metadata"]):
                    owners.setdefault(p, []).append(rec["task_id"])
            self._owners = owners
        return owners

    def task_digests(self) -> dict[str, str]:
        """Task id -> a short hash of the task's stored parameters, for every task the index
        holds: a task removed and added again under the same id with other data gets another
        one (the generators compare them with those they were fitted on:
        :meth:`ragim.generate.base.Generator.index_changes`).

        Examples
        --------
        >>> from ragim import TaskIndex, datasets
        >>> index = TaskIndex.build(datasets.synthetic_family(n_tasks=3, n_features=2, seed=0),
        ...                         embedder="hashing", progress=False)
        >>> digests = index.task_digests()
        >>> sorted(digests) == sorted(index.ids), len(set(digests.values()))
        (True, 3)
        """
        digests = self._digests
        if digests is None:
            import hashlib

            digests = {
                t: hashlib.sha256(
                    np.ascontiguousarray(self._params[row], dtype="<f8").tobytes()
                ).hexdigest()[:16]
                for t, row in self._id_to_row.items()
            }
            self._digests = digests
        return dict(digests)

    @property
    def row_params(self) -> np.ndarray:
        """Every stored parameter vector by vector-store row, shape (n_rows, n_params), read-only.

        A task removed since the last save keeps its row until then (its record is ``None`` in
        :attr:`row_records`); :meth:`row` maps a task id to its row.
        """
        view = self._params.view()
        view.flags.writeable = False
        return view

    @property
    def row_records(self) -> list[Record | None]:
        """The records by vector-store row (``None`` for a task removed since the last save)."""
        return self._records.rows()

    def params(self, task_id: str) -> ModelParams:
        """The stored parameters of one task."""
        row = self.row(task_id)
        return self._params_at(row)

    def _params_at(self, row: int, rec: Record | None = None) -> ModelParams:
        rec = self._records.get(row) if rec is None else rec
        meta: dict[str, Any] = {"source": "fit", "task_id": rec["task_id"]}
        if rec.get("constant_terms"):  # what the task's rows never varied: not estimable there
            meta["constant_terms"] = dict(rec["constant_terms"])
        return ModelParams(self.model, self.schema, self._params[row], metadata=meta)

    def params_matrix(self, ids: Sequence[str] | None = None) -> np.ndarray:
        """Stacked parameter vectors (rows in ``ids`` order, or index order)."""
        rows = [self.row(t) for t in (ids if ids is not None else self.ids)]
        return self._params[rows]

    def population_params(self, exclude: Exclude = None) -> ModelParams | None:
        """The population model: the mean of the stored parameters, weighted by each task's rows.

        Every indexed task (less those ``exclude`` names: ids, with the tasks sharing their
        patients (:meth:`held_out_ids`), or a predicate such as :func:`leak_free`) counts
        with weight ``stats["n_rows"]`` (1 when unknown), so large, well-estimated tasks
        dominate, as they would in a model fitted on pooled rows. ``None`` when every task is
        excluded. The LM generator shows it in its prompts (``LMConfig.population``).

        Examples
        --------
        >>> from ragim import TaskIndex, datasets
        >>> tasks = datasets.synthetic_family(n_tasks=6, n_features=2, seed=0)
        >>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
        >>> p = index.population_params(exclude=[tasks.ids[0]])
        >>> p.metadata["source"], p.metadata["n_tasks"]
        ('population', 5)
        """
        exclude = normalize_exclude(exclude)
        if exclude is not None and not callable(exclude):
            exclude = self.held_out_ids(exclude)
        pred = as_predicate(exclude)
        rows, weights = [], []
        for row, rec in self._records.live():
            if pred is not None and pred(rec):
                continue
            n = rec.get("stats", {}).get("n_rows", 1)
            rows.append(row)
            weights.append(float(n) if isinstance(n, int | float) and n > 0 else 1.0)
        if not rows:
            return None
        w = np.asarray(weights) / np.sum(weights)
        values = w @ self._params[rows].astype(np.float64)
        return ModelParams(
            self.model,
            self.schema,
            values,
            metadata={"source": "population", "n_tasks": len(rows), "n_rows": int(sum(weights))},
        )

    def vectors(self, ids: Sequence[str] | None = None) -> np.ndarray:
        """The stored description embeddings."""
        allv = self.store.reconstruct_all()
        rows = [self.row(t) for t in (ids if ids is not None else self.ids)]
        return allv[rows]

    # ------------------------------------------------------------------ search
    def embed_queries(
        self, queries: str | Task | Sequence[str | Task]
    ) -> tuple[np.ndarray, list, bool]:
        if isinstance(queries, np.ndarray) and queries.ndim == 0:
            queries = queries.item()  # np.array("text"): one query
        single = isinstance(queries, str | Task)
        if not single and (
            isinstance(queries, bytes | bytearray | memoryview | Mapping)
            or not isinstance(queries, Iterable)
        ):
            raise ValidationError(
                "query must be a description (str), a Task, or a list of them, "
                f"got {type(queries).__name__}"
            )
        items = [queries] if single else list(queries)
        if not items:
            raise ValidationError("no queries given")
        texts = []
        for i, q in enumerate(items):
            text = q.description if isinstance(q, Task) else q
            if not isinstance(text, str):
                raise ValidationError(
                    f"query {i} must be a description (str) or a Task, got {type(q).__name__}"
                )
            if not strip_invisible(text).strip():
                held = " (it holds only invisible characters)" if text.strip() else ""
                raise ValidationError(
                    f"query {i} is empty{held}; give a task description or a Task"
                )
            hidden = invisible_characters(text)
            if hidden:
                warnings.warn(
                    f"query {i}: removed {len(hidden)} invisible character(s) "
                    f"{sorted(set(hidden))[:3]}",
                    DataWarning,
                    stacklevel=user_stacklevel(),
                )
            texts.append(strip_invisible(text))
        return self.embedder.embed(texts), items, single

    def search(
        self,
        query: str | Task | Sequence[str | Task],
        k: int = 5,
        *,
        exclude: Exclude | Sequence[Exclude] = None,
    ) -> list[Neighbor] | list[list[Neighbor]]:
        """The ``k`` most similar indexed tasks.

        Parameters
        ----------
        query : a description, a Task, or a list of either (then a list of lists is returned).
        k : number of neighbours.
        exclude : task ids, or a predicate over records (``{"task_id", "description",
            "metadata", "stats"}``) such as :func:`leak_free`; for a batch, one per query
            or one for all. Task ids leave out the tasks sharing patients with them too
            (:meth:`held_out_ids`, with a :class:`~ragim.errors.DataWarning` naming them);
            a predicate leaves out exactly what it matches.

        Returns the ``k`` best tasks that are not excluded whenever ``k`` remain, on every
        index type and device: when an approximate index (IVF, HNSW) cannot reach enough
        eligible tasks with its own ``nprobe`` / ``efSearch``, the search is repeated on
        the eligible tasks only, wider, and exactly as the last resort
        (:meth:`ragim.vector_store.VectorStore.search`). Fewer than ``k`` come back only
        when fewer than ``k`` tasks are eligible.
        """
        vecs, items, single = self.embed_queries(query)
        return self.search_vectors(vecs, k, exclude=exclude, single=single)

    def search_vectors(
        self, vectors: np.ndarray, k: int = 5, *, exclude=None, single: bool = False
    ):
        """Like :meth:`search` with precomputed query vectors."""
        n = len(vectors)
        excludes = per_query_excludes(normalize_exclude(exclude), n)
        records = self._records
        preds: list[Callable[[Record], bool] | None] = [None] * n
        rows: list[np.ndarray | None] = [None] * n
        for qi, e in enumerate(excludes):
            if e is None:
                continue
            if callable(e):
                preds[qi] = e
            else:  # ids: their rows are known, so FAISS can be told them up front
                held = self.held_out_ids(e)  # with the tasks sharing their patients
                rows[qi] = np.array([self._id_to_row[t] for t in held], dtype=np.int64)
        skip = None
        if any(p is not None for p in preds):

            def skip(qi: int, row: int) -> bool:
                p = preds[qi]
                return p is not None and p(records.get(row))

        excluded = rows if any(r is not None for r in rows) else None
        with self._lock:
            scores, rows_found = self.store.search(vectors, k, skip=skip, excluded=excluded)
        out = []
        for qi in range(n):
            hits = []
            for s, r in zip(scores[qi], rows_found[qi], strict=True):
                if r < 0:
                    continue
                rec = records.get(r)
                hits.append(
                    Neighbor(
                        rec["task_id"],
                        float(s),
                        rec["description"],
                        self._params_at(int(r), rec),
                        rec["metadata"],
                        rec.get("stats", {}),
                    )
                )
            out.append(hits)
        return out[0] if single else out

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of memory the index holds, by part: ``vectors`` (the FAISS index in RAM; an
        on-disk index's lists are not counted), ``params`` (the parameter matrix) and
        ``records`` (ids, descriptions, metadata and fit statistics, kept as compact JSON).
        The rows of a kept task collection (``keep_tasks``) are not counted.

        Examples
        --------
        >>> from ragim import TaskIndex, datasets
        >>> index = TaskIndex.build(datasets.synthetic_family(n_tasks=20, n_features=3, seed=0),
        ...                         embedder="hashing", progress=False)
        >>> sorted(index.memory_bytes()), index.memory_bytes()["params"] == 20 * 4 * 8
        (['params', 'records', 'vectors'], True)
        """
        return {
            "vectors": int(self.store.memory_bytes(in_ram=True)),
            "params": int(self._params.nbytes),
            "records": self._records.memory_bytes(),
        }

    def _rows_by_id(self) -> dict[str, int]:
        return {t: row for row, t in enumerate(self._records.task_ids_by_row()) if t is not None}

    # ------------------------------------------------------------------ updates
    def add(
        self,
        tasks: TaskCollection | Sequence[Task],
        *,
        params: dict[str, ModelParams] | None = None,
        progress: bool = False,
        **fit_kwargs,
    ) -> list[str]:
        """Fit (or accept) and add new tasks without a rebuild; the schema is kept fixed.
        Returns the ids added.

        The rows of the tasks to fit are checked against the index's schema first
        (:func:`ragim.data_checks.warn_added_rows`): a column in another unit than the index's
        (a median :data:`~ragim.schema.SCALE_RATIO` = 2 or more times off, outside the index's
        range) or values more than 8 SDs from the index's mean get one
        :class:`~ragim.errors.DataWarning` naming task and column."""
        from ragim.models import fit_many
        from ragim.models.family import fit_constant_terms

        if not isinstance(tasks, TaskCollection):
            tasks = TaskCollection(list(tasks), schema=self.schema, validate=False)
        if len(tasks) == 0:
            raise ValidationError("add() needs at least one task, got none")
        dupes = [t for t in tasks.ids if t in self._id_to_row]
        if dupes:
            raise ValidationError(f"tasks already in the index: {dupes[:10]}; remove them first")
        given = dict(params or {})
        todo = [i for i, t in enumerate(tasks.ids) if t not in given]
        stats = {}
        if todo:
            rows = [tasks[i] for i in todo]
            warn_added_rows(self.schema, rows)
            res = fit_many(
                rows,
                model=self.model,
                schema=self.schema,
                progress=progress,
                **fit_kwargs,
            )
            given.update(res.params)
            stats = res.stats
            bad = {t: s for t, s in res.status.items() if s != "ok"}
            if bad:
                raise ValidationError(
                    "some tasks could not be fitted:", [f"{t}: {s}" for t, s in bad.items()]
                )
        infos = [tasks.info(i) for i in range(len(tasks))]
        names = param_names(self.model, self.schema)
        mat = np.stack([given[i["task_id"]].vector for i in infos])
        for inf in infos:
            if given[inf["task_id"]].names != names:
                raise ValidationError(
                    f"parameters of {inf['task_id']!r} do not match the index layout"
                )
        vecs = self.embedder.embed([i["description"] for i in infos], progress=progress)
        with self._lock:
            rows = self.store.add(vecs)
            for r, inf in zip(rows, infos, strict=True):
                constant = fit_constant_terms(given[inf["task_id"]])
                self._records.append(_task_record(inf, stats, constant))
                self._id_to_row[inf["task_id"]] = int(r)
            self._params = np.concatenate([self._params, mat])
        self._owners = self._digests = None
        if self.tasks is not None:
            self.tasks = None  # rows of added tasks are not kept; generators need a rebuild
            self.skipped_tasks = None
        added = [i["task_id"] for i in infos]
        live = ((r["task_id"], r["description"]) for _, r in self._records.live())
        warn_shared_descriptions(live, new=added)
        warn_patient_id_near_misses(
            ((r["task_id"], _stored_ids(r)) for _, r in self._records.live()), new=added
        )
        return added

    def remove(self, ids: str | Iterable[str]) -> None:
        """Remove tasks by id (tombstoned now, dropped at the next save).

        Raises
        ------
        ValidationError
            When an id is not in the index (never added, or removed already); nothing is
            removed then.
        """
        ids = [ids] if isinstance(ids, str) else list(ids)
        missing = [t for t in ids if t not in self._id_to_row]
        if missing:
            gone = [t for t in missing if t in self._removed]
            raise ValidationError(
                f"cannot remove {len(missing)} task id(s) the index does not hold: "
                f"{missing[:5]}" + (f" ({len(gone)} removed already)" if gone else "")
            )
        ids = list(dict.fromkeys(ids))  # each once
        rows = [self.row(t) for t in ids]
        for t in ids:  # an exclusion naming a removed task still leaves out its patients' tasks
            pids = self._patients_of(t)
            if pids:
                self._removed_patients[t] = pids
        with self._lock:
            self.store.remove(rows)
            for t, r in zip(ids, rows, strict=True):
                self._records.remove(r)
                del self._id_to_row[t]
                self._removed.add(t)
            self._owners = self._digests = None
        if self.tasks is not None:
            keep = [i for i, t in enumerate(self.tasks.ids) if t in self._id_to_row]
            self.tasks = self.tasks.take(keep)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, include_tasks: bool | str = "auto") -> Path:
        """Save as an artifact directory: ``index.faiss``, ``records.jsonl``,
        ``params.safetensors``, ``schema.json``, ``config.json`` (with the embedder's
        identity) and, when ``include_tasks`` (default: collections up to 20k tasks),
        the tasks' rows under ``tasks/`` (and those of :attr:`skipped_tasks` under
        ``skipped_tasks/``)."""
        from safetensors.numpy import save as st_save

        from ragim.io import json_bytes, write_artifact

        with self._lock:
            if self.store.deleted:
                keep = self.store.compact()
                self._records = self._records.take(keep)
                self._params = self._params[keep]
                self._id_to_row = self._rows_by_id()
            files: dict[str, Any] = {
                "config.json": json_bytes(
                    {
                        **asdict(self.config),
                        "embedder": self.embedder.identity,
                        "n_tasks": len(self),
                        "param_names": param_names(self.model, self.schema),
                        "ids_sha256": _ids_digest(self._records.ids()),
                        "skipped": dict(self.skipped),
                        "removed": {
                            t: sorted(self._removed_patients.get(t, ()))
                            for t in sorted(self._removed)
                            if t not in self._id_to_row
                        },
                    }
                ),
                "schema.json": json_bytes(self.schema.to_dict()),
                "records.jsonl": self._records.jsonl(),
                "params.safetensors": st_save({"params": np.ascontiguousarray(self._params)}),
                "index.faiss": self.store.write,
            }
        if include_tasks == "auto":
            include_tasks = self.tasks is not None and len(self.tasks) <= 20_000
        if include_tasks and self.tasks is not None:
            tasks = self.tasks
            files["tasks"] = lambda target: tasks.save(target)
            if self.skipped_tasks is not None:
                small = self.skipped_tasks
                files["skipped_tasks"] = lambda target: small.save(target)
        return write_artifact(path, FORMAT, files)

    save_pretrained = save

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        embedder: Embedder | str | None = None,
        device: str | None = "auto",
    ) -> TaskIndex:
        """Open a saved index, verifying checksums; ``embedder`` (default: the one recorded
        in the artifact) must match the embedder the index was built with. If a concurrent
        save replaces the artifact while it is read, the load starts again (up to 3 times)."""
        from ragim.io import ArtifactChanged

        for attempt in range(3):
            try:
                return cls._load(path, embedder=embedder, device=device)
            except ArtifactChanged:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @classmethod
    def _load(
        cls, path: str | Path, *, embedder: Embedder | str | None, device: str | None
    ) -> TaskIndex:
        from safetensors import SafetensorError
        from safetensors.numpy import load as st_load

        from ragim.io import ArtifactChanged, read_artifact

        art = read_artifact(path, FORMAT)
        cfg = art.read_json("config.json")
        cfg_file = art.path / "config.json"
        try:
            cfg = dict(cfg)
            identity = cfg.pop("embedder")
            expected_names = cfg.pop("param_names")
            cfg.pop("n_tasks", None)
            ids_digest = cfg.pop("ids_sha256", None)
            skipped = cfg.pop("skipped", {})  # absent from indices saved before it was kept
            removed = cfg.pop("removed", {})  # removed tasks' patients; absent before kept
            config = IndexConfig(**cfg)
            if not isinstance(identity, dict) or not isinstance(expected_names, list):
                raise TypeError("'embedder' must be an object and 'param_names' a list")
            check_loaded(
                {k: v for k, v in identity.items() if k in ("kind", "dim", "seed")},
                _IDENTITY_FIELDS,
                "embedder",
            )
            if not isinstance(skipped, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in skipped.items()
            ):
                raise TypeError("'skipped' must map task ids to reasons")
            if not isinstance(removed, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(p, str) for p in v)
                for k, v in removed.items()
            ):
                raise TypeError("'removed' must map task ids to lists of patient ids")
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise ArtifactError(f"{cfg_file}: not a valid index configuration ({exc})") from exc
        if embedder is None:
            try:
                emb = embedder_from_identity(identity)
            except (ValidationError, KeyError, TypeError, ValueError, OSError) as exc:
                raise ArtifactError(
                    f"{cfg_file}: the recorded embedder cannot be re-created ({exc})"
                ) from exc
        else:
            emb = get_embedder(embedder)
        check_identity(identity, emb)
        try:
            schema = FeatureSchema.from_dict(art.read_json("schema.json"))
            names = param_names(config.model, schema)
        except ValidationError as exc:
            raise ArtifactError(f"{art.path / 'schema.json'}: {exc}") from exc
        records = art.read_jsonl("records.jsonl")
        problems = _record_problems(records)
        if problems:
            raise ArtifactError(
                f"{art.path / 'records.jsonl'}: not valid index records:\n  - "
                + "\n  - ".join(problems)
            )
        try:  # indices saved before ids were canonical may hold integer patient ids
            for rec in records:
                rec["metadata"] = canonical_metadata(
                    rec["metadata"], where=f"task {rec['task_id']!r}"
                )
        except ValidationError as exc:
            raise ArtifactError(f"{art.path / 'records.jsonl'}: {exc}") from exc
        if ids_digest is not None and ids_digest != _ids_digest(r["task_id"] for r in records):
            raise ArtifactError(
                f"{art.path / 'records.jsonl'}: its task ids are not the ones "
                "config.json was saved with; the artifact was assembled from different indices"
            )
        try:
            params = st_load(art.read_bytes("params.safetensors"))["params"]
        except (SafetensorError, KeyError, ValueError, TypeError) as exc:
            raise ArtifactError(
                f"{art.path / 'params.safetensors'}: not a valid parameter file ({exc})"
            ) from exc
        if params.ndim != 2 or params.dtype.kind != "f" or not np.all(np.isfinite(params)):
            raise ArtifactError(
                f"{art.path / 'params.safetensors'}: parameters must be a finite 2-D float array, "
                f"got {params.dtype} {params.shape}"
            )
        if names != expected_names:
            raise ArtifactError(
                f"{art.path / 'schema.json'}: its {config.model} parameter layout "
                f"({len(names)} names) differs from the param_names in config.json "
                f"({len(expected_names)}); the artifact was assembled from different indices"
            )
        if params.shape != (len(records), len(names)):
            raise ArtifactError(
                f"{art.path / 'params.safetensors'}: shape {params.shape} does not "
                f"match records.jsonl ({len(records)} tasks) and the schema "
                f"({len(names)} parameters); the artifact was assembled from different indices"
            )
        emb_dim = identity.get("dim", emb.dim)
        check_index_file(art.file("index.faiss"), ntotal=len(records), dim=emb_dim)
        store = VectorStore.read(
            art.file("index.faiss"), factory=config.factory, **config._store_options(device)
        )
        art.check_unchanged("index.faiss")
        if store.ntotal != len(records) or store.dim != emb_dim:
            raise ArtifactError(
                f"{art.path / 'index.faiss'}: holds {store.ntotal} vectors of dimension "
                f"{store.dim}, but records.jsonl has {len(records)} tasks and the embedder makes "
                f"{emb_dim}-dimensional vectors; the artifact was assembled from different indices"
            )
        tasks = None
        if "tasks/manifest.json" in art.files:
            try:
                tasks = TaskCollection.load(art.path / "tasks")
            except ArtifactError as exc:
                art.check_unchanged("tasks/manifest.json")  # a concurrent save replaced it: say so
                if not art.path.exists():
                    raise ArtifactChanged(f"{art.path} vanished while loading") from exc
                raise
            art.check_unchanged("tasks/manifest.json")
            if tasks.ids != [r["task_id"] for r in records]:
                raise ArtifactError(
                    f"{art.path / 'tasks'}: its task ids differ from "
                    "records.jsonl; the artifact was assembled from different indices"
                )
        index = cls(config, schema, emb, store, RecordStore.from_records(records), params, tasks)
        index._unverified, index._loaded_from = True, art.path
        index.skipped = skipped
        index._removed = set(removed)
        index._removed_patients = {t: frozenset(p) for t, p in removed.items() if p}
        if tasks is not None and "skipped_tasks/manifest.json" in art.files:
            small = TaskCollection.load(art.path / "skipped_tasks")
            art.check_unchanged("skipped_tasks/manifest.json")
            if not set(small.ids) <= set(skipped):
                raise ArtifactError(
                    f"{art.path / 'skipped_tasks'}: holds tasks that config.json does not list "
                    "as skipped; the artifact was assembled from different indices"
                )
            index.skipped_tasks = small
        return index

    from_pretrained = load

    def __repr__(self) -> str:
        ident = self._embedder.identity
        return (
            f"TaskIndex({len(self)} tasks, model={self.model!r}, faiss={self.config.factory!r}, "
            f"embedder={ident.get('name', ident.get('kind'))!r}, "
            f"gpu={self.store.on_gpu if self.store.ntotal else False})"
        )


#: the identity fields an index's config.json must give as numbers (checked before an embedder
#: is built: "dim": 5e7 written as a float would make every query allocate a vector that long)
_IDENTITY_FIELDS = {
    "kind": str,
    "dim?": partial(check_int, ge=1, le=MAX_EMBED_DIM),
    "seed?": partial(check_int, ge=0, lt=2**64),
}


def _ids_digest(ids: Iterable[str]) -> str:
    """A short hash of the task ids in row order (binds records.jsonl to config.json)."""
    import hashlib

    h = hashlib.sha256()
    for t in ids:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()[:32]


def _record_problems(records: list) -> list[str]:
    problems, seen = [], set()
    for i, r in enumerate(records):
        tid = r.get("task_id")
        if (
            not isinstance(tid, str)
            or not isinstance(r.get("description"), str)
            or not isinstance(r.get("metadata"), dict)
        ):
            problems.append(f"line {i + 1} lacks a task_id, description or metadata object")
        elif tid in seen:
            problems.append(f"line {i + 1}: duplicate task id {tid!r}")
        else:
            seen.add(tid)
        if len(problems) >= 5:
            break
    return problems


def _task_record(
    info: Mapping[str, Any], stats: Mapping[str, dict], constant: Mapping[str, float] | None = None
) -> Record:
    """The index record of a task: ``TaskCollection.info`` plus its fit statistics, and the
    design terms its rows never varied when there are any
    (:func:`~ragim.models.family.fit_constant_terms`), so that :meth:`TaskIndex.params`
    gives them back and explanations of the task's own model mark them not estimable."""
    tid = info["task_id"]
    meta = canonical_metadata(info["metadata"], where=f"task {tid!r}")
    n_rows = stats.get(tid, {}).get("n_rows")
    if n_rows is not None:  # the metadata may have changed after the task was made
        check_patient_id_rows(meta, int(n_rows), f"task {tid!r}")
    return {
        "task_id": tid,
        "description": info["description"],
        "metadata": meta,
        "stats": _json_safe(stats.get(tid, {})),
        **({"constant_terms": dict(constant)} if constant else {}),
    }


def _json_safe(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not np.isfinite(v):
            v = None
        if isinstance(v, str | int | float | bool) or v is None:
            out[k] = v
    return out
