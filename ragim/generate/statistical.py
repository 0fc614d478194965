"""StatisticalGenerator: noise-aware random-effects meta-regression, stacked by validation in the index.

The default generator of ragim. It treats every indexed fit as a *noisy observation* of
its task's true parameters, and learns from the index which parts of a description
predict how a task departs from the pooled model:

1. **Pooled model.** One L2 logistic model on the rows of every indexed task: the fallback
   when nothing in a description is known.
2. **Task summaries.** Each task is refitted with a prior centred on the pooled model;
   its MAP parameters and their Laplace variances say how far, and how surely, it departs
   (a 12-row task says little; a 2,000-row task says a lot).
3. **Candidates.** Deviations from the pooled model are regressed on the description, the
   intercept and the slopes separately, with noise-aware Gaussian processes
   (:mod:`ragim.generate.meta_regression`):

   * ``"text"``: word n-grams, each weighted by a relevance learned on the index
     (automatic relevance determination), so the words that track outcome rates and
     effects (a site, a sex, a procedure's approach) count and template words do not;
   * ``"neighbors"``: description-embedding similarity, sharpened towards close neighbours;
   * ``"pooled"``: no deviation.
4. **Stacking.** The candidates' log-odds are combined as ``a + sum_c w_c * logit_c``
   (``w_c >= 0``), with ``a`` and ``w`` chosen by leave-task-out cross-validation *inside
   the index* (tasks that share patients are held out together), on the mean per-task
   log-loss. Because the combination is linear in the parameters, the result is again one
   interpretable model, and it can only match or beat the best single candidate in
   expectation (a super learner; van der Laan, Polley & Hubbard, 2007).
5. **Intervals.** Each coefficient gets a standard deviation from the candidates' GP
   posteriors (a new task's own unexplained deviation included), scaled so that the
   held-out tasks' estimates are covered at their nominal rate.

Examples
--------
>>> from ragim import TaskIndex, datasets
>>> tasks = datasets.synthetic_family(n_tasks=40, n_features=3, seed=0)
>>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
>>> gen = StatisticalGenerator().fit(index, progress=False)
>>> p = gen.generate_params(tasks.descriptions[0])
>>> p.std.shape == p.vector.shape, p.metadata["generator"]
(True, 'statistical')
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_expit

from ragim.errors import ArtifactError, ValidationError
from ragim.generate.base import Generator, register_generator
from ragim.generate.meta_regression import (
    VAR_BOUNDS,
    KernelRegression,
    TaskSummaries,
    embedding_kernel,
    fit_kernel_scale,
    ngram_relevance,
    task_summaries,
)
from ragim.params import ModelParams, design_matrix, param_names
from ragim.tasks import Task

FORMAT = "ragim.statistical-generator"
CANDIDATES = ("pooled", "text", "neighbors")
_TOKENS = r"(?u)\b\w+\b"  # keep one-character words ("stage I", "type 2")


@dataclass
class StatisticalConfig:
    """Settings of the :class:`StatisticalGenerator` (saved as ``config.json``)."""

    candidates: tuple[str, ...] = field(default=CANDIDATES, metadata={"help": "candidate models the stack combines"})
    max_tasks: int = field(default=1000, metadata={"help": "tasks the meta-regression learns from (the largest)"})
    prior_sd: float = field(default=1.0, metadata={"help": "prior SD of a task's slopes around the pooled model"})
    intercept_prior_sd: float = field(default=3.0, metadata={"help": "prior SD of a task's intercept (log-odds)"})
    ngram_max: int = field(default=2, metadata={"help": "longest word n-gram of the text candidate"})
    min_df: int = field(default=2, metadata={"help": "n-grams must occur in at least this many descriptions"})
    embedding_sharpness: float = field(default=5.0, metadata={"help": "kernel exp(s (cos - 1)) of the neighbors candidate"})
    cv_folds: int = field(default=3, metadata={"help": "leave-task-out folds that choose the stack weights"})
    ard_iters: int = field(default=40, metadata={"help": "relevance updates of the text candidate"})
    max_rows_per_task: int = field(default=500, metadata={"help": "rows per task in the validation loss"})
    pooled_rows: int = field(default=200_000, metadata={"help": "rows the pooled model is fitted on (subsampled)"})
    seed: int = field(default=0, metadata={"help": "random seed (folds, subsamples)"})

    def __post_init__(self):
        self.candidates = tuple(self.candidates)
        problems = []
        unknown = [c for c in self.candidates if c not in CANDIDATES]
        if unknown or not self.candidates:
            problems.append(f"candidates must be a non-empty subset of {list(CANDIDATES)}, got {list(self.candidates)}")
        for name in ("max_tasks", "ngram_max", "min_df", "cv_folds", "ard_iters", "max_rows_per_task", "pooled_rows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.cv_folds, int) and self.cv_folds < 2:
            problems.append(f"cv_folds must be at least 2, got {self.cv_folds}")
        for name in ("prior_sd", "intercept_prior_sd", "embedding_sharpness"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                problems.append(f"{name} must be a positive number, got {v!r}")
        if problems:
            raise ValidationError("invalid StatisticalConfig:", problems)


# ---------------------------------------------------------------------- candidates
class _Fitted:
    """The candidates fitted on one set of task summaries (all of them, or a CV fold's)."""

    def __init__(self, cfg: StatisticalConfig, summ: TaskSummaries, pooled: np.ndarray, descriptions: list[str],
                 vectors: np.ndarray, groups: dict[str, list[int]], *, state: dict | None = None):
        self.cfg, self.groups = cfg, groups
        self.ids = list(summ.ids)
        self.Y = summ.theta - pooled
        self.V = summ.var
        self.descriptions = descriptions
        self.vectors = vectors
        self.state = state if state is not None else {}
        self.parts: dict[str, dict[str, Any]] = {}
        if "pooled" in cfg.candidates:
            self.parts["pooled"] = {g: self._pooled_var(cols) for g, cols in groups.items()}
        if "text" in cfg.candidates:
            self._fit_text()
        if "neighbors" in cfg.candidates:
            self._fit_neighbors()

    def _pooled_var(self, cols: list[int]) -> float:
        key = f"pooled_var_{cols[0]}"
        if key not in self.state:
            self.state[key] = float(max(np.mean(self.Y[:, cols] ** 2) - np.mean(self.V[:, cols]), 1e-4))
        return self.state[key]

    # -- text: n-grams with learned relevance
    def _vectorizer(self):
        from sklearn.feature_extraction.text import CountVectorizer

        vocab = self.state.get("vocabulary")
        if vocab is not None:
            return CountVectorizer(ngram_range=(1, self.cfg.ngram_max), token_pattern=_TOKENS, binary=True,
                                   vocabulary=vocab)
        vec = CountVectorizer(ngram_range=(1, self.cfg.ngram_max), token_pattern=_TOKENS, binary=True,
                              min_df=min(self.cfg.min_df, len(self.descriptions)))
        try:
            vec.fit(self.descriptions)
        except ValueError:  # no n-gram is shared by min_df descriptions
            return None
        self.state["vocabulary"] = {t: int(i) for t, i in vec.vocabulary_.items()}
        return vec

    def _text_features(self, texts: list[str]) -> np.ndarray:
        X = self.vec.transform(texts).toarray().astype(float)
        return np.hstack([np.ones((len(texts), 1)), X])  # a constant: a shared offset from the pooled model

    def _fit_text(self):
        self.vec = self._vectorizer()
        if self.vec is None:
            return
        Phi = self._text_features(self.descriptions)
        parts = {}
        for g, cols in self.groups.items():
            key = f"tau_{g}"
            if key not in self.state:
                tau, nug = ngram_relevance(Phi, self.Y[:, cols], self.V[:, cols], iters=self.cfg.ard_iters)
                self.state[key], self.state[f"text_nugget_{g}"] = tau, nug
            tau, nug = self.state[key], self.state[f"text_nugget_{g}"]
            keep = tau > 1e-6 * max(float(tau.max()), 1e-12)
            Pk = Phi[:, keep]
            parts[g] = {"keep": keep, "tau": tau[keep], "Phi": Pk,
                        "gp": KernelRegression((Pk * tau[keep]) @ Pk.T, self.Y[:, cols], self.V[:, cols], nug)}
        self.parts["text"] = parts

    # -- neighbors: embedding similarity
    def _fit_neighbors(self):
        K = embedding_kernel(self.vectors, sharpness=self.cfg.embedding_sharpness)
        parts = {}
        for g, cols in self.groups.items():
            key = f"emb_scale_{g}"
            if key not in self.state:
                self.state[key], self.state[f"emb_nugget_{g}"] = fit_kernel_scale(K, self.Y[:, cols], self.V[:, cols])
            h, nug = self.state[key], self.state[f"emb_nugget_{g}"]
            parts[g] = {"h": h, "gp": KernelRegression(h * K, self.Y[:, cols], self.V[:, cols], nug)}
        self.parts["neighbors"] = parts

    # -- prediction
    def predict(self, texts: list[str], vectors: np.ndarray | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per candidate: (deviations (q, P), variances (q, P)) for new descriptions."""
        q, P = len(texts), self.Y.shape[1]
        out = {}
        for name, parts in self.parts.items():
            mean, var = np.zeros((q, P)), np.zeros((q, P))
            if name == "pooled":
                for g, cols in self.groups.items():
                    var[:, cols] = parts[g]
            elif name == "text":
                Phi_q = self._text_features(texts)
                for g, cols in self.groups.items():
                    part = parts[g]
                    fq = Phi_q[:, part["keep"]]
                    k = (fq * part["tau"]) @ part["Phi"].T
                    mean[:, cols] = part["gp"].mean(k)
                    var[:, cols] = part["gp"].variance(k, np.einsum("ij,ij->i", fq * part["tau"], fq))[:, None]
            else:
                k_raw = embedding_kernel(self.vectors, vectors, sharpness=self.cfg.embedding_sharpness)
                for g, cols in self.groups.items():
                    part = parts[g]
                    mean[:, cols] = part["gp"].mean(part["h"] * k_raw)
                    var[:, cols] = part["gp"].variance(part["h"] * k_raw, np.full(q, part["h"]))[:, None]
            out[name] = (mean, var)
        return out

    def weights(self, name: str, texts: list[str], vectors: np.ndarray | None) -> np.ndarray:
        """Each training task's weight in candidate ``name``'s intercept, shape (q, n)."""
        part = self.parts[name]["intercept"]
        if name == "text":
            fq = self._text_features(texts)[:, part["keep"]]
            return part["gp"].weights((fq * part["tau"]) @ part["Phi"].T)
        k = part["h"] * embedding_kernel(self.vectors, vectors, sharpness=self.cfg.embedding_sharpness)
        return part["gp"].weights(k)


# ---------------------------------------------------------------------- the generator
@register_generator("statistical")
class StatisticalGenerator(Generator):
    """Noise-aware meta-regression of task models on their descriptions; see the module docstring.

    Parameters
    ----------
    config : :class:`StatisticalConfig`; keyword overrides are accepted too
        (``StatisticalGenerator(candidates=("pooled", "text"))``).

    Attributes (after :meth:`fit`)
    ------------------------------
    stack_ : ``{"intercept": a, "weights": {candidate: w}}``, chosen by validation inside the index.
    cv_ : the validation table: held-out mean log-loss of each candidate and of the stack.
    interval_scale_ : the factor that calibrates the coefficient SDs on held-out tasks.
    """

    def __init__(self, config: StatisticalConfig | None = None, **overrides: Any):
        cfg = config or StatisticalConfig()
        self.config = StatisticalConfig(**{**asdict(cfg), **overrides})
        self.fitted_: _Fitted | None = None

    # ------------------------------------------------------------------ fit
    def fit(self, index, *, progress: bool = True) -> StatisticalGenerator:
        """Learn from the tasks (and their rows) of ``index``; see the module docstring.

        Raises
        ------
        ValidationError
            When the index holds no task rows (built with ``keep_tasks=False``, grown with
            ``add()`` or saved without tasks) or fewer than 3 tasks.
        """
        from tqdm.auto import tqdm

        cfg = self.config
        t0 = time.perf_counter()
        tasks = _index_tasks(index)
        rng = np.random.default_rng(cfg.seed)
        bar = tqdm(total=3 + cfg.cv_folds, desc="statistical generator", disable=not progress, leave=False)
        self.model_kind_, self.schema_ = index.model, index.schema
        self.param_names_ = param_names(index.model, index.schema)
        self.embedder_identity_ = index.embedder.identity
        self.pooled_ = _pooled_fit(index, tasks, cfg.pooled_rows, rng)
        bar.update()
        if len(tasks) > cfg.max_tasks:  # the largest tasks carry the most information
            order = np.argsort([-t.n_rows for t in tasks], kind="stable")[: cfg.max_tasks]
            tasks = [tasks[i] for i in sorted(order)]
        summ = task_summaries(tasks, index.model, index.schema, self.pooled_, prior_sd=cfg.prior_sd,
                              intercept_prior_sd=cfg.intercept_prior_sd)
        descriptions = [t.description for t in tasks]
        vectors = index.vectors(summ.ids).astype(np.float64)
        groups = {"intercept": [0], "slopes": list(range(1, len(self.pooled_)))}
        bar.update()
        folds = _folds([index.record(t) for t in summ.ids], cfg.cv_folds, rng)
        held: list[dict[str, np.ndarray]] = []
        held_rows, held_pos = [], []
        for train, test in folds:
            part = _Fitted(cfg, summ.take(train), self.pooled_, [descriptions[i] for i in train], vectors[train], groups)
            pred = part.predict([descriptions[i] for i in test], vectors[test])
            held.append(pred)
            held_pos.append(test)
            held_rows.extend(_rows(tasks[i], index, cfg.max_rows_per_task, rng) for i in test)
            bar.update()
        self.stack_, self.cv_, self.interval_scale_ = _stack(cfg.candidates, held, held_pos, held_rows, summ,
                                                             self.pooled_)
        self.fitted_ = _Fitted(cfg, summ, self.pooled_, descriptions, vectors, groups)
        self.summaries_, self.descriptions_, self.vectors_, self.groups_ = summ, descriptions, vectors, groups
        self.index_ = index
        self.train_seconds_ = time.perf_counter() - t0
        bar.update()
        bar.close()
        return self

    # ------------------------------------------------------------------ generation
    def _check_ready(self, index) -> None:
        from ragim.embed import check_identity

        if self.fitted_ is None:
            raise ValidationError("this StatisticalGenerator is not fitted; call fit(index) or load() first")
        if index.model != self.model_kind_ or param_names(index.model, index.schema) != self.param_names_:
            raise ValidationError(
                f"the index ({index.model}, {len(param_names(index.model, index.schema))} params) does not match the "
                f"generator ({self.model_kind_}, {len(self.param_names_)} params); use the index it was fitted on"
            )
        check_identity(self.embedder_identity_, index.embedder)

    def generate_params(self, query: str | Task | Sequence[str | Task], index=None, *, k: int | None = None,
                        exclude=None, uncertainty: bool = True) -> ModelParams | list[ModelParams]:
        """Generated parameters with provenance and, with ``uncertainty``, a SD per coefficient.

        Parameters
        ----------
        query : a description, a Task, or a list of either.
        index : the index it was fitted on (default: that one).
        k : how many of the tasks that shaped the model to list in its provenance (default 10).
        exclude : task ids or a predicate over index records (e.g. :func:`ragim.index.leak_free`);
            excluded tasks are removed from what the model learns from (the meta-regression is
            refitted without them for these queries).

        Returns
        -------
        ModelParams (a list for a batch), ``metadata["provenance"]`` listing the tasks with
        the largest weights, ``metadata["stack"]`` the candidates' weights.
        """
        from ragim.index import per_query_excludes

        index = self._resolve_index(index)
        self._check_ready(index)
        if k is not None and (isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1):
            raise ValidationError(f"k must be a positive integer (tasks listed in the provenance), got {k!r}")
        k = 10 if k is None else int(k)
        vecs, items, single = index.embed_queries(query)
        texts = [q.description if isinstance(q, Task) else q for q in items]
        excludes = per_query_excludes(exclude, len(items))
        out: list[ModelParams | None] = [None] * len(items)
        by_fit: dict[frozenset, list[int]] = {}
        for qi, ex in enumerate(excludes):
            by_fit.setdefault(self._excluded(index, ex), []).append(qi)
        for dropped, qis in by_fit.items():
            fitted = self._fitted_without(dropped)
            params = self._combine(fitted, [texts[i] for i in qis], vecs[qis].astype(np.float64), uncertainty, k)
            for qi, p in zip(qis, params, strict=True):
                if isinstance(items[qi], Task):
                    p.metadata["task_id"] = items[qi].task_id
                if dropped:
                    p.metadata["excluded_from_fit"] = len(dropped)
                out[qi] = p
        return out[0] if single else out

    def _excluded(self, index, exclude) -> frozenset:
        from ragim.index import as_predicate

        pred = as_predicate(exclude)
        if pred is None:
            return frozenset()
        return frozenset(t for t in self.summaries_.ids if t in index and pred(index.record(t)))

    def _fitted_without(self, dropped: frozenset) -> _Fitted:
        if not dropped:
            return self.fitted_
        cache = self.__dict__.setdefault("_refits", {})
        if dropped not in cache:
            keep = [i for i, t in enumerate(self.summaries_.ids) if t not in dropped]
            if len(keep) < 2:
                raise ValidationError(f"only {len(keep)} task(s) remain after the exclusions; relax `exclude`")
            if len(cache) > 16:
                cache.clear()
            cache[dropped] = _Fitted(self.config, self.summaries_.take(keep), self.pooled_,
                                     [self.descriptions_[i] for i in keep], self.vectors_[keep], self.groups_)
        return cache[dropped]

    def _combine(self, fitted: _Fitted, texts: list[str], vectors: np.ndarray, uncertainty: bool,
                 k: int) -> list[ModelParams]:
        weights = {c: w for c, w in self.stack_["weights"].items() if w > 0 and c in fitted.parts}
        pred = fitted.predict(texts, vectors)
        theta = np.tile(self.pooled_, (len(texts), 1)) * sum(weights.values())
        sd = np.zeros_like(theta)
        for c, w in weights.items():
            theta += w * pred[c][0]
            sd += w * np.sqrt(pred[c][1])
        theta[:, 0] += self.stack_["intercept"]
        sd *= math.sqrt(self.interval_scale_)
        lead = max((c for c in weights if c != "pooled"), key=weights.get, default=None)
        prov = fitted.weights(lead, texts, vectors) if lead is not None else None
        out = []
        for qi in range(len(texts)):
            meta = {"source": "generated", "generator": "statistical",
                    "stack": {c: round(float(w), 4) for c, w in weights.items()},
                    "provenance": self._provenance(fitted, prov[qi] if prov is not None else None, vectors[qi], k)}
            out.append(ModelParams(self.model_kind_, self.schema_, theta[qi], std=sd[qi] if uncertainty else None,
                                   metadata=meta))
        return out

    @staticmethod
    def _provenance(fitted: _Fitted, w: np.ndarray | None, vector: np.ndarray, k: int) -> list[dict]:
        """The ``k`` tasks with the largest share of the leading candidate's intercept weights."""
        if w is None:
            return []
        share = np.abs(w) / max(float(np.abs(w).sum()), 1e-12)
        top = np.argsort(-share, kind="stable")[:k]
        return [{"task_id": fitted.ids[j], "description": fitted.descriptions[j],
                 "similarity": round(float(fitted.vectors[j] @ vector), 6), "weight": round(float(share[j]), 6)}
                for j in top if share[j] > 0]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save as an artifact: ``config.json``, ``state.json`` and ``arrays.safetensors``."""
        from safetensors.numpy import save as st_save

        from ragim.io import json_bytes, write_artifact

        if self.fitted_ is None:
            raise ValidationError("cannot save an unfitted StatisticalGenerator")
        st = self.fitted_.state
        arrays = {"pooled": self.pooled_, "theta": self.summaries_.theta, "var": self.summaries_.var,
                  "n_rows": self.summaries_.n_rows.astype(np.float64), "vectors": self.vectors_}
        scalars = {}
        for key, v in st.items():
            if isinstance(v, np.ndarray):
                arrays[f"state.{key}"] = v.astype(np.float64)
            elif key != "vocabulary":
                scalars[key] = float(v)
        state = {"model_kind": self.model_kind_, "param_names": self.param_names_, "schema": self.schema_.to_dict(),
                 "embedder": self.embedder_identity_, "ids": self.summaries_.ids, "descriptions": self.descriptions_,
                 "groups": self.groups_, "vocabulary": st.get("vocabulary"), "scalars": scalars, "stack": self.stack_,
                 "cv": self.cv_, "interval_scale": self.interval_scale_}
        files = {"config.json": json_bytes(asdict(self.config)), "state.json": json_bytes(state),
                 "arrays.safetensors": st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()})}
        return write_artifact(path, FORMAT, files)

    save_pretrained = save

    @classmethod
    def load(cls, path: str | Path) -> StatisticalGenerator:
        """Open a saved generator, verifying checksums and that its files agree."""
        from safetensors import SafetensorError
        from safetensors.numpy import load as st_load

        from ragim.io import read_artifact
        from ragim.schema import FeatureSchema

        art = read_artifact(path, FORMAT)
        root = Path(art.path)
        try:
            cfg = art.read_json("config.json")
            gen = cls(StatisticalConfig(**{**cfg, "candidates": tuple(cfg["candidates"])}))
        except (TypeError, KeyError, ValueError, ValidationError) as exc:
            raise ArtifactError(f"{root / 'config.json'}: not a valid statistical generator config ({exc})") from exc
        try:
            arrays = st_load(art.read_bytes("arrays.safetensors"))
        except (SafetensorError, ValueError) as exc:
            raise ArtifactError(f"{root / 'arrays.safetensors'}: not a valid array file ({exc})") from exc
        state = art.read_json("state.json")
        try:
            gen.model_kind_, gen.param_names_ = state["model_kind"], list(state["param_names"])
            gen.schema_ = FeatureSchema.from_dict(state["schema"])
            gen.embedder_identity_ = state["embedder"]
            ids, gen.descriptions_ = list(state["ids"]), list(state["descriptions"])
            gen.groups_ = {g: [int(c) for c in cols] for g, cols in state["groups"].items()}
            gen.stack_, gen.cv_ = state["stack"], state["cv"]
            gen.interval_scale_ = float(state["interval_scale"])
            gen.pooled_ = arrays["pooled"]
            n = len(ids)
            gen.summaries_ = TaskSummaries(ids, arrays["theta"], arrays["var"], arrays["n_rows"].astype(np.int64))
            gen.vectors_ = arrays["vectors"]
            fstate: dict[str, Any] = {k[len("state."):]: v for k, v in arrays.items() if k.startswith("state.")}
            fstate.update(state["scalars"])
            if state.get("vocabulary") is not None:
                fstate["vocabulary"] = {t: int(i) for t, i in state["vocabulary"].items()}
            P = len(gen.param_names_)
            shapes_ok = (gen.pooled_.shape == (P,) and gen.summaries_.theta.shape == (n, P)
                         and gen.summaries_.var.shape == (n, P) and len(gen.descriptions_) == n
                         and gen.vectors_.shape[0] == n and param_names(gen.model_kind_, gen.schema_) == gen.param_names_)
            if not shapes_ok:
                raise ValueError("the arrays do not match the task list and parameter layout in state.json")
            gen.fitted_ = _Fitted(gen.config, gen.summaries_, gen.pooled_, gen.descriptions_, gen.vectors_,
                                  gen.groups_, state=fstate)
        except (KeyError, TypeError, ValueError, ValidationError, np.linalg.LinAlgError) as exc:
            raise ArtifactError(f"{root}: state.json and arrays.safetensors do not describe one generator ({exc}); "
                                "the artifact was assembled from different generators") from exc
        return gen

    from_pretrained = load

    def __repr__(self) -> str:
        if self.fitted_ is None:
            return "StatisticalGenerator(not fitted)"
        w = ", ".join(f"{c}={v:.2f}" for c, v in self.stack_["weights"].items())
        return f"StatisticalGenerator({len(self.summaries_.ids)} tasks, stack: {w})"


# ---------------------------------------------------------------------- helpers
def _index_tasks(index) -> list[Task]:
    if index.tasks is None:
        raise ValidationError(
            "the index holds no task rows (it was built with keep_tasks=False, grown with add(), or saved without "
            "tasks); rebuild it from a TaskCollection to fit a generator"
        )
    tasks = [t for t in index.tasks if t.task_id in index]
    if len(tasks) < 3:
        raise ValidationError(f"the statistical generator needs at least 3 indexed tasks, got {len(tasks)}")
    return tasks


def _pooled_fit(index, tasks: list[Task], max_rows: int, rng) -> np.ndarray:
    """The pooled L2 logistic model (C = 1) on the index tasks' rows, subsampled to ``max_rows``."""
    import pandas as pd

    from ragim.models import LogisticModel

    X = pd.concat([t.X for t in tasks], ignore_index=True)
    y = np.concatenate([t.y for t in tasks])
    if len(y) > max_rows:
        keep = np.sort(rng.choice(len(y), max_rows, replace=False))
        X, y = X.iloc[keep].reset_index(drop=True), y[keep]
    if index.model == "logistic":
        return LogisticModel(schema=index.schema, C=1.0).fit(X, y).to_params().vector
    from ragim.models.map import newton_map

    D = design_matrix(index.model, index.schema, X)
    A = np.hstack([np.ones((len(D), 1)), D])
    w, _ = newton_map(A, y.astype(float), np.zeros(A.shape[1]), np.ones(A.shape[1]), max_iter=50, tol=1e-8)
    return w


def _folds(records: list[dict], n_folds: int, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-task-out folds over the index's tasks, leak-free as the evaluation protocols are:
    a fold's training part never holds a task that shares patients with one of its held-out
    tasks. Folds whose training part would hold fewer than 3 tasks are dropped."""
    from ragim.tasks import patient_id_set

    n = len(records)
    pids = [patient_id_set(rec.get("metadata")) for rec in records]
    owners: dict[str, list[int]] = {}
    for i, ps in enumerate(pids):
        for pid in ps:
            owners.setdefault(pid, []).append(i)
    k = min(n_folds, n)
    assign = rng.permutation(np.arange(n) % k)
    out = []
    for f in range(k):
        test = np.flatnonzero(assign == f)
        gone = set(test.tolist())
        for i in test:
            for pid in pids[i]:
                gone.update(owners[pid])
        train = np.array([i for i in range(n) if i not in gone], dtype=np.int64)
        if len(train) >= 3 and len(test):
            out.append((train, test))
    if not out:
        raise ValidationError("validation inside the index needs at least one fold whose training tasks share no "
                              "patients with its held-out tasks; the index's tasks all overlap")
    return out


def _rows(task: Task, index, max_rows: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(design with intercept column, y) of a task, subsampled to ``max_rows`` rows."""
    D = design_matrix(index.model, index.schema, task.X)
    y = task.y.astype(float)
    if len(y) > max_rows:
        keep = rng.choice(len(y), max_rows, replace=False)
        D, y = D[keep], y[keep]
    return np.hstack([np.ones((len(D), 1)), D]), y


def _stack(candidates: tuple[str, ...], held: list[dict], held_pos: list[np.ndarray], held_rows: list,
           summ: TaskSummaries, pooled: np.ndarray) -> tuple[dict, dict, float]:
    """Stack weights and an intercept shift by held-out mean per-task log-loss; the CV table;
    the interval scale that makes held-out summaries' standardised residuals average 1."""
    names = [c for c in candidates if all(c in h for h in held)]
    logits, ys, owners = [], [], []
    devs = {c: [] for c in names}
    variances = {c: [] for c in names}
    t = 0
    for pred, pos in zip(held, held_pos, strict=True):
        for j in range(len(pos)):
            A, y = held_rows[t]
            logits.append(np.stack([A @ (pooled + pred[c][0][j]) for c in names], axis=1))
            ys.append(y)
            owners.append(np.full(len(y), t))
            for c in names:
                devs[c].append(pred[c][0][j])
                variances[c].append(pred[c][1][j])
            t += 1
    Z, y, owner = np.concatenate(logits), np.concatenate(ys), np.concatenate(owners)
    n_tasks = t
    row_w = 1.0 / np.bincount(owner)[owner] / n_tasks  # every held-out task counts once

    def loss(x):
        a, w = x[0], x[1:]
        z = a + Z @ w
        ll = -(y * log_expit(z) + (1 - y) * log_expit(-z))
        r = np.exp(log_expit(z)) - y
        g = np.concatenate([[np.sum(row_w * r)], Z.T @ (row_w * r)])
        return float(np.sum(row_w * ll)), g

    single = {c: loss(np.concatenate([[0.0], np.eye(len(names))[i]]))[0] for i, c in enumerate(names)}
    best = min(single, key=single.get)
    x0 = np.concatenate([[0.0], [1.0 if c == best else 0.0 for c in names]])
    res = minimize(loss, x0, jac=True, method="L-BFGS-B", bounds=[(None, None)] + [(0.0, None)] * len(names))
    x = res.x if res.fun <= single[best] else x0
    stack = {"intercept": float(x[0]), "weights": {c: float(w) for c, w in zip(names, x[1:], strict=True)}}
    cv = {"n_tasks": n_tasks, "candidates": {c: round(v, 6) for c, v in single.items()},
          "stack": round(float(loss(x)[0]), 6)}
    # interval scale: held-out summaries vs the stacked prediction, standardised by both variances
    order = np.concatenate(held_pos)
    theta_obs = summ.theta[order] - pooled
    mean = sum(x[1 + i] * np.asarray(devs[c]) for i, c in enumerate(names))
    mean[:, 0] += x[0]
    sd = sum(x[1 + i] * np.sqrt(np.asarray(variances[c])) for i, c in enumerate(names))
    pred_var = np.maximum(sd**2, 1e-12)
    obs_var = summ.var[order]
    informative = obs_var < 0.5 * VAR_BOUNDS[1]
    r2 = (theta_obs - mean) ** 2
    # E[r^2] = s * pred_var + obs_var: solve for s by moments over informative entries
    num = np.sum((r2 - obs_var)[informative])
    den = np.sum(pred_var[informative])
    scale = float(np.clip(num / den, 0.05, 20.0)) if den > 0 else 1.0
    return stack, cv, scale


__all__ = ["CANDIDATES", "StatisticalConfig", "StatisticalGenerator"]
