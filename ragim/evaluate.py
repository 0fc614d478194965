"""Zero- and few-shot evaluation protocols, baselines and reports.

Protocols (no label of a target task is ever used: not in the index, not in
generator training, not in preprocessing statistics, because each fold's index,
schema and generator are built from that fold's training tasks only):

* ``"leave-task-out"``: the targets are split into ``folds`` folds (seeded). For each
  fold the targets *and every task sharing patients with any target*
  (:meth:`TaskCollection.overlapping`) are removed; the index, its schema and the
  generator are built on what is left. This is k-fold leave-task-out, stricter than
  leaving one task out at a time (each index also lacks the fold's other targets).
* ``"leave-group-out"``: by a metadata key (``group=``; by default ``"site"`` when the
  tasks have it, as heart disease does, else ``"group"``, as the synthetic and procedure
  families do: :func:`group_key`). Each group (or each of a given
  list) is held out in turn: every task of the group and every task sharing patients
  with one of them leaves the index.

:func:`assert_leak_free` checks each fold's index (and the generator's training tasks)
before any target is scored. Each target's rows are split (stratified, seeded by the
task id) into a support pool (50%) and test rows (50%; the larger half of each class
when it is odd); every method is scored on the same test rows. A k-shot method sees the
first ``k`` rows of one seeded ordering of the pool that starts with one row of each
class, so the k rows hold both classes whenever the pool does (and k = 4 rows are a
subset of k = 8 rows); with ``random_draws=True`` the ordering is a plain random one.

Methods (the names are a contract; see :data:`METHODS`, extend with
:func:`register_method`):

* ``ragim-attention``: the :class:`~ragim.AttentionGenerator` (zero-shot); with k > 0
  rows, :class:`~ragim.ZeroShotClassifier` adapted on them with its default adaptation
  (``"auto"``: the evidence on the rows chooses, see :mod:`ragim.adaptation`; a single-class
  draw only moves the intercept).
* ``pooled``: one LogisticModel on the rows of every index task.
* ``nearest-neighbor``: the top-1 neighbour's parameters.
* ``neighbor-mean``: the similarity-weighted mean of the top-k neighbours' parameters,
  weights proportional to max(similarity, 0), k = ``k_neighbors``.
* ``per-task-k``: a LogisticModel (C=1) on the k rows (k > 0 only); when the k rows hold
  one class it predicts the smoothed rate ``(n_pos + 1) / (k + 2)`` for every row.
* ``per-task-all``: a LogisticModel (C=1) on the whole support pool (the ceiling);
  the same constant fallback for a single-class pool.
* ``true-model``: ``task.true_params`` where known (synthetic and procedure families).
* ``oracle``: ``task.oracle_params`` where known: the true model without the task's own noise,
  i.e. what the description determines (the sum of the effects on a synthetic task's path; a
  procedure's core plus its code-axis effects). It is the limit of any zero-shot method;
  :func:`ragim.metrics.skill` reports the share of the gap from the best baseline to it that
  each method closes. No other method can see it (``ctx.task`` carries it, and a test checks
  that replacing it changes no other method's scores).
* ``population`` (opt-in): the index's population model, the mean of every leak-free
  index task's parameters weighted by its rows (:meth:`~ragim.TaskIndex.population_params`),
  which the LM generator's prompts show.
* ``rag-im-2024`` (opt-in): the original RAG-IM architecture
  (:class:`~ragim.generate.ragim2024.RagIm2024Generator`, the paper's defaults), trained on
  each fold's leak-free index and used zero-shot.
* ``contextualized`` (opt-in): contextualized-ml's ContextualizedClassifier with the
  description embedding as context, when that package is importable; otherwise a note.
* ``ragim-lm`` (opt-in: it fine-tunes a language model per fold): the
  :class:`~ragim.LMGenerator`, trained with :func:`ragim.train.train_sft` on each fold's
  leak-free index and used zero-shot. ``lm_config`` sets it: :func:`~ragim.train.train_sft`
  arguments (``base_model``, ``max_steps``, ``learning_rate``, ``batch_size``, ``k``,
  ``generator_config``, ``device``, ...) plus the generation options ``rerank``,
  ``reward_model``, ``num_candidates`` and ``temperature`` of
  :meth:`~ragim.LMGenerator.generate_params`. Example: ``zero_shot(tasks,
  methods=["ragim-lm", "pooled"], lm_config={"base_model": "tiny", "max_steps": 20})``.

Examples
--------
>>> from ragim import datasets, evaluate
>>> tasks = datasets.synthetic_family(n_tasks=24, n_features=3, seed=0)
>>> df = evaluate.zero_shot(tasks, methods=["pooled", "true-model"], folds=2, embedder="hashing",
...                         progress=False)
>>> sorted(df["method"].unique())
['pooled', 'true-model']
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from ragim.canonical import canonical_level
from ragim.checks import check_int, check_names
from ragim.errors import DataWarning, RagimError, ValidationError, name_some, user_stacklevel
from ragim.metrics import (
    DEFAULT_SIZE_EDGES,
    METRICS,
    format_table,
    plot_by_group,
    plot_calibration,
    size_group,
    size_labels,
    summarize,
    task_metrics,
    to_records,
)
from ragim.params import ModelParams, design_matrix, model_family
from ragim.tasks import (  # noqa: F401  (the split helpers: ragim.evaluate names too)
    Task,
    TaskCollection,
    draw_order,
    patient_id_set,
    support_test_split,
)

PROTOCOLS = ("leave-task-out", "leave-group-out")
DEFAULT_METHODS = (
    "ragim-statistical",
    "ragim-attention",
    "pooled",
    "nearest-neighbor",
    "neighbor-mean",
    "per-task-k",
    "per-task-all",
    "true-model",
    "oracle",
)
COLUMNS = [
    "dataset",
    "protocol",
    "fold",
    "task_id",
    "n_rows",
    "size_group",
    "method",
    "k_shot",
    "draw",
    *METRICS,
    "n_support",
    "n_test",
    "n_index",
    "status",
]
#: how far outside [0, 1] a method's P(y=1) may stray by rounding (clipped back); beyond it,
#: the method failed on that target (its values are not probabilities)
_PROBABILITY_SLACK = 1e-9
#: errors that mark one method as failed on a fold or target (metrics NaN, ``status`` says why)
#: instead of stopping the whole evaluation
_METHOD_ERRORS = (RagimError, ValueError, RuntimeError, FloatingPointError)


# ---------------------------------------------------------------------- contexts and registry
@dataclass
class FoldContext:
    """What every method may use in one fold: the leak-free index and shared state."""

    fold: int
    index: Any  # TaskIndex
    targets: list[Task]
    removed: list[str]
    k_neighbors: int
    model: str
    seed: int
    generator_config: dict = field(default_factory=dict)
    lm_config: dict = field(default_factory=dict)  # train_sft + generation options of "ragim-lm"
    cache: dict = field(
        default_factory=dict
    )  # per-fold state (trained generators, pooled model, ...)
    notes: list[str] = field(default_factory=list)  # warned: a method skipped or degraded
    info: list[str] = field(default_factory=list)  # reported, not warned: what a method did
    failed: dict[str, str] = field(
        default_factory=dict
    )  # method -> why its setup failed in this fold


@dataclass
class TargetContext:
    """One target task at one k: its test rows, its support pool and the k rows drawn from it."""

    fold: FoldContext
    task: Task
    exclude: Callable[[dict], bool]
    X_test: pd.DataFrame
    y_test: np.ndarray
    X_pool: pd.DataFrame
    y_pool: np.ndarray
    k_shot: int
    X_k: pd.DataFrame | None = None
    y_k: np.ndarray | None = None
    cache: dict = field(default_factory=dict)  # per-target state shared across k and draws
    draw: int = 0  # which random draw of the k rows (0: the support pool's own order)
    k_rows: np.ndarray | None = None  # positions of the k rows in task.X
    test_rows: np.ndarray | None = None  # positions of the test rows in task.X


def design_rows(ctx: TargetContext, rows: np.ndarray) -> np.ndarray:
    """The fold index's design matrix of some of the target's rows (``ctx.test_rows``,
    ``ctx.k_rows``), computed once per target: a method that scores many draws or k values
    need not turn the same patients into features again."""
    index = ctx.fold.index
    key = ("design", index.model)
    if key not in ctx.cache:
        ctx.cache[key] = design_matrix(index.model, index.schema, ctx.task.X)
    return ctx.cache[key][rows]


def _proba(ctx: TargetContext, params: ModelParams) -> np.ndarray:
    """P(y=1) of the test rows under parameters over the fold index's schema."""
    same = params.schema is ctx.fold.index.schema or params.schema == ctx.fold.index.schema
    if not same or params.kind != ctx.fold.index.model or ctx.test_rows is None:
        return params_proba(params, ctx.X_test)
    return expit(params.intercept + design_rows(ctx, ctx.test_rows) @ params.terms)


@dataclass(frozen=True)
class Method:
    """An evaluation method: ``predict(ctx) -> P(y=1) on ctx.X_test`` (or None: not applicable).
    Values outside [0, 1] (beyond rounding), non-finite ones or a wrong count mark the method
    as failed on that target (NaN metrics, ``status`` says why).

    ``shots``: "zero" (scored once, at k_shot=0), "few" (only k > 0) or "both".
    ``setup(fold_ctx)`` runs once per fold before any target (e.g. to train a generator).
    """

    name: str
    predict: Callable[[TargetContext], np.ndarray | None]
    shots: str = "zero"
    setup: Callable[[FoldContext], None] | None = None
    default: bool = True


METHODS: dict[str, Method] = {}


def register_method(
    name: str,
    predict: Callable[[TargetContext], np.ndarray | None],
    *,
    shots: str = "zero",
    setup: Callable[[FoldContext], None] | None = None,
    default: bool = False,
) -> Method:
    """Add (or replace) an evaluation method, e.g. ``"ragim-lm"`` from the LM generator module.

    Examples
    --------
    >>> m = register_method("always-half", lambda ctx: np.full(len(ctx.y_test), 0.5))
    >>> "always-half" in METHODS
    True
    >>> _ = METHODS.pop("always-half")
    """
    if shots not in ("zero", "few", "both"):
        raise ValidationError(f"shots must be 'zero', 'few' or 'both', got {shots!r}")
    METHODS[name] = Method(name, predict, shots, setup, default)
    return METHODS[name]


# ---------------------------------------------------------------------- helpers
def params_proba(params: ModelParams, X: pd.DataFrame) -> np.ndarray:
    """P(y=1) of the rows of ``X`` under a logistic or GAM parameter vector."""
    return expit(params.log_odds(X))


def _estimator(ctx: FoldContext, C: float = 1.0):
    return model_family(ctx.model).estimator(ctx.index.schema, C=C)


def _fit_or_constant(
    fctx: FoldContext, X: pd.DataFrame | None, y: np.ndarray | None, X_test: pd.DataFrame
) -> np.ndarray:
    n = 0 if y is None else len(y)
    n1 = 0 if y is None else int(np.sum(y))
    if n == 0 or n1 in (0, n):
        return np.full(len(X_test), (n1 + 1.0) / (n + 2.0))
    return _estimator(fctx).fit(X, y).predict_proba(X_test)[:, 1]


def _per_task_k(ctx: TargetContext) -> np.ndarray:
    """per-task-k: LogisticModel(C=1) on the k rows (the same solver on the cached design
    matrix for logistic models); the smoothed rate when the k rows hold one class."""
    y = ctx.y_k
    n, n1 = len(y), int(np.sum(y))
    if not model_family(ctx.fold.model).fits_on_design or ctx.k_rows is None or n1 in (0, n):
        return _fit_or_constant(ctx.fold, ctx.X_k, y, ctx.X_test)
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1.0, max_iter=1000, tol=1e-6, random_state=0)
    lr.fit(design_rows(ctx, ctx.k_rows), np.asarray(y).astype(int))
    return lr.predict_proba(design_rows(ctx, ctx.test_rows))[:, 1]


def _task_seed(task_id: str, seed: int) -> int:
    return (zlib.crc32(task_id.encode()) + 1_000_003 * int(seed)) % (2**32)


def _patient_ids(info: dict) -> frozenset:
    return patient_id_set(info.get("metadata"))


def assert_leak_free(
    index, targets: TaskCollection | Sequence[Task], *, group: str | None = None, generator=None
) -> None:
    """Raise :class:`~ragim.errors.ValidationError` naming every leaked task when ``index``
    (or the tasks a ``generator`` was trained on) contains a target, a task sharing patients
    with a target or, with ``group``, a task of a target's group.

    Examples
    --------
    >>> from ragim import TaskIndex, datasets
    >>> tasks = datasets.synthetic_family(n_tasks=12, n_features=3, seed=0)
    >>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    >>> try:
    ...     assert_leak_free(index, [tasks[0]])
    ... except ValidationError as exc:
    ...     print(exc.problems[0])
    'syn-0000000' is a target but is in the index and the index.tasks
    """
    if isinstance(targets, TaskCollection):
        infos = [targets.info(i) for i in range(len(targets))]
    else:
        infos = [{"task_id": t.task_id, "metadata": t.metadata} for t in targets]
    target_ids = {i["task_id"] for i in infos}
    pids = frozenset().union(*(_patient_ids(i) for i in infos)) if infos else frozenset()
    # group codes compare canonically: site "01" of a target is site 1 of an indexed task
    groups = {canonical_level(i["metadata"].get(group)) for i in infos} - {None} if group else set()
    pools = {"index": index.records}
    trained = getattr(generator, "index_", None)
    if trained is not None and trained is not index:
        pools["generator training set"] = trained.records
    for name in ("tasks", "skipped_tasks"):  # rows the generators train or validate on
        kept = getattr(index, name, None)
        if kept is not None:
            pools[f"index.{name}"] = [
                {"task_id": i["task_id"], "metadata": i["metadata"]}
                for i in (kept.info(j) for j in range(len(kept)))
            ]
    leaks: dict[str, tuple[str, list[str]]] = {}
    for where, records in pools.items():
        for rec in records:
            tid, meta = rec["task_id"], rec.get("metadata", {})
            if tid in target_ids:
                why = "is a target"
            elif pids and not pids.isdisjoint(_patient_ids(rec)):
                why = "shares patients with a target"
            elif group and canonical_level(meta.get(group)) in groups:
                why = f"belongs to held-out {group} {meta.get(group)!r}"
            else:
                continue
            leaks.setdefault(tid, (why, []))[1].append(where)
    if leaks:
        raise ValidationError(
            f"the index used for evaluation leaks {len(leaks)} task(s) into zero-shot targets "
            f"{sorted(target_ids)[:5]}{' ...' if len(target_ids) > 5 else ''}; "
            "rebuild it without them:",
            [
                f"{tid!r} {why} but is in the {' and the '.join(where)}"
                for tid, (why, where) in leaks.items()
            ],
        )


# ---------------------------------------------------------------------- built-in methods
def _attention_setup(fctx: FoldContext) -> None:
    from ragim.generate.attention import AttentionGenerator

    own = {k: v for k, v in fctx.generator_config.items() if k != "statistical"}
    cfg = {"k": fctx.k_neighbors, "seed": fctx.seed, **own}
    fctx.cache["attention"] = AttentionGenerator(**cfg).fit(
        fctx.index, progress=False, base_generator=fctx.cache.get("statistical")
    )


def _statistical_setup(fctx: FoldContext) -> None:
    from ragim.generate.statistical import StatisticalGenerator

    if "statistical" in fctx.cache:  # shared by ragim-statistical and map-prior
        return
    cfg = {"seed": fctx.seed, **fctx.generator_config.get("statistical", {})}
    gen = fctx.cache["statistical"] = StatisticalGenerator(**cfg).fit(fctx.index, progress=False)
    weights = ", ".join(
        f"{c} {gen.stack_['baseline'][c]:.2f}/{gen.stack_['slopes'][c]:.2f}"
        for c in gen.stack_["baseline"]
    )
    held = ", ".join(f"{c} {v:.3f}" for c, v in gen.cv_["candidates"].items())
    stacked = "none" if gen.cv_["stack"] is None else f"{gen.cv_['stack']:.3f}"
    fctx.info.append(
        f"ragim-statistical fold {fctx.fold}: stack baseline/slopes {weights}, "
        f"shift {gen.stack_['shift']:+.2f} "
        f"(held-out log-loss in the index: {held or 'none'}, stack {stacked}; "
        f"{gen.cv_['n_tasks']} tasks); {gen.train_seconds_:.0f} s; adaptation policy: "
        + (" ".join(f"{e['k']}={e['option']}" for e in gen.adaptation_policy_.entries) or "none")
    )


def _prior(ctx: TargetContext, name: str, **options):
    """The generator's zero-shot parameters for this target (generated once, shared across k
    and draws); ``options``: the generator's own keywords (none: its defaults, as
    :class:`~ragim.ZeroShotClassifier` generates)."""
    key = ("prior", name, tuple(sorted(options.items())))
    if key not in ctx.cache:
        ctx.cache[key] = ctx.fold.cache[name].generate_params(
            ctx.task.description,
            ctx.fold.index,
            k=ctx.fold.k_neighbors,
            exclude=ctx.exclude,
            **options,
        )
    return ctx.cache[key]


def _generator_predict(ctx: TargetContext, name: str) -> np.ndarray:
    """Zero-shot, or with k rows :class:`~ragim.ZeroShotClassifier`'s default adaptation
    (:func:`ragim.estimator.adapt_prior`, the same function its ``fit`` runs)."""
    from ragim.errors import AdaptationWarning
    from ragim.estimator import adapt_prior

    prior = _prior(ctx, name)
    if ctx.k_shot == 0 or len(ctx.y_k) == 0:  # no labelled rows (an empty support pool)
        return _proba(ctx, prior)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdaptationWarning)
        params, _ = adapt_prior(
            prior,
            ctx.X_k,
            np.asarray(ctx.y_k, dtype=float),
            warn=False,
            design=_k_design(ctx, prior),
        )
    return _proba(ctx, params)


def _k_design(ctx: TargetContext, params: ModelParams) -> np.ndarray | None:
    """The design matrix of the k rows from the target's cached design (None when ``params``
    is not over the fold index's schema and model)."""
    same = params.schema is ctx.fold.index.schema or params.schema == ctx.fold.index.schema
    if not same or params.kind != ctx.fold.index.model or ctx.k_rows is None:
        return None
    return design_rows(ctx, ctx.k_rows)


def _attention_predict(ctx: TargetContext) -> np.ndarray:
    return _generator_predict(ctx, "attention")


def _map_prior_setup(fctx: FoldContext) -> None:
    if "statistical" not in fctx.cache:
        _statistical_setup(fctx)


def _map_prior_predict(ctx: TargetContext) -> np.ndarray | None:
    """MAP logistic regression with the statistical generator's Gaussian prior: mean = the
    generated parameters, SD = their generated SDs (the elicited-prior method of AutoElicit,
    Capstick et al., ICML 2025, with ragim's generator as the elicitor)."""
    from ragim.adaptation import map_with_prior

    prior = _prior(ctx, "statistical")  # with its SDs (the default)
    if prior.std is None:
        return None
    if len(ctx.y_k) == 0:  # no labelled rows (an empty support pool): the prior's mean
        return _proba(ctx, prior)
    D = (
        design_rows(ctx, ctx.k_rows)
        if ctx.k_rows is not None
        else design_matrix(prior.kind, prior.schema, ctx.X_k)
    )
    cand = map_with_prior(D, np.asarray(ctx.y_k, dtype=float), prior.vector, prior.std)
    return _proba(ctx, prior.replace(vector=cand.theta, std=cand.std))


_LM_GENERATE_KEYS = ("rerank", "reward_model", "num_candidates", "n", "temperature")


def _check_lm_options(lm_config: dict) -> None:
    """Refuse generation options of ``lm_config`` that every target would fail on (rerank
    without a reward model, several greedy candidates, ...) before any fold fine-tunes an LM
    (:func:`ragim.generate.lm.generation_options`, with the config ``train_sft`` would build)."""
    from ragim.generate.lm import LMConfig, generation_options

    opts = {key: v for key, v in lm_config.items() if key in _LM_GENERATE_KEYS}
    given = lm_config.get("generator_config")
    cfg = given if isinstance(given, LMConfig) else LMConfig(**dict(given or {}))
    try:
        generation_options(cfg, **opts)
    except ValidationError as exc:
        raise ValidationError(f"lm_config of ragim-lm: {exc}") from None


def _lm_setup(fctx: FoldContext) -> None:
    """Fine-tune an LM generator (SFT) on this fold's leak-free index."""
    from ragim.train.sft import train_sft

    cfg = {key: v for key, v in fctx.lm_config.items() if key not in _LM_GENERATE_KEYS}
    cfg.setdefault("seed", fctx.seed)
    cfg.setdefault("progress", False)
    fctx.cache["lm"] = train_sft(fctx.index, **cfg)
    fctx.cache["lm_seconds"] = []
    fctx.info.append(_lm_note(fctx))


def _lm_note(fctx: FoldContext) -> str:
    """One line on the fold's LM generator: SFT cost and losses, generation time."""
    gen, secs = fctx.cache["lm"], fctx.cache["lm_seconds"]
    losses = [h["loss"] for h in gen.history_ if "loss" in h]
    evals = [h["eval_loss"] for h in gen.history_ if "eval_loss" in h]
    steps = max((h.get("step", 0) for h in gen.history_), default=0)
    text = (
        f"ragim-lm fold {fctx.fold}: SFT {steps} steps in {gen.train_seconds_:.0f} s, "
        f"{gen.n_trainable_params_:,} trainable LoRA parameters"
    )
    if losses:
        text += f", train loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    if evals:
        text += f", validation loss {evals[-1]:.3f}"
    if secs:
        text += f"; generation {np.mean(secs):.1f} s per task ({len(secs)} tasks)"
    return text


def _lm_predict(ctx: TargetContext) -> np.ndarray:
    fctx = ctx.fold
    gen, index = fctx.cache["lm"], fctx.index
    opts = {key: v for key, v in fctx.lm_config.items() if key in _LM_GENERATE_KEYS}
    before = _lm_note(fctx)
    t = time.perf_counter()
    params = gen.generate_params(ctx.task.description, index, exclude=ctx.exclude, **opts)
    fctx.cache["lm_seconds"].append(time.perf_counter() - t)
    fctx.info[fctx.info.index(before)] = _lm_note(fctx)
    return params_proba(params, ctx.X_test)


def _pooled_setup(fctx: FoldContext) -> None:
    tasks = list(fctx.index.tasks)
    X = pd.concat([t.X for t in tasks], ignore_index=True)
    y = np.concatenate([t.y for t in tasks])
    fctx.cache["pooled"] = _estimator(fctx).fit(X, y)


def _nearest_predict(ctx: TargetContext) -> np.ndarray:
    hits = ctx.fold.index.search(ctx.task.description, k=1, exclude=ctx.exclude)
    return params_proba(hits[0].params, ctx.X_test)


def _neighbor_mean_predict(ctx: TargetContext) -> np.ndarray:
    from ragim.estimator import neighbor_mean

    return params_proba(
        neighbor_mean(
            ctx.fold.index, ctx.task.description, k=ctx.fold.k_neighbors, exclude=ctx.exclude
        ),
        ctx.X_test,
    )


def _population_predict(ctx: TargetContext) -> np.ndarray | None:
    p = ctx.fold.index.population_params(ctx.exclude)
    return None if p is None else params_proba(p, ctx.X_test)


def _true_predict(ctx: TargetContext) -> np.ndarray | None:
    tp = ctx.task.true_params
    return None if tp is None else params_proba(tp, ctx.X_test)


def _oracle_predict(ctx: TargetContext) -> np.ndarray | None:
    op = ctx.task.oracle_params
    return None if op is None else params_proba(op, ctx.X_test)


def _ragim2024_setup(fctx: FoldContext) -> None:
    """Train the paper's architecture on this fold's leak-free index."""
    from ragim.generate.ragim2024 import RagIm2024Generator

    gen = RagIm2024Generator(k=fctx.k_neighbors, seed=fctx.seed)
    fctx.cache["rag-im-2024"] = gen.fit(fctx.index, progress=False)


def _ragim2024_predict(ctx: TargetContext) -> np.ndarray:
    gen = ctx.fold.cache["rag-im-2024"]
    params = gen.generate_params(
        ctx.task.description, ctx.fold.index, k=ctx.fold.k_neighbors, exclude=ctx.exclude
    )
    return params_proba(params, ctx.X_test)


#: contextualized-ml's fit settings. Its default batch of 1 row made one evaluation take about
#: 40 minutes. Batch 256 with learning rate 1e-2 had the lowest validation loss (the package's
#: own 20% row split of the index, no target involved) among batches 32-512 and rates 1e-3-3e-2
#: on a 60-task synthetic index and on the heart-disease index.
CONTEXTUALIZED_FIT = {
    "max_epochs": 50,
    "learning_rate": 1e-2,
    "es_patience": 3,
    "train_batch_size": 256,
    "val_batch_size": 1024,
    "test_batch_size": 1024,
}
CONTEXTUALIZED_MAX_ROWS = 20_000  # training rows subsampled per fold
_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning")


@contextlib.contextmanager
def _quiet_lightning():
    """Silence lightning's banners, warnings and prints inside the block, then restore them."""
    import io
    import logging

    loggers = [logging.getLogger(n) for n in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _contextualized_setup(fctx: FoldContext) -> None:
    """Fit contextualized-ml on this fold's index rows, the description embedding as context.

    Checkpoints go to a temporary folder that is removed afterwards, nothing is logged to
    disk, and the random state (numpy's and torch's global ones, which the package uses)
    is seeded from the fold's seed and restored afterwards.
    """
    if importlib.util.find_spec("contextualized") is None:
        fctx.notes.append(
            "contextualized: contextualized-ml is not installed; method skipped "
            "(pip install --no-deps contextualized-ml, see docs/faq.md)"
        )
        fctx.cache["contextualized"] = None
        return
    import functools
    import tempfile

    import torch

    index, rng = fctx.index, np.random.default_rng(fctx.seed)
    tasks = [t for t in index.tasks if t.task_id in index]
    emb = index.vectors([t.task_id for t in tasks])
    D = [design_matrix(index.model, index.schema, t.X) for t in tasks]
    C = np.concatenate([np.repeat(emb[i : i + 1], len(d), 0) for i, d in enumerate(D)])
    C, X = C.astype(np.float32), np.concatenate(D).astype(np.float32)
    y = np.concatenate([t.y for t in tasks]).astype(np.float32)
    keep = rng.permutation(len(y))[:CONTEXTUALIZED_MAX_ROWS]
    with warnings.catch_warnings():  # importing sets lightning's log levels: import, then quiet
        warnings.simplefilter("ignore")
        from contextualized.easy import ContextualizedClassifier
    np_state = np.random.get_state()
    with (
        _quiet_lightning(),
        torch.random.fork_rng(),
        tempfile.TemporaryDirectory(prefix="ragim-contextualized-") as tmp,
    ):
        torch.manual_seed(fctx.seed)
        np.random.seed(fctx.seed % 2**32)
        try:
            model = ContextualizedClassifier(encoder_type="mlp", num_archetypes=8)
            model.trainer_constructor = functools.partial(
                model.trainer_constructor,
                logger=False,
                default_root_dir=tmp,
                enable_model_summary=False,
            )
            model.fit(C[keep], X[keep], y[keep, None], checkpoint_path=tmp, **CONTEXTUALIZED_FIT)
        finally:
            np.random.set_state(np_state)
    fctx.cache["contextualized"] = model


def _contextualized_predict(ctx: TargetContext) -> np.ndarray | None:
    model = ctx.fold.cache.get("contextualized")
    if model is None:
        return None
    index = ctx.fold.index
    c = index.embedder.embed([ctx.task.description])
    X = design_matrix(index.model, index.schema, ctx.X_test)
    with _quiet_lightning():
        C = np.repeat(c, len(X), 0).astype(np.float32)
        p = np.asarray(model.predict_proba(C, X.astype(np.float32)))
    return p.reshape(len(X), -1)[:, -1]


register_method(
    "ragim-statistical",
    lambda c: _generator_predict(c, "statistical"),
    shots="both",
    setup=_statistical_setup,
    default=True,
)
register_method(
    "ragim-attention", _attention_predict, shots="both", setup=_attention_setup, default=True
)
register_method(
    "pooled",
    lambda c: c.fold.cache["pooled"].predict_proba(c.X_test)[:, 1],
    setup=_pooled_setup,
    default=True,
)
register_method("nearest-neighbor", _nearest_predict, default=True)
register_method("neighbor-mean", _neighbor_mean_predict, default=True)
register_method("per-task-k", lambda c: _per_task_k(c), shots="few", default=True)
register_method(
    "per-task-all", lambda c: _fit_or_constant(c.fold, c.X_pool, c.y_pool, c.X_test), default=True
)
register_method("true-model", _true_predict, default=True)
register_method("oracle", _oracle_predict, default=True)
register_method("population", _population_predict)
register_method("map-prior", _map_prior_predict, shots="few", setup=_map_prior_setup)
register_method("rag-im-2024", _ragim2024_predict, setup=_ragim2024_setup)
register_method("contextualized", _contextualized_predict, setup=_contextualized_setup)
register_method("ragim-lm", _lm_predict, setup=_lm_setup)


# ---------------------------------------------------------------------- folds
def group_key(tasks: TaskCollection, group: str | None = None, *, option: str = "group=") -> str:
    """The metadata key a leave-group-out evaluation holds groups out by: ``group``, or
    without it ``"site"`` when the tasks have that key, else ``"group"``.

    Parameters
    ----------
    tasks : the tasks to evaluate.
    group : the metadata key asked for, or None for the default.
    option : how the caller names the setting in the message: ``"group="`` (Python),
        ``"--group"`` (``ragim evaluate``).

    Raises
    ------
    ValidationError
        One line when no task has the key, naming the tasks' metadata keys
        (:meth:`~ragim.TaskCollection.metadata_keys`): "no task has the metadata key
        'group'; pass --group with one of the tasks' keys ['outcome', 'site']".

    Examples
    --------
    >>> import pandas as pd
    >>> from ragim.tasks import Task
    >>> X = pd.DataFrame({"x": [0.0, 1.0]})
    >>> tasks = TaskCollection([Task("a", "d", X, [0, 1], {"site": "A"})])
    >>> group_key(tasks)
    'site'
    >>> group_key(tasks, "hospital", option="--group")
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: no task has the metadata key 'hospital'; pass --group with \
one of the tasks' keys ['site']
    """
    keys = tasks.metadata_keys()
    if group is None:
        group = "site" if "site" in keys else "group"
    if group in keys:
        return group
    raise ValidationError(
        f"no task has the metadata key {group!r}; "
        + (
            f"pass {option} with one of the tasks' keys {keys[:15]}"
            if keys
            else "the tasks have no metadata to hold groups out by (give each task a 'site')"
        )
    )


def _folds(
    tasks: TaskCollection,
    protocol: str,
    group: str | None,
    groups: Sequence | None,
    folds: int,
    seed: int,
    max_targets: int | None,
    targets: Sequence[str] | None = None,
) -> list[tuple[list[int], list[int]]]:
    """(target positions, positions removed from the index) per fold."""
    n = len(tasks)
    rng = np.random.default_rng(seed)
    if targets is not None:
        pos_of = {tid: i for i, tid in enumerate(tasks.ids)}
        unknown = [t for t in targets if t not in pos_of]
        if unknown:
            raise ValidationError(f"targets {unknown[:5]} are not tasks of {tasks.name!r}")
        chosen = np.sort(np.array([pos_of[t] for t in dict.fromkeys(targets)], dtype=np.int64))
        if max_targets is not None and max_targets < len(chosen):
            chosen = np.sort(rng.choice(chosen, max_targets, replace=False))
    else:
        chosen = (
            np.arange(n)
            if max_targets is None or max_targets >= n
            else np.sort(rng.choice(n, max_targets, replace=False))
        )
    if protocol == "leave-task-out":
        if folds < 2:
            raise ValidationError(f"leave-task-out needs folds >= 2, got {folds}")
        parts = [
            np.sort(p) for p in np.array_split(rng.permutation(chosen), min(folds, len(chosen)))
        ]
        plan = [(p.tolist(), p.tolist()) for p in parts if len(p)]
    else:
        group = group_key(tasks, group)
        codes = tasks.group_codes(group)  # "01", 1 and 1.0 are one site, as in group_split
        blank = [tasks.ids[i] for i, c in enumerate(codes) if c is None]
        if blank:  # a blank site in descriptions.csv: such a task is in every fold's index
            warnings.warn(
                f"{len(blank)} task(s) have no {group!r} ({name_some(blank)}): "
                "leave-group-out never holds them out, "
                f"so they stay in the index of every fold, their own {group}'s included; give "
                f"them their {group}",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
        if groups is None:
            held = list(dict.fromkeys(c for c in codes if c is not None))
        else:
            if isinstance(groups, str | bytes):
                groups = [groups]
            held = list(dict.fromkeys(canonical_level(g) for g in groups))
        unknown = [g for g in held if g not in set(codes)]
        if unknown:
            shown = sorted({str(m[group]) for m in tasks.metadata if m.get(group) is not None})
            raise ValidationError(f"no tasks with {group} in {unknown}; known values: {shown}")
        chosen_set = set(chosen.tolist())
        plan = []
        for g in held:
            members = [i for i, c in enumerate(codes) if c == g]
            targets = [i for i in members if i in chosen_set]
            if targets:
                plan.append((targets, members))
    pos = {tid: i for i, tid in enumerate(tasks.ids)}
    has_pids = [bool(m.get("patient_ids")) for m in tasks.metadata]
    out = []
    for targets, removed in plan:
        extra = {pos[o] for i in removed if has_pids[i] for o in tasks.overlapping(tasks[i])}
        out.append((targets, sorted(set(removed) | extra)))
    return out


# ---------------------------------------------------------------------- the runner
def evaluate(
    tasks: TaskCollection,
    *,
    k_shots: Sequence[int] = (0,),
    protocol: str = "leave-task-out",
    group: str | None = None,
    groups: Sequence | None = None,
    methods: Sequence[str] | None = None,
    model: str = "logistic",
    k_neighbors: int = 10,
    folds: int = 5,
    embedder=None,
    generator_config: dict | None = None,
    seed: int = 0,
    progress: bool = True,
    max_targets: int | None = None,
    size_edges: Sequence[int] = DEFAULT_SIZE_EDGES,
    return_predictions: bool = False,
    lm_config: dict | None = None,
    draws: int = 1,
    targets: Sequence[str] | None = None,
    k_within_pool: bool = False,
    random_draws: bool = False,
):
    """Run a protocol at the given k values; see :func:`zero_shot` (the frame's ``attrs``
    hold ``folds``: per fold the target ids, removed ids and index ids, and ``notes``: what each
    fold's generator did (also alone as ``info``), then what was skipped or failed; only the
    latter are also warned).

    ``draws``: at each k > 0, score the few-shot methods on this many random draws of the k
    rows from the support pool (draw 0 is the pool's own order; draw d > 0 is
    :func:`draw_order` seeded by the task and d), each a row with its ``draw`` number; the
    test rows stay the same. ``targets``: the ids of the tasks to score (default: every
    task, or ``max_targets`` of them); the folds are made over them. ``k_within_pool``: skip
    a target's k values larger than its support pool (by default such a k is scored on the
    whole pool, with ``n_support`` < k, and one note per such k, warned, names those
    targets). ``random_draws``: every draw is a simple random
    sample of the pool (:func:`draw_order` with ``both_classes=False``), so a small draw may
    hold one class, as a
    ward's k random patients may; by default every draw starts with one row of each class,
    which over-represents the rarer class at small k (at k = 4 and a 10% event rate about
    30% of the rows are events).

    A method named in ``methods`` that none of ``k_shots`` scores (a zero-shot one such as
    ``pooled`` without k = 0, a few-shot one such as ``per-task-k`` without a k > 0) is
    skipped with a note (warned, and in ``attrs["notes"]``); the default methods keep those
    the k values score without a note.

    Raises :class:`~ragim.errors.ValidationError`, before any fold is built, for an unknown
    protocol or method, when no method is left to score (the note's reason), and for
    ``group`` or ``groups`` given with ``protocol="leave-task-out"`` (which holds no group
    out), ``k_neighbors``, ``max_targets``, ``draws`` below 1, ``folds`` below 2 (leave-task-out),
    a negative ``seed``, ``targets`` or ``methods`` given as one string, an empty ``groups``
    or unordered ``size_edges``."""
    from tqdm.auto import tqdm

    from ragim.embed import get_embedder
    from ragim.index import TaskIndex

    if protocol not in PROTOCOLS:
        raise ValidationError(f"unknown protocol {protocol!r}; use one of {list(PROTOCOLS)}")
    if not isinstance(tasks, TaskCollection):
        tasks = TaskCollection(list(tasks))
    named = methods is not None
    methods = (
        check_names(methods, "methods") if named else [m for m in DEFAULT_METHODS if m in METHODS]
    )
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValidationError(
            f"unknown evaluation method(s) {unknown}; registered: {sorted(METHODS)} "
            "(add one with ragim.evaluate.register_method)"
        )
    k_shots = sorted({check_int(k, "every k_shots entry", ge=0) for k in k_shots})
    if not k_shots:
        raise ValidationError("k_shots is empty; give at least one number of shots, e.g. (0, 8)")
    methods, skipped = _scored_methods(methods, k_shots, named=named)
    draws = check_int(draws, "draws", ge=1)
    k_neighbors = check_int(k_neighbors, "k_neighbors", ge=1)
    max_targets = check_int(max_targets, "max_targets", ge=1, allow_none=True)
    seed = check_int(seed, "seed", ge=0)
    if protocol == "leave-task-out":
        folds = check_int(folds, "folds", ge=2, note="leave-task-out splits the targets into folds")
        given = [n for n, v in (("group", group), ("groups", groups)) if v is not None]
        if given:  # before, they were ignored: every task was scored, leave-task-out
            raise ValidationError(
                f"{' and '.join(given)} hold groups out, which protocol='leave-task-out' does not "
                "do; pass protocol='leave-group-out' (ragim evaluate --protocol leave-group-out)"
            )
    if targets is not None:
        targets = check_names(targets, "targets", what="task ids")
    if groups is not None and not isinstance(groups, str | bytes):
        groups = list(groups)  # read once: a generator would be spent by the check
        if not groups:
            raise ValidationError("groups is empty; give the groups to hold out, or None for all")
    size_labels(size_edges)  # refuse bad edges before any fold is built
    if "ragim-lm" in methods:
        _check_lm_options(dict(lm_config or {}))
    if protocol == "leave-group-out":
        group = group_key(tasks, group)
    emb = get_embedder(embedder)
    gen_cfg = dict(generator_config or {})
    rows, preds, fold_log, notes, info = [], [], [], list(skipped), []
    plan = _folds(tasks, protocol, group, groups, folds, seed, max_targets, targets)
    for f, (target_pos, removed_pos) in enumerate(plan):
        removed = set(removed_pos)
        train = tasks.take([i for i in range(len(tasks)) if i not in removed])
        if len(train) < 3:
            raise ValidationError(
                f"fold {f}: only {len(train)} task(s) remain after removing the targets and "
                "the tasks sharing their patients; use more folds or another protocol"
            )
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", UserWarning
            )  # tasks that cannot be fitted are listed in index.skipped
            index = TaskIndex.build(train, model=model, embedder=emb, progress=False)
        targets = [tasks[i] for i in target_pos]
        fctx = FoldContext(
            f,
            index,
            targets,
            [tasks.ids[i] for i in removed_pos],
            k_neighbors,
            model,
            seed,
            gen_cfg,
            dict(lm_config or {}),
        )
        held = group if protocol == "leave-group-out" else None
        assert_leak_free(index, targets, group=held)
        for name in methods:
            if METHODS[name].setup is not None:
                try:
                    METHODS[name].setup(fctx)
                except _METHOD_ERRORS as exc:
                    fctx.failed[name] = f"setup failed in fold {f}: {type(exc).__name__}: {exc}"
        gen = fctx.cache.get("attention")
        for trained in (gen, fctx.cache.get("lm")):  # what the generators trained on, too
            assert_leak_free(index, targets, group=held, generator=trained)
        fold_log.append(
            {
                "fold": f,
                "targets": [t.task_id for t in targets],
                "removed": fctx.removed,
                "index_ids": index.ids,
                "generator_ids": [] if gen is None else gen.index_.tasks.ids,
            }
        )
        for task in tqdm(
            targets,
            desc=f"{tasks.name} {protocol} fold {f + 1}/{len(plan)}",
            disable=None if progress else True,
        ):
            rows_t, preds_t = _score_target(
                fctx,
                task,
                methods,
                k_shots,
                held,
                int(draws),
                k_within_pool=k_within_pool,
                random_draws=random_draws,
            )
            for r in rows_t:
                r.update(
                    dataset=tasks.name,
                    protocol=protocol,
                    fold=f,
                    n_rows=task.n_rows,
                    size_group=size_group(task.n_rows, size_edges),
                    n_index=len(index),
                )
            rows.extend(rows_t)
            preds.extend(preds_t)
        notes.extend(n for n in fctx.notes if n not in notes)
        info.extend(fctx.info)
    for name in ("true-model", "oracle"):
        if name in methods and not any(r["method"] == name for r in rows):
            notes.append(
                f"{name}: no target has known "
                f"{'true' if name == 'true-model' else 'oracle'} parameters; method skipped"
            )
    notes.extend(_short_pools(rows, k_shots))
    bad = [r for r in rows if r["status"] != "ok"]
    for name in dict.fromkeys(r["method"] for r in bad):
        mine = [r for r in bad if r["method"] == name]
        notes.append(
            f"{name}: failed on {len(mine)} target x k row(s), scored NaN "
            f"(first: {mine[0]['task_id']}: {mine[0]['status']})"
        )
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs = {"folds": fold_log, "notes": [*info, *notes], "info": info}
    for n in notes:  # the informational notes (what each fold's generator did) are not warned
        warnings.warn(n, stacklevel=user_stacklevel())
    if return_predictions:
        return df, pd.DataFrame(
            preds, columns=["task_id", "method", "k_shot", "draw", "row", "y", "p"]
        )
    return df


def _short_pools(rows: list[dict], k_shots: list[int]) -> list[str]:
    """One note per k whose few-shot rows include targets with fewer than k rows in their
    support pool: their methods got the whole pool, yet the summary reports them as k."""
    out = []
    for k in (k for k in k_shots if k > 0):
        at_k = [r for r in rows if r["k_shot"] == k and METHODS[r["method"]].shots != "zero"]
        short = {r["task_id"]: r["n_support"] for r in at_k if r["n_support"] < k}
        if short:
            got = sorted(set(short.values()))
            span = str(got[0]) if len(got) == 1 else f"{got[0]} to {got[-1]}"
            n_all = len({r["task_id"] for r in at_k})
            out.append(
                f"k={k}: {len(short)} of {n_all} target(s) have fewer than {k} rows in their "
                f"support pool (half of a task's rows), so their few-shot methods were given "
                f"{span} rows ({name_some(sorted(short))}); the k={k} scores mix these in "
                "(k_within_pool=True leaves such targets out)"
            )
    return out


def _scored_methods(
    methods: list[str], k_shots: list[int], *, named: bool
) -> tuple[list[str], list[str]]:
    """The methods that the k values score (a zero-shot method needs k = 0 among them, a
    few-shot one a k > 0), and a note for each named method that none of them scores (before,
    such a method was silently absent from the results). When no named method is scored at
    all, a :class:`ValidationError` says why, before any fold is built."""
    zero, few = 0 in k_shots, any(k > 0 for k in k_shots)
    why = {}
    for m in methods:
        if METHODS[m].shots == "zero" and not zero:
            why[m] = (
                f"{m}: a zero-shot method, scored at k_shot 0 only, and k_shots {k_shots} has "
                "no 0 (few_shot(..., reference=True), ragim evaluate --k-shots 0,...); "
                "method skipped"
            )
        elif METHODS[m].shots == "few" and not few:
            why[m] = (
                f"{m}: needs k > 0 labelled rows, and k_shots {k_shots} has none "
                "(few_shot(..., k_shots=(8,)), ragim evaluate --k-shots 0,8); method skipped"
            )
    kept = [m for m in methods if m not in why]
    if not kept:
        reasons = [t.removesuffix("; method skipped") for t in why.values()]
        raise ValidationError("no method to score: " + "; ".join(reasons))
    return kept, list(why.values()) if named else []


def _predict(fctx: FoldContext, name: str, ctx: TargetContext) -> tuple[np.ndarray | None, str]:
    """(probabilities or None, "ok" or why the method failed on this target)."""
    if name in fctx.failed:
        return None, fctx.failed[name]
    try:
        p = METHODS[name].predict(ctx)
    except _METHOD_ERRORS as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    if p is None:
        return None, "ok"
    p = np.asarray(p, dtype=float).reshape(-1)
    if p.shape != ctx.y_test.shape or not np.all(np.isfinite(p)):
        return None, (
            f"returned {p.shape[0]} values for {ctx.y_test.shape[0]} test rows, "
            f"{int(np.sum(~np.isfinite(p)))} non-finite"
        )
    if p.min() < -_PROBABILITY_SLACK or p.max() > 1 + _PROBABILITY_SLACK:  # not probabilities
        return None, (
            f"returned values outside [0, 1] (from {p.min():.4g} to {p.max():.4g}); a method "
            "returns P(y=1), not log-odds"
        )
    return np.clip(p, 0.0, 1.0), "ok"  # rounding only


def _score_target(
    fctx: FoldContext,
    task: Task,
    methods: list[str],
    k_shots: list[int],
    group: str | None,
    draws: int = 1,
    *,
    k_within_pool: bool = False,
    random_draws: bool = False,
):
    from ragim.index import leak_free

    seed = _task_seed(task.task_id, fctx.seed)
    pool, test = support_test_split(task.y, seed)
    if len(test) == 0:  # a data file with a header and no rows: nothing to score
        fctx.notes.append(f"{task.task_id}: no rows to score (a task of 0 rows); not scored")
        return [], []
    X_test, y_test = task.X.iloc[test].reset_index(drop=True), task.y[test]
    base = dict(
        fold=fctx,
        task=task,
        exclude=leak_free(task, group=group),
        X_test=X_test,
        y_test=y_test,
        X_pool=task.X.iloc[pool].reset_index(drop=True),
        y_pool=task.y[pool],
    )
    if random_draws:
        orders = [
            pool[draw_order(task.y[pool], seed + 7919 * d, both_classes=False)]
            for d in range(draws)
        ]
    else:
        orders = [pool] + [pool[draw_order(task.y[pool], seed + 7919 * d)] for d in range(1, draws)]
    cache: dict = {}
    rows, preds = [], []
    for k in k_shots:
        if k_within_pool and k > len(pool):
            continue
        for d in range(draws if k > 0 else 1):
            rows_k = orders[d][:k]
            ctx = TargetContext(
                **base,
                k_shot=k,
                cache=cache,
                draw=d,
                X_k=task.X.iloc[rows_k].reset_index(drop=True) if k else None,
                y_k=task.y[rows_k] if k else None,
                k_rows=rows_k if k else None,
                test_rows=test,
            )
            for name in methods:
                shots = METHODS[name].shots
                if (k == 0 and shots == "few") or (k > 0 and shots == "zero"):
                    continue
                p, status = _predict(fctx, name, ctx)
                if p is None and status == "ok":
                    continue
                n_support = (
                    len(rows_k) if shots != "zero" else (len(pool) if name == "per-task-all" else 0)
                )
                metrics = (
                    task_metrics(y_test, p) if p is not None else dict.fromkeys(METRICS, np.nan)
                )
                rows.append(
                    {
                        "task_id": task.task_id,
                        "method": name,
                        "k_shot": k,
                        "draw": d,
                        **metrics,
                        "n_support": n_support,
                        "n_test": len(test),
                        "status": status,
                    }
                )
                if p is None:
                    continue
                preds.extend(
                    {
                        "task_id": task.task_id,
                        "method": name,
                        "k_shot": k,
                        "draw": d,
                        "row": int(r),
                        "y": int(yy),
                        "p": float(pp),
                    }
                    for r, yy, pp in zip(test, y_test, p, strict=True)
                )
    return rows, preds


def zero_shot(tasks: TaskCollection, **kwargs):
    """Zero-shot evaluation: one row per target task and method (k_shot = 0); the keywords
    are those of :func:`evaluate` (all but ``k_shots``), with its defaults.

    Parameters
    ----------
    tasks : the task family (its ``name`` becomes the ``dataset`` column).
    protocol : "leave-task-out" (``folds`` folds over tasks) or "leave-group-out"
        (``group`` metadata key, default "site" when present else "group"; ``groups=`` a list
        of values to hold out, default all).
    methods : method names (default :data:`DEFAULT_METHODS`); "contextualized" is opt-in.
    model : "logistic" or "gam" (index models and per-task baselines).
    k_neighbors : neighbours for the generator and for neighbor-mean.
    embedder : description embedder (None: MiniLM, as :meth:`TaskIndex.build`; "hashing" for tests).
    generator_config : AttentionGenerator overrides, e.g. ``{"max_epochs": 20}``.
    lm_config : "ragim-lm" settings (passed through ``kwargs``): :func:`ragim.train.train_sft`
        arguments plus ``rerank``, ``reward_model``, ``num_candidates``, ``temperature``; e.g.
        ``{"base_model": "tiny", "max_steps": 20, "k": 3}``.
    max_targets : score only this many (seeded) targets; the index still excludes the whole fold.
    return_predictions : also return a long frame of test-row predictions
        (``task_id, method, k_shot, draw, row, y, p``) for :func:`plot_calibration` and
        :mod:`ragim.calibration`.
    groups : leave-group-out values to hold out; ``size_edges``: task-size group edges in
        rows, default ``(50, 200, 1000)``.

    Returns
    -------
    A frame with columns ``dataset, protocol, fold, task_id, n_rows, size_group, method,
    k_shot, draw, auroc, log_loss, brier, ece, accuracy, n_support, n_test, n_index, status``
    (``status``: "ok", or why the method failed on that target, its metrics then NaN).
    """
    return evaluate(tasks, k_shots=(0,), **kwargs)


def few_shot(
    tasks: TaskCollection,
    *,
    k_shots: Sequence[int] = (4, 8, 16, 32),
    reference: bool = True,
    **kwargs,
):
    """Few-shot evaluation at each k in ``k_shots`` (other arguments as :func:`zero_shot`,
    plus ``draws`` and ``targets`` of :func:`evaluate`).

    Methods that use the k rows (the generators adapted, per-task-k, map-prior) get one row
    per k (per draw with ``draws``); with ``reference`` the k-independent methods (and the
    generators zero-shot) are scored once at k_shot = 0 in the same frame, on the same test rows.
    """
    ks = [int(k) for k in k_shots]
    if any(k < 1 for k in ks):
        raise ValidationError(f"few_shot needs k >= 1, got {ks}; use zero_shot for k = 0")
    return evaluate(tasks, k_shots=([0] if reference else []) + ks, **kwargs)


__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "Method",
    "FoldContext",
    "TargetContext",
    "assert_leak_free",
    "design_rows",
    "draw_order",
    "evaluate",
    "few_shot",
    "format_table",
    "group_key",
    "params_proba",
    "plot_by_group",
    "plot_calibration",
    "register_method",
    "summarize",
    "support_test_split",
    "to_records",
    "zero_shot",
]
