"""How well an index covers a task description, and when a description lies outside it.

An index knows how close its own tasks are to each other. :func:`calibrate` asks, for each
indexed task, how similar its neighbours are (leaving out the task itself and every task that
shares patients with it, as a zero-shot target would be left out), and sets the index's
threshold from the similarity of each task's ``rank``-th neighbour (:data:`RANK`, 10: the
neighbours a generator draws on). A new description whose *nearest* indexed task is less
similar than the threshold is further from the index than the index's own tasks are from
their 10th neighbour: the generated model is then borrowed from unrelated tasks, and
:func:`check` warns (:class:`~ragim.errors.DomainWarning`).

The threshold is the largest of three lower bounds, so that no single task (nor a few) can
drag it down, which a plain low percentile of a small index's similarities would let happen:

1. the 1st percentile (:data:`PERCENTILE`) of the tasks' neighbour similarities (the lower
   value: at most that share of the tasks falls strictly below it). In an index of fewer than
   101 tasks that is their minimum, set by its single most outlying task;
2. a robust lower fence, ``median - 3 * spread`` (:data:`SPREAD_MULTIPLE`): the
   median/MAD outlier rule (Hampel's identifier; Leys et al. 2013, "Detecting outliers: do
   not use standard deviation around the mean, use absolute deviation around the median",
   J. Exp. Soc. Psychol. 49:764-766). ``spread`` is the normalised median absolute deviation
   (``1.4826 * MAD``) of the similarities, but at least half of ``typical - median``, the
   similarity the index's tasks typically lose from their nearest to their calibration
   neighbour: the MAD of a handful of templated tasks can be nearly 0, and the fence would
   then call every paraphrase an outlier (:data:`SPREAD_FLOOR`; with it the fence leaves the
   four benchmark indices' thresholds as the percentile set them). Median and MAD ignore up
   to half the tasks, so an outlying task sets neither: its own similarity falls below the
   fence, and it is reported outside the domain that the other tasks define;
3. an absolute floor for the embedder in use (:func:`similarity_floor`): 0 for every
   embedder (a description orthogonal to every indexed task is never covered) and, for the
   bundled all-MiniLM-L6-v2 (:data:`MIN_SIMILARITY`), 0.40, above every description from
   another specialty on the heart and colon benchmark indices (at most 0.37) and below every
   held-out target on the four benchmark indices (at least 0.56; ``benchmarks/domain_check.py``).
   Hashing and user-supplied embedders keep 0: their similarities measure other things
   (shared words and trigrams, hash collisions that grow as ``dim`` shrinks; a user's model's
   own scale), so no fixed level would mean the same.

An outlying task also sits at the end of every other task's neighbour list, so where a task has
at most ``rank`` eligible tasks it would *be* everyone's ``rank``-th (their last) neighbour. Each
task is therefore calibrated on its ``rank``-th neighbour, but never beyond the first three
quarters of its own eligible tasks (``min(rank, n - ceil(n / 4))`` of ``n``, at least the
1st): up to a quarter of the index can lie far away without setting anyone's similarity. An
index of 14 or more eligible tasks per task is calibrated on the 10th neighbour as before.

Leave-one-out index tasks reach the warning only when their own calibration similarity lies
below the threshold (their nearest task is at least as similar as the neighbour they were
calibrated on): at most the percentile's share, plus the outliers that the fence sets aside
(:attr:`DomainCalibration.n_below` counts both).

Why the 10th neighbour and not the nearest: an index built from templated descriptions
(site × outcome × subgroup) holds near-copies of every task, so its tasks' nearest-neighbour
similarities say how alike the template's sentences are, not how far a user's own wording may
be. On the bundled heart-disease index (MiniLM) the nearest other task of every task has
similarity ≥ 0.78, while the README's own query, "Predict coronary artery disease in women
at a Swiss clinic", reaches 0.75; descriptions from other specialties reach 0.14–0.33. Its
10th neighbours give 0.60, which separates the two.

:func:`coverage` describes one description against an index (a :class:`Coverage`):

* ``top_similarity``: the cosine similarity of the nearest eligible indexed task;
* ``effective_similarity``: the mean similarity of the ``k`` nearest, each weighted by
  ``max(similarity, 0)`` (the weights of the neighbour-mean model);
* ``effective_neighbors``: how many of the ``k`` nearest are as close as the index's tasks
  typically are to their nearest neighbour: each counts ``(s - threshold) / (typical -
  threshold)`` clipped to [0, 1], where ``typical`` is the median of the calibration
  tasks' nearest-neighbour similarities. 0 means no indexed task is closer than the threshold.

``in_domain`` needs both: the nearest task at least as similar as the threshold *and* more
than 0 effective neighbours, so that a description with no effective neighbour is never
reported inside the domain.

Every generator attaches it to what it generates, as ``params.metadata["coverage"]``
(:meth:`Coverage.data`); ``ZeroShotClassifier``, ``Generator.generate`` and ``ragim
generate`` warn outside the domain (``ragim generate --strict`` refuses).

The calibration is computed once per index object (at most :data:`MAX_CALIBRATION_TASKS`
seeded tasks) and cached until the index gains or loses tasks.

Examples
--------
>>> from ragim import TaskIndex, datasets
>>> tasks = datasets.synthetic_family(n_tasks=40, n_features=3, seed=0)
>>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
>>> cal = calibrate(index)
>>> cal.n_tasks, cal.threshold <= cal.typical
(40, True)
>>> cal.threshold == max(cal.quantile, cal.robust_bound, cal.floor)
True
>>> cov = coverage(index, tasks.descriptions[0], exclude=[tasks.ids[0]])
>>> cov.in_domain, 0 < cov.top_similarity <= 1
(True, True)
>>> coverage(index, "Vorhersage der Sterblichkeit nach Herzinfarkt bei Frauen").in_domain
False
"""

from __future__ import annotations

import math
import threading
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ragim.checks import check_int, check_number
from ragim.errors import DataWarning, DomainWarning, ValidationError, user_stacklevel
from ragim.index import Exclude, TaskIndex, as_predicate, leak_free, per_query_excludes

#: the percentile of the leave-one-out neighbour similarities below which a description is
#: out of the index's domain
PERCENTILE = 1.0
#: which neighbour of each index task calibrates the threshold (1 = the nearest); never beyond
#: the first three quarters of a task's eligible tasks
RANK = 10
#: the robust fence lies this many spreads below the median calibration similarity
SPREAD_MULTIPLE = 3.0
#: the spread is at least this share of the drop from the typical nearest-neighbour similarity
#: to the median calibration similarity
SPREAD_FLOOR = 0.5
#: 1.4826 * MAD estimates the standard deviation of normally distributed values
MAD_SCALE = 1.4826
#: absolute similarity floors of named sentence-transformers models: below it no description
#: is in any index's domain (see the module docstring; other embedders: 0)
MIN_SIMILARITY: dict[str, float] = {"all-MiniLM-L6-v2": 0.40}
#: neighbours that :func:`coverage` looks at
DEFAULT_K = 10
#: at most this many (seeded) indexed tasks calibrate the threshold
MAX_CALIBRATION_TASKS = 2000

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class DomainCalibration:
    """An index's own spread: the threshold below which a description is out of its domain.

    ``threshold``: ``max(quantile, robust_bound, floor)`` (see the module docstring);
    ``typical``: the median similarity of the calibration tasks' *nearest* neighbours;
    ``n_tasks``: how many tasks reached a neighbour; ``percentile`` and ``rank`` as given to
    :func:`calibrate`; ``similarities``: each calibration task's similarity to its
    ``rank``-th neighbour among the tasks that share none of its patients (never beyond the
    first three quarters of those); ``quantile``: their ``percentile``-th percentile (lower
    value); ``robust_bound``: ``median - SPREAD_MULTIPLE * spread``; ``floor``: the
    embedder's absolute floor (:func:`similarity_floor`); ``n_below``: how many calibration
    tasks fall strictly below the threshold; ``ranks_used``: the lowest and highest
    neighbour rank that calibrated a task (``rank`` itself on an index of 14 or more tasks,
    fewer on a smaller one: 4 on an index of 7). ``threshold``, ``typical``, ``quantile`` and
    ``robust_bound`` are None when fewer than 3 tasks could be calibrated.
    """

    threshold: float | None
    typical: float | None
    n_tasks: int
    percentile: float
    rank: int = RANK
    similarities: tuple[float, ...] = ()
    quantile: float | None = None
    robust_bound: float | None = None
    floor: float = 0.0
    n_below: int = 0
    ranks_used: tuple[int, int] | None = None

    def data(self) -> dict[str, Any]:
        """JSON-safe summary (without the similarities)."""
        d = asdict(self)
        d.pop("similarities")
        return d


def in_domain_verdict(top: float, effective_neighbors: float | None, threshold: float | None):
    """In the domain: the nearest task at least as similar as the threshold and more than 0
    effective neighbours (None when uncalibrated); the rule of :attr:`Coverage.in_domain`.

    >>> in_domain_verdict(0.8, 2.5, 0.6), in_domain_verdict(0.8, 0.0, 0.6)
    (True, False)
    """
    if threshold is None:
        return None
    top, threshold = float(top), float(threshold)
    enough = effective_neighbors is None or float(effective_neighbors) > 0
    return bool(top >= threshold and enough)


@dataclass(frozen=True)
class Coverage:
    """How well an index covers one description; see the module docstring."""

    top_similarity: float
    effective_similarity: float
    effective_neighbors: float | None
    k: int
    threshold: float | None
    typical: float | None
    #: the lowest and highest neighbour rank that calibrated the threshold
    #: (:attr:`DomainCalibration.ranks_used`); None in records saved before it was kept
    rank_min: int | None = None
    rank_max: int | None = None

    @property
    def in_domain(self) -> bool | None:
        """False when the nearest task is less similar than the threshold or no neighbour is
        effective (``effective_neighbors`` 0); None when uncalibrated."""
        return in_domain_verdict(self.top_similarity, self.effective_neighbors, self.threshold)

    def data(self) -> dict[str, Any]:
        """JSON-safe: the fields rounded to 4 decimals, plus ``in_domain``."""
        d = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        d["in_domain"] = self.in_domain
        return d

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> Coverage:
        """The inverse of :meth:`data` (``in_domain`` is recomputed)."""
        try:
            return cls(
                float(d["top_similarity"]),
                float(d["effective_similarity"]),
                None if d.get("effective_neighbors") is None else float(d["effective_neighbors"]),
                int(d["k"]),
                None if d.get("threshold") is None else float(d["threshold"]),
                None if d.get("typical") is None else float(d["typical"]),
                None if d.get("rank_min") is None else int(d["rank_min"]),
                None if d.get("rank_max") is None else int(d["rank_max"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValidationError(f"not a coverage record: {d!r} ({exc})") from None

    def summary(self) -> str:
        """One line: the three measures and the verdict (:func:`ragim.explain.coverage_summary`)."""
        from ragim.explain import coverage_summary

        return coverage_summary(self.data())


def _fingerprint(index: TaskIndex) -> tuple:
    ids = index.ids
    ident = tuple(sorted((k, str(v)) for k, v in index.embedder.identity.items()))
    return (len(ids), ids[0] if ids else None, ids[-1] if ids else None, ident)


def similarity_floor(identity: Mapping[str, Any]) -> float:
    """The absolute similarity below which no description is in any index's domain, for the
    embedder with this identity: :data:`MIN_SIMILARITY` for the sentence-transformers models
    it names, else 0 (hashing and user-supplied embedders; see the module docstring).

    Examples
    --------
    >>> similarity_floor({"kind": "sentence-transformers", "name": "all-MiniLM-L6-v2"})
    0.4
    >>> similarity_floor({"kind": "hashing", "dim": 64, "seed": 0})
    0.0
    """
    if identity.get("kind") == "sentence-transformers":
        return float(MIN_SIMILARITY.get(str(identity.get("name")), 0.0))
    return 0.0


def calibration_rank(n_eligible: int, rank: int = RANK) -> int:
    """Which neighbour calibrates a task that has ``n_eligible`` eligible tasks: the
    ``rank``-th, but never beyond the first three quarters of them (at least the 1st), so
    that up to a quarter of the index lying far away is nobody's calibration neighbour.

    Examples
    --------
    >>> [calibration_rank(n) for n in (1, 2, 4, 6, 12, 13, 14, 100)]
    [1, 1, 3, 4, 9, 9, 10, 10]
    """
    return max(1, min(int(rank), int(n_eligible) - math.ceil(int(n_eligible) / 4)))


def calibrate(
    index: TaskIndex,
    *,
    percentile: float = PERCENTILE,
    rank: int = RANK,
    max_tasks: int = MAX_CALIBRATION_TASKS,
    seed: int = 0,
) -> DomainCalibration:
    """The index's domain threshold, from leave-one-out neighbour similarities (cached).

    Each calibration task's similarity to its :func:`calibration_rank`-th eligible neighbour
    (tasks sharing its patients left out); the threshold is the largest of their lower
    ``percentile``-th percentile, the robust fence ``median - SPREAD_MULTIPLE * spread`` and
    the embedder's floor (:func:`similarity_floor`): see the module docstring for why and
    for the sources.

    Parameters
    ----------
    index : a :class:`~ragim.TaskIndex`.
    percentile : in (0, 100); at most this share of the index's own tasks, besides the
        outliers below the robust fence, has its calibration neighbour below the threshold.
    rank : which neighbour calibrates (1: the nearest; the default 10, see the module docstring).
    max_tasks : calibrate on at most this many tasks (a seeded sample); larger indices cost
        one search per sampled task.
    seed : the sample's seed.

    Returns
    -------
    DomainCalibration

    Raises
    ------
    ValidationError
        When ``percentile`` is not in (0, 100) or ``max_tasks`` < 3.

    Examples
    --------
    >>> from ragim import TaskIndex, datasets
    >>> index = TaskIndex.build(datasets.synthetic_family(n_tasks=20, n_features=2, seed=0),
    ...                         embedder="hashing", progress=False)
    >>> calibrate(index) is calibrate(index)   # computed once per index
    True
    """
    percentile = check_number(percentile, "percentile", gt=0, lt=100)
    max_tasks = check_int(max_tasks, "max_tasks", ge=3)
    rank = check_int(rank, "rank", ge=1)
    key = (_fingerprint(index), float(percentile), int(rank), int(max_tasks), int(seed))
    with _LOCK:
        hit = _CACHE.get(index)
        if hit is not None and hit[0] == key:
            return hit[1]
    ids = index.ids
    if len(ids) > max_tasks:
        rng = np.random.default_rng(seed)
        ids = [ids[i] for i in np.sort(rng.choice(len(ids), max_tasks, replace=False))]
    sims: list[float] = []
    tops: list[float] = []
    ranks_used = None
    if len(ids) >= 2:
        vecs = index.vectors(ids)
        excludes = [leak_free(index.record(t)) for t in ids]
        # 2 * rank + 1 neighbours: fewer found means all of a task's eligible tasks were found
        # (the store returns k whenever k are eligible), and with that many found
        # calibration_rank is `rank` itself
        k = min(2 * rank + 1, len(index))
        hits = index.search_vectors(vecs, k, exclude=excludes)
        used = [calibration_rank(len(h), rank) for h in hits if h]
        sims = [float(h[r - 1].score) for h, r in zip([h for h in hits if h], used, strict=True)]
        tops = [float(h[0].score) for h in hits if h]
        ranks_used = (min(used), max(used)) if used else None
    floor = similarity_floor(index.embedder.identity)
    if len(sims) >= 3:
        s = np.asarray(sims)
        quantile = float(np.percentile(s, percentile, method="lower"))
        typical = float(np.median(tops))
        median = float(np.median(s))
        mad = MAD_SCALE * float(np.median(np.abs(s - median)))
        spread = max(mad, SPREAD_FLOOR * (typical - median))
        bound = median - SPREAD_MULTIPLE * spread
        threshold = max(quantile, bound, floor)
        cal = DomainCalibration(
            threshold,
            typical,
            len(sims),
            float(percentile),
            int(rank),
            tuple(sims),
            quantile,
            float(bound),
            floor,
            int((s < threshold).sum()),
            ranks_used,
        )
    else:
        cal = DomainCalibration(
            None,
            None,
            len(sims),
            float(percentile),
            int(rank),
            tuple(sims),
            floor=floor,
            ranks_used=ranks_used,
        )
    with _LOCK:
        _CACHE[index] = (key, cal)
    return cal


def coverage_from_scores(scores, cal: DomainCalibration) -> Coverage:
    """A :class:`Coverage` from the similarities of the ``k`` nearest eligible tasks (best first).

    Examples
    --------
    >>> cal = DomainCalibration(0.5, 0.8, 100, 1.0)
    >>> cov = coverage_from_scores([0.9, 0.65, 0.3], cal)
    >>> cov.top_similarity, cov.effective_neighbors, cov.in_domain
    (0.9, 1.5, True)
    """
    s = np.asarray(scores, dtype=float)
    if s.size == 0:
        return Coverage(
            float("nan"),
            float("nan"),
            0.0 if cal.threshold is not None else None,
            0,
            cal.threshold,
            cal.typical,
            *(cal.ranks_used or (None, None)),
        )
    w = np.clip(s, 0, None)
    eff_sim = float(w @ s / w.sum()) if w.sum() > 0 else float(s.mean())
    n_eff = None
    if cal.threshold is not None:
        span = cal.typical - cal.threshold
        u = (
            (s >= cal.threshold).astype(float)
            if span <= 0
            else np.clip((s - cal.threshold) / span, 0, 1)
        )
        n_eff = float(u.sum())
    return Coverage(
        float(s[0]),
        eff_sim,
        n_eff,
        int(s.size),
        cal.threshold,
        cal.typical,
        *(cal.ranks_used or (None, None)),
    )


def coverage(
    index: TaskIndex,
    query,
    *,
    exclude: Exclude | list = None,
    k: int = DEFAULT_K,
    vectors: np.ndarray | None = None,
) -> Coverage | list[Coverage]:
    """How well ``index`` covers a description (or a list of them: a list is returned).

    Parameters
    ----------
    index : a :class:`~ragim.TaskIndex`.
    query : a description, a :class:`~ragim.Task`, or a list of either.
    exclude : as in :meth:`TaskIndex.search` (one per query for a batch, or one for all):
        coverage counts only the tasks a generator may use.
    k : neighbours looked at.
    vectors : the queries' embeddings, when already computed.

    Examples
    --------
    >>> from ragim import TaskIndex, datasets
    >>> tasks = datasets.synthetic_family(n_tasks=20, n_features=2, seed=0)
    >>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    >>> [c.k for c in coverage(index, tasks.descriptions[:2], k=3)]
    [3, 3]
    """
    k = check_int(k, "k", ge=1)
    single = not isinstance(query, list | tuple)
    if vectors is None:
        vectors, _, single = index.embed_queries(query)
    cal = calibrate(index)
    hits = index.search_vectors(
        np.asarray(vectors), min(int(k), max(len(index), 1)), exclude=exclude
    )
    out = [coverage_from_scores([h.score for h in hs], cal) for hs in hits]
    return out[0] if single else out


def attach(params, query, index: TaskIndex, *, exclude=None):
    """Add ``metadata["coverage"]`` to generated parameters (one ModelParams or a list for a
    batch of queries); returns them. Generators call it through
    :class:`~ragim.generate.base.Generator`."""
    batch = isinstance(params, list)
    items = params if batch else [params]
    queries = list(query) if batch else [query]
    if len(queries) != len(items):
        raise ValidationError(f"{len(items)} generated models for {len(queries)} queries")
    excludes = per_query_excludes(exclude, len(queries))
    # coverage looks at the neighbours the generator showed (metadata["k"]), when it says
    ks = [shown_k(p) for p in items]
    covs: list[Coverage | None] = [None] * len(items)
    for k in sorted(set(ks)):
        at = [i for i, ki in enumerate(ks) if ki == k]
        group = [excludes[i] for i in at]
        if all(as_predicate(e) is None for e in group):
            group = None
        some = coverage(index, [queries[i] for i in at], exclude=group, k=k)
        for i, cov in zip(at, some, strict=True):
            covs[i] = cov
    for p, cov in zip(items, covs, strict=True):
        p.metadata["coverage"] = cov.data()
    empty = sum(cov.k == 0 for cov in covs)
    if empty:
        warnings.warn(
            f"{empty} of {len(covs)} generated model(s) had no indexed task left after the "
            "exclusions, so they come from no indexed evidence; exclude fewer tasks",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    return params


def shown_k(params) -> int:
    """The neighbours :func:`attach` measures coverage over for generated ``params``: the
    ``metadata["k"]`` the generator showed (>= 1), else :data:`DEFAULT_K`."""
    k = getattr(params, "metadata", {}).get("k")
    return k if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else DEFAULT_K


def out_of_domain_message(cov: Coverage, description: str | None = None) -> str:
    """The one-line message of an out-of-domain description.

    Examples
    --------
    >>> cal = DomainCalibration(0.67, 0.89, 7, 1.0)
    >>> out_of_domain_message(coverage_from_scores([0.23, 0.2], cal))[50:]
    ... # doctest: +ELLIPSIS
    "its nearest indexed task has similarity 0.23, below 0.67, the index's domain threshold..."
    """
    what = f"the description {description[:60]!r}" if description else "the description"
    eff = (
        ""
        if cov.effective_neighbors is None
        else f", {cov.effective_neighbors:.1f} effective neighbour(s)"
    )
    where = "below" if cov.top_similarity < cov.threshold else "but no indexed task is above"
    if cov.rank_max is None:
        neighbour = "a distant neighbour"
    elif cov.rank_min is None or cov.rank_min == cov.rank_max:
        neighbour = f"their {ordinal(cov.rank_max)} neighbour"
    else:
        neighbour = f"their {ordinal(cov.rank_min)} to {ordinal(cov.rank_max)} neighbour"
    return (
        f"{what} is outside what the index covers: its nearest indexed task has similarity "
        f"{cov.top_similarity:.2f}, {where} {cov.threshold:.2f}, the index's domain threshold "
        f"(the similarity its own tasks, outliers aside, keep even to {neighbour}){eff}; the "
        "model is borrowed from unrelated tasks: "
        "validate it on local patients before any use, or use an index that covers this task"
    )


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ... ``11th``, ``21st``.

    >>> [ordinal(n) for n in (1, 2, 3, 4, 10, 11, 12, 13, 21, 22)]
    ['1st', '2nd', '3rd', '4th', '10th', '11th', '12th', '13th', '21st', '22nd']
    """
    n = int(n)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def check(
    params_or_coverage,
    *,
    description: str | None = None,
    strict: bool = False,
    stacklevel: int | None = None,
) -> Coverage | None:
    """Warn (:class:`~ragim.errors.DomainWarning`) when a generated model's description is out
    of the index's domain; with ``strict``, raise :class:`~ragim.errors.ValidationError`
    instead. Takes a :class:`Coverage` or parameters with ``metadata["coverage"]``; returns
    the coverage (None when the parameters carry none)."""
    if isinstance(params_or_coverage, Coverage):
        cov = params_or_coverage
    else:
        raw = getattr(params_or_coverage, "metadata", {}).get("coverage")
        if raw is None:
            return None
        cov = Coverage.from_data(raw)
        description = description or params_or_coverage.metadata.get("description")
    if cov.in_domain is False:
        msg = out_of_domain_message(cov, description)
        if strict:
            raise ValidationError(msg)
        warnings.warn(
            msg,
            DomainWarning,
            stacklevel=user_stacklevel() if stacklevel is None else stacklevel + 1,
        )
    return cov


__all__ = [
    "DEFAULT_K",
    "MAX_CALIBRATION_TASKS",
    "MIN_SIMILARITY",
    "PERCENTILE",
    "RANK",
    "SPREAD_FLOOR",
    "SPREAD_MULTIPLE",
    "Coverage",
    "DomainCalibration",
    "attach",
    "calibrate",
    "calibration_rank",
    "check",
    "coverage",
    "coverage_from_scores",
    "in_domain_verdict",
    "ordinal",
    "out_of_domain_message",
    "similarity_floor",
]
