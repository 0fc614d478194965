"""StatisticalGenerator: noise-aware random-effects meta-regression, stacked by validation in the
index.

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

   * ``"text"``: word n-grams, grouped by how many descriptions share them (a few: a narrow
     group such as a procedure's body part or a subgroup; many: a broad one such as a site
     or an outcome; all: template words), with one kernel scale per group chosen by
     marginal likelihood, so the levels that track outcome rates and effects count; for the
     slopes each group is split by a score test into the words with and without evidence of
     an effect, each with its own scale (``split_buckets``;
     :func:`~ragim.generate.meta_regression.split_by_score`); last, every n-gram gets its own
     scale, shrunk towards its group's (automatic relevance determination with a hyperprior;
     ``ard``; :func:`~ragim.generate.meta_regression.fit_feature_scales`);
   * ``"text-glmm"``: the same regression fitted on the tasks' rows rather than on their
     summaries, a logistic mixed model whose random effects are the n-grams (the text
     kernel's scales as their prior variances; :func:`~ragim.generate.meta_regression.glmm_map`).
     Every row counts as the Bernoulli outcome it is, so small tasks neither pass for
     unbiased observations nor import the bias of the tasks that happen to be fittable;
   * ``"neighbors"``: description-embedding similarity, sharpened towards close neighbours;
   * ``"neighbor-mean"``: the similarity-weighted mean of the ``neighbor_k`` closest tasks'
     own fits (the baseline of that name, as a candidate);
   * ``"pooled"``: no deviation.
4. **Stacking.** Each candidate's baseline risk (its intercept at the average patient) and
   its slopes enter with separate non-negative weights, plus one shift, chosen by
   leave-task-out cross-validation *inside the index* on the mean per-task log-loss (a
   held-out task is predicted without the tasks that share its patients). Separate slope
   weights let validation shrink the effects when a new task's are less certain than the
   pooled ones. Because the combination is linear in the parameters, the result is again
   one interpretable model, and it can only match or beat the best single candidate in
   expectation (a super learner; van der Laan, Polley & Hubbard, 2007). The weights are
   regularised towards an anchor: how often each candidate is the best one when the held-out
   tasks are reweighted by the Bayesian bootstrap (the win-count form of pseudo-BMA+; Yao,
   Vehtari, Simpson & Gelman, 2018). With many validation tasks that is the best candidate;
   with a handful (a small index) it averages close candidates rather than trusting a noisy
   choice (``cv_["anchor"]``). The tasks the index could not fit (``index.skipped_tasks``:
   too few rows, one class) are held out too, each predicted by one fold's candidates
   (``validate_skipped``): fittable tasks are a biased sample of the small tasks a new one
   often is. When most tasks
   share patients with most others (one cohort's subgroups and outcomes; see
   :data:`MIN_KEPT_SHARE`), patients are held out instead of tasks (:func:`patient_halves`);
   with fewer than 4 tasks nothing is validated, and the pooled model is used (with a
   :class:`~ragim.errors.DataWarning`).
5. **Intervals.** Each coefficient gets a standard deviation from the candidates' GP
   posteriors (a new task's own unexplained deviation included), scaled so that the
   held-out tasks' estimates are covered at their nominal rate.

A generated model's ``metadata["provenance"]`` lists the ``k`` tasks that weigh most in the
whole stack's baseline risk: each candidate's weights on the tasks (what it leaves with the
pooled model shared out by the tasks' rows) times its baseline weight in the stack
(:meth:`StatisticalGenerator._stack_weights`).

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

import time
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_expit
from threadpoolctl import threadpool_limits

from ragim.adaptation_policy import MIN_TASKS, AdaptationPolicy, ValidationCase, calibrate
from ragim.canonical import canonical_id
from ragim.checks import (
    check_bool,
    check_fields,
    check_int,
    check_loaded,
    check_number,
    repeated,
    setting,
)
from ragim.data_checks import between_task_terms, never_varied_terms
from ragim.errors import (
    ArtifactError,
    DataWarning,
    ExcludedAfterFitWarning,
    ValidationError,
    name_some,
    user_stacklevel,
)
from ragim.generate.base import (
    Generator,
    check_task_index,
    config_with,
    fit_state,
    read_fit_state,
    read_fitted_digests,
    read_fitted_ids,
    record_fit_state,
    register_generator,
)
from ragim.generate.meta_regression import (
    ARD_PRIOR_SD,
    ARD_PRIOR_SD_RANGE,
    INTERCEPT_PRIOR_SD,
    MIN_SCORE_COLUMNS,
    PRIOR_SD,
    SHARPNESS,
    VAR_BOUNDS,
    KernelRegression,
    TaskSummaries,
    centring,
    embedding_kernel,
    fit_feature_scales,
    fit_kernel_scales,
    glmm_map,
    ngram_buckets,
    split_by_score,
    task_summaries,
)
from ragim.models.fit_many import fit_many
from ragim.models.gam_family import GAMFamily, carry_over_empty_bins
from ragim.params import ModelParams, design_matrix, model_family, std_and_correlation
from ragim.tasks import Task

FORMAT = "ragim.statistical-generator"
CANDIDATES = ("pooled", "text", "text-glmm", "neighbors", "neighbor-mean")
_TOKENS = r"(?u)\b\w+\b"  # keep one-character words ("stage I", "type 2")
#: per validation fold, at most this many refits without a held-out task's overlapping tasks
MAX_REFITS = 64
#: indices of up to this many tasks are validated leave-one-task-out (every task held out once)
LOO_MAX_TASKS = 30
#: leave-task-out validation needs the median held-out task to keep at least this share of its
#: fold's training tasks (those that share none of its patients). Below it the index is mostly
#: one cohort's subgroups and outcomes: held-out tasks would be predicted from a small remnant,
#: unlike the whole index a new task is generated from (a neighbour mean of 3 tasks is not one
#: of 10), so patients are held out instead (:func:`patient_halves`)
MIN_KEPT_SHARE = 0.5
#: BLAS threads while fitting and generating. The meta-regression works on many small matrices
#: (a few hundred tasks square); multi-threaded BLAS only adds synchronisation there. Measured on
#: 2 busy cores: a 240x240 Cholesky and product took 188 ms with OpenBLAS's default threads and
#: 3 ms with one, so fitting and generating run under ``threadpool_limits(1, user_api="blas")``.
BLAS_THREADS = 1


#: the longest word n-gram the text candidate may use (longer ones are too rare to learn from)
MAX_NGRAM = 8

#: the interval scale (:func:`_stack`) calibrates the coefficient SDs on held-out tasks by
#: moments and is clipped to [1, INTERVAL_SCALE_MAX]: it may widen the meta-regression's
#: intervals (at most 20-fold in variance), never narrow them; 1 when nothing was validated
INTERVAL_SCALE_MAX = 20.0
#: the smallest interval scale a saved generator may hold: generators saved before the scale
#: was kept from narrowing the intervals clipped it to [0.05, 20]
INTERVAL_SCALE_MIN_SAVED = 0.05
#: the stack of a generator that validated nothing (fewer than 4 tasks, or no task or patient
#: could be held out): the pooled model alone
UNVALIDATED_STACK = {"shift": 0.0, "baseline": {"pooled": 1.0}, "slopes": {"pooled": 1.0}}


@dataclass
class StatisticalConfig:
    """Settings of the :class:`StatisticalGenerator` (saved as ``config.json``)."""

    candidates: tuple[str, ...] = setting(CANDIDATES, "candidate models the stack combines")
    max_tasks: int = setting(1000, "tasks the meta-regression learns from (the largest)")
    hyper_tasks: int = setting(
        300,
        "tasks the kernel scales are fitted on (a random subset "
        "beyond this; each marginal-likelihood step costs n^3)",
    )
    prior_sd: float = setting(PRIOR_SD, "prior SD of a task's slopes around the pooled model")
    intercept_prior_sd: float = setting(
        INTERCEPT_PRIOR_SD, "prior SD of a task's intercept (log-odds)"
    )
    ngram_max: int = setting(2, "longest word n-gram of the text candidate")
    split_buckets: bool = setting(
        True,
        "split each n-gram bucket of a parameter group with at least MIN_SCORE_COLUMNS "
        "parameters (the slopes) by a score test, so that words with and without evidence of "
        "an effect get separate kernel scales (meta_regression.split_by_score)",
    )
    ard: bool = setting(
        True,
        "then give every n-gram its own kernel scale (automatic relevance determination), "
        "with a log-normal hyperprior centred on its bucket's scale "
        "(meta_regression.fit_feature_scales)",
    )
    ard_prior_sd: float = setting(
        ARD_PRIOR_SD, "SD of an n-gram's log kernel scale around its bucket's (ard)"
    )
    min_df: int = setting(2, "n-grams must occur in at least this many descriptions")
    validate_skipped: bool = setting(
        True,
        "validate the stack on the index's skipped tasks too (index.skipped_tasks: those too "
        "small or one-class to fit, sharing no patient with an indexed task), each predicted "
        "by one validation fold's candidates; the fittable tasks alone are a biased sample of "
        "the small tasks a new one often is",
    )
    embedding_sharpness: float = setting(
        SHARPNESS, "kernel exp(s (cos - 1)) of the neighbors candidate"
    )
    neighbor_k: int = setting(10, "neighbours averaged by the neighbor-mean candidate")
    cv_folds: int = setting(
        5,
        "leave-task-out folds that choose the stack weights "
        "(every task is its own fold on indices of up to 30 tasks)",
    )
    max_rows_per_task: int = setting(
        500, "rows per task in the validation loss and in the text-glmm candidate's fit"
    )
    adaptation_tasks: int = setting(
        40,
        "held-out index tasks per k on which the few-shot adaptation policy is validated "
        "(ragim.adaptation_policy; at least 8, or 0: none, the evidence alone chooses)",
    )
    adaptation_draws: int = setting(4, "draws of k rows per task when validating adaptation")
    pooled_rows: int = setting(200_000, "rows the pooled model is fitted on (subsampled)")
    seed: int = setting(0, "random seed (folds, subsamples)")

    def __post_init__(self):
        self.candidates = tuple(self.candidates)
        problems = []
        unknown = [c for c in self.candidates if c not in CANDIDATES]
        if unknown or not self.candidates or len(set(self.candidates)) < len(self.candidates):
            problems.append(
                f"candidates must be a non-empty subset of {list(CANDIDATES)}, each named once, "
                f"got {list(self.candidates)}"
            )
        counts = (
            "max_tasks",
            "hyper_tasks",
            "ngram_max",
            "min_df",
            "max_rows_per_task",
            "pooled_rows",
            "neighbor_k",
        )
        rules = {
            **dict.fromkeys(counts, partial(check_int, ge=1)),
            "ngram_max": partial(check_int, ge=1, le=MAX_NGRAM),
            "neighbor_k": partial(check_int, ge=1, le=100_000),
            "cv_folds": partial(check_int, ge=2),
            "split_buckets": check_bool,
            "ard": check_bool,
            "validate_skipped": check_bool,
            "ard_prior_sd": partial(
                check_number, ge=ARD_PRIOR_SD_RANGE[0], le=ARD_PRIOR_SD_RANGE[1]
            ),
            "adaptation_tasks": _check_adaptation_tasks,
            "adaptation_draws": partial(check_int, ge=1),
            **dict.fromkeys(
                ("prior_sd", "intercept_prior_sd", "embedding_sharpness"),
                partial(check_number, gt=0),
            ),
        }
        check_fields(self, rules, "StatisticalConfig", problems)


def _check_adaptation_tasks(value, name: str) -> int:
    """0 (validate no adaptation policy) or at least :data:`~ragim.adaptation_policy.MIN_TASKS`
    held-out tasks per k (fewer cannot give an option's mean change a standard error)."""
    value = check_int(value, name, ge=0)
    if value == 0:
        return value
    return check_int(value, name, ge=MIN_TASKS, note="or 0 to validate no adaptation policy")


# ---------------------------------------------------------------------- candidates
class _Fitted:
    """The candidates fitted on one set of task summaries (all of them, or a CV fold's)."""

    def __init__(
        self,
        cfg: StatisticalConfig,
        summ: TaskSummaries,
        pooled: np.ndarray,
        descriptions: list[str],
        vectors: np.ndarray,
        groups: dict[str, list[int]],
        *,
        state: dict | None = None,
        rows: list[tuple[np.ndarray, np.ndarray]] | None = None,
    ):
        self.cfg, self.groups = cfg, groups
        self.ids = list(summ.ids)
        self.n_rows = np.asarray(summ.n_rows)  # the pooled model's weight on each task
        self.pooled = pooled
        self.Y = summ.theta - pooled
        self.V = summ.var
        self.descriptions = descriptions
        self.vectors = vectors
        self.state = state if state is not None else {}
        self.parts: dict[str, dict[str, Any]] = {}
        # always: the fallback of a stacked candidate that cannot be fitted here (no deviation)
        self.parts["pooled"] = {g: self._pooled_var(cols) for g, cols in groups.items()}
        if "text" in cfg.candidates or "text-glmm" in cfg.candidates:
            self._fit_text()
        if "text-glmm" in cfg.candidates and "text" in self.parts:
            self._fit_text_glmm(rows)
        if "text" not in cfg.candidates:
            self.parts.pop("text", None)
        if "neighbors" in cfg.candidates:
            self._fit_neighbors()
        if "neighbor-mean" in cfg.candidates and summ.fits is not None:
            self.parts["neighbor-mean"] = {"Y": summ.fits - pooled}

    def _pooled_var(self, cols: list[int]) -> float:
        key = f"pooled_var_{cols[0]}"
        if key not in self.state:
            self.state[key] = float(
                max(np.mean(self.Y[:, cols] ** 2) - np.mean(self.V[:, cols]), 1e-4)
            )
        return self.state[key]

    def _hyper_rows(self) -> np.ndarray:
        """The tasks the kernel scales are fitted on: all, or a fixed random ``hyper_tasks`` of
        them."""
        n = len(self.ids)
        if n <= self.cfg.hyper_tasks:
            return np.arange(n)
        return np.sort(
            np.random.default_rng(self.cfg.seed).choice(n, self.cfg.hyper_tasks, replace=False)
        )

    # -- text: n-grams with learned relevance
    def _vectorizer(self):
        from sklearn.feature_extraction.text import CountVectorizer

        vocab = self.state.get("vocabulary")
        if vocab is not None:
            return CountVectorizer(
                ngram_range=(1, self.cfg.ngram_max),
                token_pattern=_TOKENS,
                binary=True,
                vocabulary=vocab,
            )
        vec = CountVectorizer(
            ngram_range=(1, self.cfg.ngram_max),
            token_pattern=_TOKENS,
            binary=True,
            min_df=min(self.cfg.min_df, len(self.descriptions)),
        )
        try:
            vec.fit(self.descriptions)
        except ValueError:  # no n-gram is shared by min_df descriptions
            return None
        self.state["vocabulary"] = {t: int(i) for t, i in vec.vocabulary_.items()}
        return vec

    def _text_features(self, texts: list[str]) -> np.ndarray:
        X = self.vec.transform(texts).toarray().astype(float)
        return np.hstack(
            [np.ones((len(texts), 1)), X]
        )  # a constant: a shared offset from the pooled model

    def _fit_text(self):
        self.vec = self._vectorizer()
        if self.vec is None:
            return
        Phi = self._text_features(self.descriptions)
        parts = {}
        for g, cols in self.groups.items():
            key = f"tau_{g}"
            if key not in self.state:
                words = np.array([1] + [len(t.split()) for t in self.vec.get_feature_names_out()])
                buckets = [np.arange(len(words)) == 0] + ngram_buckets(
                    words[1:], Phi[:, 1:].sum(axis=0), len(Phi)
                )
                buckets[1:] = [np.concatenate([[False], b]) for b in buckets[1:]]
                sub = self._hyper_rows()
                P, Y, V = Phi[sub], self.Y[np.ix_(sub, cols)], self.V[np.ix_(sub, cols)]
                h, nug = fit_kernel_scales([P[:, b] @ P[:, b].T for b in buckets], Y, V)
                if self.cfg.split_buckets and len(cols) >= MIN_SCORE_COLUMNS:
                    buckets = split_by_score(P, buckets, Y, V, h, nug)
                    h, nug = fit_kernel_scales([P[:, b] @ P[:, b].T for b in buckets], Y, V)
                tau = np.zeros(Phi.shape[1])
                for hb, b in zip(h, buckets, strict=True):
                    tau[b] = hb
                if self.cfg.ard:  # each word its own scale, shrunk towards its bucket's
                    tau, nug = fit_feature_scales(P, Y, V, tau, nug, prior_sd=self.cfg.ard_prior_sd)
                self.state[key], self.state[f"text_nugget_{g}"] = tau, nug
            tau, nug = self.state[key], self.state[f"text_nugget_{g}"]
            keep = tau > 1e-6 * max(float(tau.max()), 1e-12)
            Pk = Phi[:, keep]
            parts[g] = {
                "unseen": self._unseen_scales(np.asarray(tau)),
                "keep": keep,
                "tau": tau[keep],
                "Phi": Pk,
                "gp": KernelRegression(
                    (Pk * tau[keep]) @ Pk.T, self.Y[:, cols], self.V[:, cols], nug
                ),
            }
        self.parts["text"] = parts

    def _unseen_scales(self, tau: np.ndarray) -> np.ndarray:
        """Prior variance of the effect of an n-gram the index does not know, per n-gram length
        (index 0: one word): the mean kernel scale of the known n-grams of that length.

        Absent n-grams have no effect in the text kernel, so without this a description made
        of unknown words would be predicted as the average task *with certainty* about every
        word effect, and get narrower intervals than a description the index knows. An unseen
        n-gram's effect is unknown, with the prior variance of a typical n-gram of its length:
        in a linear model with independent feature effects, a feature never observed keeps
        its prior (its posterior mean stays 0, the pooled model)."""
        lengths = np.array([len(t.split()) for t in self.vec.get_feature_names_out()])
        return np.array(
            [
                float(tau[1:][lengths == n].mean()) if np.any(lengths == n) else 0.0
                for n in range(1, self.cfg.ngram_max + 1)
            ]
        )

    def _unseen_counts(self, texts: list[str]) -> np.ndarray:
        """(q, ngram_max): how many distinct n-grams of each length of every text the index's
        vocabulary lacks (:meth:`_unseen_scales`)."""
        analyze, vocab = self.vec.build_analyzer(), self.vec.vocabulary_
        out = np.zeros((len(texts), self.cfg.ngram_max))
        for i, t in enumerate(texts):
            for gram in set(analyze(t)) - vocab.keys():
                out[i, min(len(gram.split()), self.cfg.ngram_max) - 1] += 1
        return out

    def _fit_text_glmm(self, rows: list[tuple[np.ndarray, np.ndarray]] | None):
        """The text candidate refitted on the tasks' rows (:func:`glmm_map`), with the text
        kernel's scales and nuggets. Its effects are kept in ``state`` (a loaded generator has
        no rows); without them or rows the candidate is left out."""
        text = self.parts["text"]
        keys = [f"glmm_{g}" for g in self.groups]
        if not all(k in self.state for k in keys):
            if rows is None:
                return
            effects = glmm_map(
                [text[g]["Phi"] for g in self.groups],
                [text[g]["tau"] for g in self.groups],
                list(self.groups.values()),
                [self.state[f"text_nugget_{g}"] for g in self.groups],
                self.pooled,
                rows,
            )
            self.state.update(zip(keys, effects, strict=True))
        self.parts["text-glmm"] = {
            g: {**text[g], "W": self.state[k]} for g, k in zip(self.groups, keys, strict=True)
        }

    # -- neighbors: embedding similarity
    def _fit_neighbors(self):
        K = embedding_kernel(self.vectors, sharpness=self.cfg.embedding_sharpness)
        parts = {}
        for g, cols in self.groups.items():
            key = f"emb_scale_{g}"
            if key not in self.state:
                sub = self._hyper_rows()
                h, nug = fit_kernel_scales(
                    [K[np.ix_(sub, sub)]], self.Y[np.ix_(sub, cols)], self.V[np.ix_(sub, cols)]
                )
                self.state[key], self.state[f"emb_nugget_{g}"] = float(h[0]), nug
            h, nug = self.state[key], self.state[f"emb_nugget_{g}"]
            parts[g] = {
                "h": h,
                "gp": KernelRegression(h * K, self.Y[:, cols], self.V[:, cols], nug),
            }
        self.parts["neighbors"] = parts

    # -- prediction
    def predict(
        self, texts: list[str], vectors: np.ndarray | None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per candidate: (deviations (q, P), variances (q, P)) for new descriptions."""
        q, P = len(texts), self.Y.shape[1]
        out = {}
        words = None  # the text features and unseen n-gram counts, shared by both text candidates
        for name, parts in self.parts.items():
            mean, var = np.zeros((q, P)), np.zeros((q, P))
            if name == "pooled":
                for g, cols in self.groups.items():
                    var[:, cols] = parts[g]
            elif name in ("text", "text-glmm"):
                # text-glmm: the row fit's effects, with the summary GP's variance
                if words is None:
                    words = self._text_features(texts), self._unseen_counts(texts)
                Phi_q, unseen = words
                for g, cols in self.groups.items():
                    part = parts[g]
                    fq = Phi_q[:, part["keep"]]
                    k = (fq * part["tau"]) @ part["Phi"].T
                    mean[:, cols] = fq @ part["W"] if "W" in part else part["gp"].mean(k)
                    var[:, cols] = (
                        part["gp"].variance(k, np.einsum("ij,ij->i", fq * part["tau"], fq))
                        + unseen @ part["unseen"]
                    )[:, None]
            elif name == "neighbors":
                k_raw = embedding_kernel(
                    self.vectors, vectors, sharpness=self.cfg.embedding_sharpness
                )
                for g, cols in self.groups.items():
                    part = parts[g]
                    mean[:, cols] = part["gp"].mean(part["h"] * k_raw)
                    var[:, cols] = part["gp"].variance(part["h"] * k_raw, np.full(q, part["h"]))[
                        :, None
                    ]
            else:  # the neighbour mean of the index's own fits (the baseline, as a candidate)
                W = self._nearest(vectors)
                mean = W @ parts["Y"]
                var = np.maximum(W @ parts["Y"] ** 2 - mean**2, 1e-6)
            out[name] = (mean, var)
        return out

    def _nearest(self, vectors: np.ndarray) -> np.ndarray:
        """Similarity weights (max(cos, 0), normalised) of the ``neighbor_k`` closest tasks,
        (q, n)."""
        sims = vectors @ self.vectors.T
        k = min(self.cfg.neighbor_k, sims.shape[1])
        W = np.zeros_like(sims)
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        rows = np.arange(len(sims))[:, None]
        W[rows, top] = np.maximum(sims[rows, top], 0.0)
        flat = W.sum(axis=1) <= 0  # no positive similarity: the k closest count equally
        W[np.flatnonzero(flat)[:, None], top[flat]] = 1.0
        return W / W.sum(axis=1, keepdims=True)

    def weights(self, name: str, texts: list[str], vectors: np.ndarray | None) -> np.ndarray:
        """Each training task's weight in candidate ``name``'s intercept, shape (q, n)."""
        if name == "neighbor-mean":
            return self._nearest(vectors)
        part = self.parts[name]["intercept"]
        if name in ("text", "text-glmm"):  # text-glmm: the summary GP's weights, as a guide
            fq = self._text_features(texts)[:, part["keep"]]
            return part["gp"].weights((fq * part["tau"]) @ part["Phi"].T)
        k = part["h"] * embedding_kernel(
            self.vectors, vectors, sharpness=self.cfg.embedding_sharpness
        )
        return part["gp"].weights(k)


# ---------------------------------------------------------------------- the generator
@register_generator("statistical")
class StatisticalGenerator(Generator):
    """Noise-aware meta-regression of task models on their descriptions; see the module docstring.

    Parameters
    ----------
    config : :class:`StatisticalConfig`; keyword overrides are accepted too
        (``StatisticalGenerator(candidates=("pooled", "text"))``).

    :meth:`generate_params` takes ``uncertainty=True``: a SD per coefficient in ``std``; its
    ``k`` is how many of the tasks that shaped the model its provenance lists (default 10;
    ranked by their weight in the whole stack's baseline risk, :meth:`_stack_weights`).
    Excluded tasks (``exclude=``) are removed from the pooled model and the meta-regression,
    which are refitted without them; the stack weights, intercept shift, interval scale and
    adaptation policy, validated across the whole index at :meth:`fit`, are not, and an
    :class:`~ragim.errors.ExcludedAfterFitWarning` says so. For a held-out evaluation, fit
    the generator on an index built without those tasks (as :mod:`ragim.evaluate` does).

    Attributes (after :meth:`fit`)
    ------------------------------
    stack_ : ``{"shift": a, "baseline": {candidate: u}, "slopes": {candidate: w}}``, chosen by
        validation inside the index.
    cv_ : the validation table: held-out mean log-loss of each candidate and of the stack.
    interval_scale_ : the factor that calibrates the coefficient SDs on held-out tasks.
    heldout_params_ : ``{task_id: parameters}`` of the validation: each index task's model as the
        stack generated it without the task and the tasks sharing its patients (a leak-free
        base for a generator trained on top, e.g. the AttentionGenerator). Not saved.
    adaptation_policy_ : :class:`~ragim.adaptation_policy.AdaptationPolicy`, the few-shot
        adaptation validated on those held-out tasks, by number of labelled rows. Every
        generated model carries its entries in ``metadata["adaptation_policy"]``, and
        :func:`ragim.estimator.adapt_prior` (``adaptation="auto"``) follows them.
    """

    #: tasks the index no longer holds are left out as ``exclude=`` leaves tasks out
    leaves_out_removed = True
    refit_command = "leave out --generator: ragim generate fits the statistical generator on INDEX"

    def __init__(self, config: StatisticalConfig | None = None, **overrides: Any):
        self.config = config_with(StatisticalConfig, config, overrides)
        self.fitted_: _Fitted | None = None
        self.between_tasks_: list[str] = []  # terms constant within every task it learned from
        self.never_varied_: dict[str, float] = {}  # ... at one value in all of them

    # ------------------------------------------------------------------ fit
    def fit(self, index, *, progress: bool = True) -> StatisticalGenerator:
        """Learn from the tasks (and their rows) of ``index``; see the module docstring.

        Raises
        ------
        ValidationError
            When the index holds no task rows (built with ``keep_tasks=False``, grown with
            ``add()`` or saved without tasks).

        Warns
        -----
        DataWarning
            When nothing can be validated (fewer than 4 tasks, or too few rows to hold out
            patients): the generator then gives every description the pooled model
            (``cv_["note"]`` says why).
        """
        check_task_index(index)
        with threadpool_limits(BLAS_THREADS, user_api="blas"):
            return self._fit(index, progress)

    def _fit(self, index, progress: bool) -> StatisticalGenerator:
        from tqdm.auto import tqdm

        cfg = self.config
        t0 = time.perf_counter()
        tasks = _index_tasks(index)
        rng = np.random.default_rng(cfg.seed)
        bar = tqdm(
            total=3 + cfg.cv_folds,
            desc="statistical generator",
            disable=None if progress else True,
            leave=False,
        )
        record_fit_state(self, index)
        constant = [index.record(t.task_id).get("constant_terms") or {} for t in tasks]
        self.between_tasks_ = between_task_terms(constant)
        self.never_varied_ = never_varied_terms(constant)
        self.pooled_, self.center_, self.pooled_var_, self.pooled_corr_ = _pooled_fit_with_variance(
            index,
            tasks,
            cfg.pooled_rows,
            rng,
            between=[self.param_names_.index(n) for n in self.between_tasks_],
        )
        T = centring(self.center_)
        pooled_c = T @ self.pooled_
        bar.update()
        if len(tasks) > cfg.max_tasks:  # the largest tasks carry the most information
            order = np.argsort([-t.n_rows for t in tasks], kind="stable")[: cfg.max_tasks]
            tasks = [tasks[i] for i in sorted(order)]
        summ = task_summaries(
            tasks,
            index.model,
            index.schema,
            self.pooled_,
            prior_sd=cfg.prior_sd,
            intercept_prior_sd=cfg.intercept_prior_sd,
        )
        summ.fits = index.params_matrix(summ.ids) @ T.T  # the index's own fits, centred
        descriptions = [t.description for t in tasks]
        vectors = index.vectors(summ.ids).astype(np.float64)
        groups = {"intercept": [0], "slopes": list(range(1, len(self.pooled_)))}
        task_rows = _glmm_rows(cfg, index, tasks, self.center_)
        bar.update()
        plan = (
            _cv_plan([index.record(t) for t in summ.ids], cfg.cv_folds, rng)
            if len(tasks) >= 4
            else []
        )
        held: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
        held_rows, held_pos = [], []

        def fit_on(rows: np.ndarray) -> _Fitted:
            return _fit_candidates(
                cfg, index, tasks, summ, rows, T, descriptions, vectors, groups, rng, task_rows
            )

        # the share of its fold's training tasks each held-out task keeps (those sharing none of
        # its patients); below MIN_KEPT_SHARE at the median the index is mostly one cohort
        kept = [1 - len(ov) / max(len(train), 1) for train, tests in plan for _, ov in tests]
        by_patients = len(tasks) >= 4 and (not kept or float(np.median(kept)) < MIN_KEPT_SHARE)
        bases = []
        for train, tests in [] if by_patients else plan:
            base, refits = fit_on(train), {}
            bases.append(base)
            for j, overlap in tests:  # predict j without the tasks that share its patients
                rows = train if not overlap else np.setdiff1d(train, sorted(overlap))
                if len(rows) < 3 or (
                    overlap and overlap not in refits and len(refits) >= MAX_REFITS
                ):
                    continue
                if overlap and overlap not in refits:
                    refits[overlap] = fit_on(rows)
                fitted = refits[overlap] if overlap else base
                pred = fitted.predict([descriptions[j]], vectors[[j]])
                held.append({c: (fitted.pooled + m, v) for c, (m, v) in pred.items()})
                held_pos.append(np.array([j]))
                held_rows.append(_rows(tasks[j], index, cfg.max_rows_per_task, rng))
            bar.update()
        small = _small_tasks(index, summ.ids) if cfg.validate_skipped and held else []
        order = np.random.default_rng(cfg.seed).permutation(len(small))
        for fitted, part in zip(bases, np.array_split(order, max(len(bases), 1)), strict=False):
            if len(part):  # held out like the fold's own tasks: no fit of theirs exists
                texts = [small[i].description for i in part]
                vecs = index.embedder.embed(texts).astype(np.float64)
                pred = fitted.predict(texts, vecs)
                held.append({c: (fitted.pooled + m, v) for c, (m, v) in pred.items()})
                held_pos.append(np.full(len(part), -1))
                held_rows.extend(_rows(small[i], index, cfg.max_rows_per_task, rng) for i in part)
        observed = summ
        by_patients = by_patients or (not held and len(tasks) >= 4)
        if by_patients:  # the tasks share patients: hold out patients instead
            held, held_pos, held_rows, observed = self._validate_by_patients(
                index, tasks, summ, descriptions, vectors, groups, rng
            )
        if held:
            self.stack_, self.cv_, self.interval_scale_, stacked, stacked_sd = _stack(
                cfg.candidates, held, held_pos, held_rows, observed, self.center_
            )
            uncentre = np.linalg.inv(T)
            positions = np.concatenate(held_pos)
            indexed = positions >= 0  # -1 marks a skipped task (validate_skipped)
            # a task's patients were held out, not the task: its other patients shaped its
            # held-out model, so it is no leak-free base for a generator trained on its rows
            self.heldout_params_ = (
                {}
                if by_patients
                else {
                    summ.ids[int(j)]: uncentre @ th
                    for j, th in zip(positions[indexed], stacked, strict=True)
                }
            )
            self.cv_["protocol"] = "leave-patients-out" if by_patients else "leave-task-out"
            self.cv_["n_skipped_tasks"] = 0 if by_patients else len(small)
            if by_patients:
                self.cv_["note"] = (
                    "most tasks share patients with most others (one cohort's subgroups and "
                    "outcomes), so the stack was validated on held-out patients: each task's "
                    "held-out half of its patients is predicted from the other tasks' other half"
                )
            heldout_sd = _predictive_sd(
                stacked_sd, self.interval_scale_, self.pooled_var_, self.center_
            )
            if cfg.adaptation_tasks:
                kept_rows = [r for r, keep in zip(held_rows, indexed, strict=True) if keep]
                cases = [
                    ValidationCase(A[:, 1:], y, uncentre @ th, s)
                    for (A, y), th, s in zip(kept_rows, stacked, heldout_sd, strict=True)
                ]
                self.adaptation_policy_ = calibrate(
                    cases,
                    draws=cfg.adaptation_draws,
                    max_tasks=cfg.adaptation_tasks,
                    seed=cfg.seed,
                )
            else:
                self.adaptation_policy_ = AdaptationPolicy(
                    [], "adaptation_tasks=0: the evidence alone chooses"
                )
        else:
            # fewer than 4 tasks, or too few rows to hold out patients: nothing to validate on
            self.stack_ = {k: v if k == "shift" else dict(v) for k, v in UNVALIDATED_STACK.items()}
            why = (
                f"only {len(tasks)} indexed task(s)"
                if len(tasks) < 4
                else "no task could be held out without its patients, nor enough of its patients"
            )
            self.cv_ = {
                "n_tasks": 0,
                "candidates": {},
                "stack": None,
                "protocol": None,
                "note": (
                    f"{why}: nothing can be validated inside the index, so the pooled model is used"
                ),
            }
            warnings.warn(
                f"{why}: nothing can be validated inside the index, so every description gets "
                f"the pooled model of the {len(tasks)} task(s), whatever its outcome or group",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
            self.interval_scale_ = 1.0
            self.heldout_params_ = {}
            self.adaptation_policy_ = AdaptationPolicy([], f"{why}: the evidence alone chooses")
        self.fitted_ = _Fitted(cfg, summ, pooled_c, descriptions, vectors, groups, rows=task_rows)
        missing = [c for c in cfg.candidates if c not in self.fitted_.parts]
        if missing:
            warnings.warn(
                f"candidate(s) {missing} could not be fitted on this index (no word n-gram is "
                f"shared by min_df={cfg.min_df} of its descriptions) and are left out",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
        self.summaries_, self.descriptions_, self.vectors_, self.groups_ = (
            summ,
            descriptions,
            vectors,
            groups,
        )
        self.index_ = index
        self.train_seconds_ = time.perf_counter() - t0
        bar.update()
        bar.close()
        return self

    def _validate_by_patients(
        self, index, tasks: list[Task], summ: TaskSummaries, descriptions, vectors, groups, rng
    ) -> tuple[list, list, list, TaskSummaries]:
        """Validation folds for an index whose tasks mostly share patients (one cohort's
        subgroups and outcomes), where a task held out leak-free leaves a small remnant of the
        index (:data:`MIN_KEPT_SHARE`).

        Each patient falls in half A or half B, the same half in every task
        (:func:`patient_halves`). A held-out task's B half is predicted from the other
        tasks' A halves (their summaries, their own fits and the pooled model refitted on
        them), so no held-out patient shaped its prediction. Tasks are held out one by one (up
        to :data:`LOO_MAX_TASKS`) or in ``cv_folds`` folds.

        Returns ``(held, held_pos, held_rows, observed)`` as the leave-task-out loop builds
        them, ``observed`` being the B halves' summaries (what the interval scale compares
        the held-out predictions with). All empty when fewer than 4 tasks hold 2 rows in
        each half.
        """
        cfg = self.config
        halves = [patient_halves(t, cfg.seed) for t in tasks]
        usable = [i for i, (a, b) in enumerate(halves) if len(a) >= 2 and len(b) >= 2]
        if len(usable) < 4:
            return [], [], [], summ
        part_a = [tasks[i].subset(halves[i][0]) for i in usable]
        part_b = [tasks[i].subset(halves[i][1]) for i in usable]
        pooled_a, _ = _pooled_fit(index, part_a, cfg.pooled_rows, rng)
        kw = dict(prior_sd=cfg.prior_sd, intercept_prior_sd=cfg.intercept_prior_sd)
        summ_a = task_summaries(part_a, index.model, index.schema, pooled_a, **kw)
        observed = task_summaries(part_b, index.model, index.schema, pooled_a, **kw)
        T = centring(self.center_)
        # the neighbour-mean candidate averages the tasks' own fits, as the index stores them;
        # a half too small to fit keeps its summary
        own = fit_many(part_a, index.model, schema=index.schema, progress=False, cv=0)
        summ_a.fits = np.asarray(
            [
                T @ own.params[t.task_id].vector if t.task_id in own.params else summ_a.theta[j]
                for j, t in enumerate(part_a)
            ]
        )
        texts, vecs = [descriptions[i] for i in usable], vectors[usable]
        rows_a = _glmm_rows(cfg, index, part_a, self.center_)
        held, held_pos, held_rows = [], [], []
        # the halves share no patients: folds as for tasks that share none
        for train, tests in _cv_plan([{}] * len(usable), cfg.cv_folds, rng):
            fitted = _fit_candidates(
                cfg, index, part_a, summ_a, train, T, texts, vecs, groups, rng, rows_a
            )
            for j, _ in tests:
                pred = fitted.predict([texts[j]], vecs[[j]])
                held.append({c: (fitted.pooled + m, v) for c, (m, v) in pred.items()})
                held_pos.append(np.array([j]))
                held_rows.append(_rows(part_b[j], index, cfg.max_rows_per_task, rng))
        return held, held_pos, held_rows, observed

    # ------------------------------------------------------------------ generation
    def _is_fitted(self) -> bool:
        return self.fitted_ is not None

    def _generate(
        self, index, vecs: np.ndarray, items: list, single: bool, *, k, exclude, uncertainty=True
    ) -> list[ModelParams]:
        """:meth:`generate_params`, with a SD per coefficient when ``uncertainty``.

        ``k`` is how many of the tasks that shaped the model to list in its provenance (default
        10). Excluded tasks are removed from the pooled model and the meta-regression (refitted
        without them for these queries), not from the stack's validation
        (:class:`~ragim.errors.ExcludedAfterFitWarning`). ``metadata["provenance"]`` lists the
        ``k`` tasks with the largest weights in the whole stack's baseline risk
        (:meth:`_stack_weights`), ``metadata["stack"]`` the candidates' weights.
        """
        from ragim.index import per_query_excludes

        k = check_int(k, "k", ge=1, allow_none=True, note="tasks listed in the provenance")
        uncertainty = check_bool(uncertainty, "uncertainty")
        k = 10 if k is None else k
        texts = [q.description if isinstance(q, Task) else q for q in items]
        excludes = per_query_excludes(exclude, len(items))
        gone = self._removed_since_fit(index)  # with the tasks sharing their patients
        out: list[ModelParams | None] = [None] * len(items)
        by_fit: dict[frozenset, list[int]] = {}
        for qi, ex in enumerate(excludes):
            by_fit.setdefault(self._excluded(index, ex) | gone, []).append(qi)
        for dropped, qis in by_fit.items():
            with threadpool_limits(BLAS_THREADS, user_api="blas"):
                fitted = self._fitted_without(dropped, index)
                params = self._combine(
                    fitted, [texts[i] for i in qis], vecs[qis].astype(np.float64), uncertainty, k
                )
            for qi, p in zip(qis, params, strict=True):
                if dropped:
                    p.metadata["excluded_from_fit"] = len(dropped)
                out[qi] = p
        return out

    def _removed_since_fit(self, index) -> frozenset:
        """The tasks left out because the index changed since fit, as ``exclude=`` leaves
        them out: those it no longer holds, or holds changed (:meth:`index_changes`), and the
        tasks it still holds that share a patient with a task it no longer holds
        (:meth:`TaskIndex.sharing_patients <ragim.index.TaskIndex.sharing_patients>`), named
        in a one-line :class:`~ragim.errors.DataWarning`."""
        removed = self.index_changes(index)[0]
        if not removed:
            return frozenset()
        gone = [t for t in removed if t not in index]
        shared = index.sharing_patients(gone) if gone else []
        if shared:
            warnings.warn(
                f"the index no longer holds {len(gone)} task(s) this "
                f"{type(self).__name__} was fitted on ({name_some(gone)}); as exclude= does, "
                f"it also leaves out {len(shared)} task(s) sharing patients with them: "
                f"{name_some(shared)}",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
        return frozenset([*removed, *shared])

    def _excluded(self, index, exclude) -> frozenset:
        """The tasks ``exclude`` leaves out of what the model learns from: those it names with
        the tasks sharing their patients (:meth:`TaskIndex.held_out_ids
        <ragim.index.TaskIndex.held_out_ids>`), or the index tasks a predicate matches."""
        from ragim.index import as_predicate

        if exclude is not None and not callable(exclude):  # ids: a misspelt one is named
            fitted_on = set(self.summaries_.ids).union(self.fitted_ids_ or ())
            # fitted on but gone from the index since: no warning, and their patients' tasks
            gone = [t for t in exclude if t in fitted_on and t not in index]
            rest = [t for t in exclude if t not in gone]
            held = index.held_out_ids(rest) if rest else []
            return frozenset([*gone, *held, *(index.sharing_patients(gone) if gone else ())])
        pred = as_predicate(exclude)
        if pred is None:
            return frozenset()
        # every index task counts: the pooled model was fitted on all of them
        return frozenset(t for t, rec in zip(index.ids, index.records, strict=True) if pred(rec))

    def _fitted_without(self, dropped: frozenset, index) -> _Fitted:
        """The candidates refitted without the ``dropped`` tasks, the pooled model included
        (fitted on every index task, it would otherwise carry the excluded tasks' rows)."""
        if not dropped:
            return self.fitted_
        cache = self.__dict__.setdefault("_refits", {})
        if dropped not in cache:
            keep = [i for i, t in enumerate(self.summaries_.ids) if t not in dropped]
            if len(keep) < 2:
                raise ValidationError(
                    f"only {len(keep)} task(s) remain after the exclusions; relax `exclude`"
                )
            try:
                rest = [t for t in _index_tasks(index) if t.task_id not in dropped]
            except ValidationError as exc:
                raise ValidationError(
                    "exclude= refits the pooled model without the tasks left out (as does a "
                    "task removed from, or changed in, the index since fit), which needs the "
                    f"index's task rows: {exc}"
                ) from None
            rng = np.random.default_rng(self.config.seed)
            pooled, _ = _pooled_fit(index, rest, self.config.pooled_rows, rng)
            kept = [self.summaries_.ids[i] for i in keep]
            by_id = {t.task_id: t for t in rest}
            rows = _glmm_rows(self.config, index, [by_id[t] for t in kept], self.center_)
            if len(cache) > 16:
                cache.clear()
            warnings.warn(
                f"{len(dropped)} task(s) this {type(self).__name__} was fitted on are left out "
                f"({name_some(sorted(dropped))}): the pooled model and the meta-regression are "
                "refitted without them, but the stack weights, intercept shift and interval "
                "scale were validated with them; for a held-out evaluation, fit the generator "
                "on an index built without them (ragim index build --exclude; ragim.evaluate "
                "does this)",
                ExcludedAfterFitWarning,
                stacklevel=user_stacklevel(),
            )
            cache[dropped] = _Fitted(
                self.config,
                self.summaries_.take(keep),
                centring(self.center_) @ pooled,
                [self.descriptions_[i] for i in keep],
                self.vectors_[keep],
                self.groups_,
                rows=rows,
            )
        return cache[dropped]

    def _combine(
        self, fitted: _Fitted, texts: list[str], vectors: np.ndarray, uncertainty: bool, k: int
    ) -> list[ModelParams]:
        st = self.stack_
        names = [c for c in st["baseline"] if st["baseline"][c] + st["slopes"][c] > 0]
        pred = fitted.predict(texts, vectors)
        # a stacked candidate that cannot be fitted without the excluded tasks (their
        # descriptions held the only shared n-grams) predicts no deviation: the pooled model
        unavailable = [c for c in names if c not in pred]
        for c in unavailable:
            pred[c] = pred["pooled"]
        T = centring(self.center_)
        pooled_c = fitted.pooled  # refitted without any excluded tasks
        theta = np.zeros((len(texts), len(pooled_c)))
        sd = np.zeros_like(theta)
        for c in names:
            u, w = st["baseline"][c], st["slopes"][c]
            th, s = pooled_c + pred[c][0], np.sqrt(pred[c][1])
            theta[:, 0] += u * th[:, 0]
            theta[:, 1:] += w * th[:, 1:]
            sd[:, 0] += u * s[:, 0]
            sd[:, 1:] += w * s[:, 1:]
        theta[:, 0] += st["shift"]
        theta = theta @ np.linalg.inv(T).T  # back from the centred intercept to the model's own
        corr = self._correlations(sd) if uncertainty else [None] * len(texts)
        sd = _predictive_sd(sd, self.interval_scale_, self.pooled_var_, self.center_)
        prov = self._stack_weights(fitted, names, unavailable, texts, vectors)
        policy = [  # what few-shot adaptation of these models should do, by k (validated)
            {key: e[key] for key in ("k", "option", "prefer", "margin")}
            for e in self.adaptation_policy_.entries
        ]
        out = []
        for qi in range(len(texts)):
            meta = {
                "source": "generated",
                "generator": "statistical",
                "stack": {
                    c: {
                        "baseline": round(st["baseline"][c], 4),
                        "slopes": round(st["slopes"][c], 4),
                    }
                    for c in names
                },
                "provenance": self._provenance(fitted, prov[qi], vectors[qi], k),
                **({"unavailable": unavailable} if unavailable else {}),
                **({"between_tasks": self.between_tasks_} if self.between_tasks_ else {}),
                # no indexed task's rows varied these: nothing to borrow, not estimable
                **({"constant_terms": dict(self.never_varied_)} if self.never_varied_ else {}),
                "adaptation_policy": policy,
            }
            params = ModelParams(
                self.model_kind_,
                self.schema_,
                theta[qi],
                std=sd[qi] if uncertainty else None,
                metadata=meta,
                correlation=corr[qi],
            )
            if self.never_varied_ and isinstance(model_family(self.model_kind_), GAMFamily):
                params = carry_over_empty_bins(params, self.never_varied_)
            out.append(params)
        return out

    def _correlations(self, stack_sd: np.ndarray) -> list[np.ndarray | None]:
        """The correlations of each generated model's errors, (P, P) per row of the stack's
        centred SDs ``stack_sd`` (q, P): the pooled model's (its one-hot levels of one feature
        move together) plus the stack's own deviation, independent per parameter, mapped from
        the centred intercept to the model's own. None for a generator saved before the pooled
        correlations were kept."""
        if self.pooled_corr_ is None:
            return [None] * len(stack_sd)
        ps = np.sqrt(self.pooled_var_)
        U = np.linalg.inv(centring(self.center_))
        base = U @ (self.pooled_corr_ * np.outer(ps, ps)) @ U.T
        c = self.center_
        out = []
        for a in stack_sd**2 * self.interval_scale_:  # + U diag(a) U'
            cov = base.copy()
            cov[np.diag_indices_from(cov)] += a
            cov[0, 0] += a[1:] @ c**2
            cov[0, 1:] -= a[1:] * c
            cov[1:, 0] -= a[1:] * c
            out.append(std_and_correlation(cov)[1])
        return out

    def _stack_weights(
        self,
        fitted: _Fitted,
        names: list[str],
        unavailable: list[str],
        texts: list[str],
        vectors: np.ndarray,
    ) -> np.ndarray:
        """Each indexed task's weight in the whole stack's baseline risk, shape (q, n).

        A candidate's baseline is ``pooled + W_c @ (theta - pooled)``: ``W_c`` its intercept
        weights on the tasks (:meth:`_Fitted.weights`), ``theta`` the tasks' own estimates.
        That is ``W_c @ theta`` plus ``1 - sum(W_c)`` of the pooled model, which is fitted on
        every task's rows and so weighs each task by its share of them (the ``"pooled"``
        candidate, and one that cannot be fitted without excluded tasks, is that alone). The
        stack mixes the candidates' baselines with its baseline weights ``u_c``, so a task's
        weight is ``sum_c u_c * weight_c / sum_c u_c``; the weights of every task sum to 1. (An
        outside user saw only the leading candidate's 10 neighbours listed, summing to 1, while
        the text candidate, fitted on every task, held most of the stack.)"""
        st = self.stack_
        u = {c: st["baseline"][c] for c in names}
        if sum(u.values()) <= 0:  # no baseline weight (the shift alone): the stack's shares
            u = {c: st["baseline"][c] + st["slopes"][c] for c in names}
        total = sum(u.values())
        rows = np.asarray(fitted.n_rows, dtype=np.float64)
        by_rows = rows / max(float(rows.sum()), 1e-12)
        out = np.zeros((len(texts), len(fitted.ids)))
        done: dict[str, np.ndarray] = {}  # text-glmm weighs the tasks as text's GP does
        for c in names:
            if u[c] <= 0:
                continue
            if c == "pooled" or c in unavailable:
                w = np.broadcast_to(by_rows, out.shape)
            else:
                key = "text" if c == "text-glmm" else c
                if key not in done:
                    W = fitted.weights(c, texts, vectors)
                    done[key] = W + (1.0 - W.sum(axis=1, keepdims=True)) * by_rows
                w = done[key]
            out += u[c] / total * w
        return out

    @staticmethod
    def _provenance(fitted: _Fitted, w: np.ndarray, vector: np.ndarray, k: int) -> list[dict]:
        """The ``k`` tasks with the largest weights (in size) in the whole stack's baseline
        risk (:meth:`_stack_weights`).

        ``weight`` is signed: a GP's weights may be negative, a *contrast* (the generated
        baseline moves away from that task's), so a task's share is ``w / sum |w|`` and the
        tasks are ranked by its size (an outside user saw a sepsis task listed as the main
        source of a bleeding model it pulled away from)."""
        share = w / max(float(np.abs(w).sum()), 1e-12)
        top = np.argsort(-np.abs(share), kind="stable")[:k]
        return [
            {
                "task_id": fitted.ids[j],
                "description": fitted.descriptions[j],
                "similarity": round(float(fitted.vectors[j] @ vector), 6),
                "weight": round(float(share[j]), 6),
            }
            for j in top
            if share[j] != 0
        ]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save as an artifact: ``config.json``, ``state.json`` and ``arrays.safetensors``."""
        from safetensors.numpy import save as st_save

        from ragim.io import json_bytes, write_artifact

        if self.fitted_ is None:
            raise ValidationError("cannot save an unfitted StatisticalGenerator")
        st = self.fitted_.state
        arrays = {
            "pooled": self.pooled_,
            "pooled_var": self.pooled_var_,
            **({} if self.pooled_corr_ is None else {"pooled_corr": self.pooled_corr_}),
            "center": self.center_,
            "theta": self.summaries_.theta,
            "var": self.summaries_.var,
            "fits": self.summaries_.fits,
            "n_rows": self.summaries_.n_rows.astype(np.float64),
            "vectors": self.vectors_,
        }
        scalars = {}
        for key, v in st.items():
            if isinstance(v, np.ndarray):
                arrays[f"state.{key}"] = v.astype(np.float64)
            elif key != "vocabulary":
                scalars[key] = float(v)
        state = {
            **fit_state(self),
            "ids": self.summaries_.ids,
            "descriptions": self.descriptions_,
            "groups": self.groups_,
            "vocabulary": st.get("vocabulary"),
            "scalars": scalars,
            "stack": self.stack_,
            "cv": self.cv_,
            "interval_scale": self.interval_scale_,
            "adaptation_policy": self.adaptation_policy_.to_dict(),
            "between_tasks": self.between_tasks_,
            "never_varied": self.never_varied_,
        }
        files = {
            "config.json": json_bytes(asdict(self.config)),
            "state.json": json_bytes(state),
            "arrays.safetensors": st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()}),
        }
        return write_artifact(path, FORMAT, files)

    save_pretrained = save

    @classmethod
    def load(cls, path: str | Path) -> StatisticalGenerator:
        """Open a saved generator, verifying checksums and that its files agree."""
        from safetensors import SafetensorError
        from safetensors.numpy import load as st_load

        from ragim.io import read_artifact

        art = read_artifact(path, FORMAT)
        root = Path(art.path)
        try:
            cfg = art.read_json("config.json")
            # settings added since: an older artifact was fitted without them
            cfg = {"split_buckets": False, "ard": False, "validate_skipped": False, **cfg}
            gen = cls(StatisticalConfig(**{**cfg, "candidates": tuple(cfg["candidates"])}))
        except (TypeError, KeyError, ValueError, ValidationError) as exc:
            raise ArtifactError(
                f"{root / 'config.json'}: not a valid statistical generator config ({exc})"
            ) from exc
        try:
            arrays = st_load(art.read_bytes("arrays.safetensors"))
        except (SafetensorError, ValueError) as exc:
            raise ArtifactError(
                f"{root / 'arrays.safetensors'}: not a valid array file ({exc})"
            ) from exc
        state = art.read_json("state.json")
        try:
            gen.adaptation_policy_ = AdaptationPolicy.from_dict(
                state.get("adaptation_policy", {"note": "saved before adaptation was validated"})
            )
        except ValidationError as exc:
            raise ArtifactError(f"{root / 'state.json'}: adaptation_policy: {exc}") from exc
        try:
            try:
                fitted_on = read_fit_state(state)
            except ValidationError as exc:  # the schema: name the file it is in
                raise ValidationError(f"state.json: {exc}") from None
            gen.model_kind_, gen.param_names_, gen.schema_, gen.embedder_identity_ = fitted_on
            gen.fitted_ids_ = read_fitted_ids(state)  # None when saved before they were kept
            gen.fitted_digests_ = read_fitted_digests(state)
            P = len(gen.param_names_)
            checked = check_loaded(
                {k: state.get(k) for k in _STATE_FIELDS},
                _state_fields(P, gen.config.ngram_max),
                "state.json",
            )
            ids, gen.descriptions_ = checked["ids"], checked["descriptions"]
            _check_ids(ids, gen.fitted_ids_, gen.config.max_tasks)
            gen.groups_ = checked["groups"]
            gen.stack_, gen.cv_ = checked["stack"], state["cv"]
            gen.interval_scale_ = checked["interval_scale"]
            _check_stack(gen.stack_, set(gen.config.candidates) | {"pooled"})
            _check_validated(gen.stack_, gen.cv_, gen.interval_scale_, len(ids), gen.config)
            _check_arrays(arrays, n=len(ids), P=P, state=checked)
            gen.between_tasks_ = check_loaded(  # absent before it was kept
                state.get("between_tasks", []), [str], "state.json.between_tasks"
            )
            gen.never_varied_ = check_loaded(  # absent before it was kept
                state.get("never_varied", {}), {"*": float}, "state.json.never_varied"
            )
            gen.pooled_, gen.center_ = arrays["pooled"], arrays["center"]
            gen.pooled_var_ = arrays.get(
                "pooled_var", np.zeros_like(gen.pooled_)
            )  # absent before 0.1.0 final
            gen.pooled_corr_ = arrays.get("pooled_corr")  # absent before the correlations
            n = len(ids)
            gen.summaries_ = TaskSummaries(
                ids,
                arrays["theta"],
                arrays["var"],
                arrays["n_rows"].astype(np.int64),
                arrays["fits"],
            )
            gen.vectors_ = arrays["vectors"]
            fstate: dict[str, Any] = {
                k[len("state.") :]: v for k, v in arrays.items() if k.startswith("state.")
            }
            fstate.update(checked["scalars"])
            if checked["vocabulary"] is not None:
                fstate["vocabulary"] = checked["vocabulary"]
            shapes_ok = (
                gen.pooled_.shape == (P,)
                and gen.pooled_var_.shape == (P,)
                and (gen.pooled_corr_ is None or gen.pooled_corr_.shape == (P, P))
                and gen.center_.shape == (P - 1,)
                and gen.summaries_.theta.shape == (n, P)
                and gen.summaries_.var.shape == (n, P)
                and len(gen.descriptions_) == n
                and gen.vectors_.shape[0] == n
            )
            if not shapes_ok:
                raise ValueError(
                    "the arrays do not match the task list and parameter layout in state.json"
                )
            gen.fitted_ = _Fitted(
                gen.config,
                gen.summaries_,
                centring(gen.center_) @ gen.pooled_,
                gen.descriptions_,
                gen.vectors_,
                gen.groups_,
                state=fstate,
            )
        except ValidationError as exc:  # a field of the wrong type, shape or value
            raise ArtifactError(f"{root}: {exc}") from exc
        except (KeyError, TypeError, ValueError, np.linalg.LinAlgError) as exc:
            raise ArtifactError(
                f"{root}: state.json and arrays.safetensors do not describe one generator ({exc}); "
                "the artifact was assembled from different generators"
            ) from exc
        try:  # what no field check sees (the state's arrays against each other): one generation
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gen._combine(gen.fitted_, gen.descriptions_[:1], gen.vectors_[:1], True, 1)
        except (KeyError, TypeError, ValueError, IndexError, ValidationError) as exc:
            raise ArtifactError(
                f"{root}: state.json and arrays.safetensors do not describe one generator "
                f"(generating for its own task {ids[0]!r} fails: {exc}); the artifact was "
                "assembled from different generators"
            ) from exc
        return gen

    from_pretrained = load

    def __repr__(self) -> str:
        if self.fitted_ is None:
            return "StatisticalGenerator(not fitted)"
        w = ", ".join(
            f"{c}={self.stack_['baseline'][c]:.2f}/{self.stack_['slopes'][c]:.2f}"
            for c in self.stack_["baseline"]
        )
        return f"StatisticalGenerator({len(self.summaries_.ids)} tasks, stack baseline/slopes: {w})"


_STATE_FIELDS = (
    "ids",
    "descriptions",
    "groups",
    "vocabulary",
    "scalars",
    "stack",
    "interval_scale",
)


#: the state's scalars that are variances, nuggets or kernel scales
_NON_NEGATIVE = ("pooled_var_", "text_nugget_", "emb_nugget_", "emb_scale_")


def _state_fields(P: int, ngram_max: int) -> dict[str, Any]:
    """What a saved generator's ``state.json`` fields must be (:func:`ragim.checks.check_loaded`)
    for ``P`` parameters and n-grams of up to ``ngram_max`` words."""

    def vocabulary(v, name):
        if v is None:
            return None
        v = check_loaded(v, {"*": partial(check_int, ge=0, lt=max(len(v), 1))}, name)
        if len(set(v.values())) < len(v):
            raise ValidationError(f"{name} gives two n-grams one column")
        long = [t for t in v if len(t.split()) > ngram_max]
        if long:
            raise ValidationError(
                f"{name} holds n-grams longer than ngram_max ({ngram_max}): {long[:3]}"
            )
        return v

    def scalars(v, name):
        v = check_loaded(v, {"*": float}, name)
        bad = [k for k, x in v.items() if x < 0 and k.startswith(_NON_NEGATIVE)]
        if bad:
            raise ValidationError(
                f"{name}.{bad[0]} must be >= 0 (a variance or kernel scale), got {v[bad[0]]!r}"
            )
        return v

    def stack(v, name):
        weights = {"*": partial(check_number, ge=0)}
        return check_loaded(v, {"shift?": float, "baseline": weights, "slopes": weights}, name)

    return {
        "ids": [str],  # each once: _check_ids
        "descriptions": [str],
        "groups": {"*": [partial(check_int, ge=0, lt=P)]},
        "vocabulary": vocabulary,
        "scalars": scalars,
        "stack": stack,
        "interval_scale": partial(
            check_number,
            ge=INTERVAL_SCALE_MIN_SAVED,
            le=INTERVAL_SCALE_MAX,
            note="the factor _stack clips to these bounds",
        ),
    }


def _check_ids(ids: list[str], index_ids: list[str] | None, max_tasks: int) -> None:
    """Refuse a saved task list that names a task twice, more tasks than ``max_tasks``, or a
    task its ``index_ids`` (the index it was fitted on, when kept) did not hold: the meta-
    regression learned from each of at most ``max_tasks`` index tasks once."""
    if twice := repeated(ids):
        raise ValidationError(
            f"state.json.ids lists {name_some(twice)} more than once; the generator learned "
            "from each task once"
        )
    if len(ids) > max_tasks:
        raise ValidationError(
            f"state.json.ids lists {len(ids)} tasks, more than max_tasks={max_tasks} in config.json"
        )
    unknown = [] if index_ids is None else sorted(set(ids) - set(index_ids))
    if unknown:
        raise ValidationError(
            f"state.json.ids names {len(unknown)} task(s) that its index_ids (the index it was "
            f"fitted on) do not hold: {name_some(unknown)}"
        )


def _check_validated(
    stack: dict, cv: Any, interval_scale: float, n_ids: int, config: StatisticalConfig
) -> None:
    """Refuse a stack and interval scale that the validation recorded in ``cv`` could not have
    chosen.

    A generator that validated nothing (``cv.n_tasks`` 0) uses the pooled model alone
    (:data:`UNVALIDATED_STACK`) with interval scale 1. Otherwise :func:`_stack` chose the
    intercept shift ``a`` and the weights ``u``, ``w`` (together ``x``) by minimising the
    held-out log-loss plus the ridge ``|x - x0|^2 / (2 n)`` (``n`` held-out tasks) from its
    start ``x0``: shift 0 and ``u = w =`` the anchor weights (``cv.anchor``, which sum to 1;
    in generators saved before the anchor was kept, 1 for the candidate of least held-out
    log-loss). L-BFGS-B never ends above where it starts, so ``|x - x0|^2 / (2 n) <=
    loss(x0)``; the log-loss is convex in the linear predictor, which is linear in ``x``, so
    ``loss(x0) <= sum_c anchor_c loss_c``, the held-out log-losses of the candidates
    (``cv.candidates``). Hence ``|x - x0| <= sqrt(2 n sum_c anchor_c loss_c)``: a few log-odds
    for a few tasks at a log-loss near 0.6, and a shift of 1e6 (every generated risk 1) is
    refused. The bound rests on ``cv``, which is checked for type and against the task list
    but cannot be recomputed without the index's rows.

    The interval scale is clipped to [1, :data:`INTERVAL_SCALE_MAX`] since before the anchor
    was kept (to [:data:`INTERVAL_SCALE_MIN_SAVED`, 20] earlier), so one below 1 is refused
    in a generator that keeps the anchor.
    """
    if not isinstance(cv, dict):
        raise ValidationError(f"state.json.cv must be an object, got {type(cv).__name__}")
    n = check_loaded(cv.get("n_tasks"), partial(check_int, ge=0), "state.json.cv.n_tasks")
    skipped = check_loaded(
        cv.get("n_skipped_tasks", 0), partial(check_int, ge=0), "state.json.cv.n_skipped_tasks"
    )
    if skipped and not config.validate_skipped:
        raise ValidationError(
            f"state.json.cv.n_skipped_tasks is {skipped}, but config.json's validate_skipped is "
            "off: no skipped task was held out"
        )
    if n > n_ids + skipped:
        raise ValidationError(
            f"state.json.cv.n_tasks is {n}, more than the {n_ids} tasks in its ids and the "
            f"{skipped} skipped ones it could hold out"
        )
    if n == 0:
        if stack != UNVALIDATED_STACK or interval_scale != 1.0:
            raise ValidationError(
                "state.json: cv.n_tasks is 0 (nothing was validated), so the stack must be the "
                f"pooled model alone {UNVALIDATED_STACK} and interval_scale 1, got {stack} and "
                f"{interval_scale:g}"
            )
        return
    losses = check_loaded(
        cv.get("candidates"), {"*": partial(check_number, ge=0)}, "state.json.cv.candidates"
    )
    if not losses or set(losses) != set(stack["baseline"]):
        raise ValidationError(
            f"state.json.cv.candidates ({sorted(losses)}) must be the candidates the stack "
            f"weighs ({sorted(stack['baseline'])})"
        )
    if cv.get("anchor") is None:  # saved before the anchor was kept: the best candidate
        best = min(losses, key=losses.get)
        anchor = {c: float(c == best) for c in losses}
    else:
        anchor = check_loaded(
            cv["anchor"], {"*": partial(check_number, ge=0, le=1)}, "state.json.cv.anchor"
        )
        if set(anchor) != set(losses):
            raise ValidationError("state.json.cv.anchor must weigh the stack's candidates")
        if interval_scale < 1.0:
            raise ValidationError(
                f"state.json.interval_scale must be a number in [1, {INTERVAL_SCALE_MAX:g}] (a "
                f"generator that keeps cv.anchor clips it there), got {interval_scale!r}"
            )
    names = sorted(losses)
    moved = np.array(
        [stack["shift"]]
        + [stack[part][c] - anchor[c] for part in ("baseline", "slopes") for c in names]
    )
    # the anchor is saved to 4 decimals (its weights may miss 1 by that), the losses to 6
    start = sum(anchor[c] * losses[c] for c in names) + 1e-4 * len(names) * max(losses.values())
    bound = float(np.sqrt(2 * n * start))
    if float(np.linalg.norm(moved)) > bound * (1 + 1e-6) + 1e-3:
        raise ValidationError(
            f"state.json.stack (shift {stack['shift']:.4g}) lies {np.linalg.norm(moved):.4g} "
            f"from where its fit started, but the ridge it was fitted under keeps it within "
            f"{bound:.4g} = sqrt(2 x {n} held-out tasks x {start:.4g}, the held-out log-loss "
            "at the start: state.json.cv.anchor's mix of cv.candidates)"
        )


def _check_stack(stack: dict, candidates: set[str]) -> None:
    if set(stack["baseline"]) != set(stack["slopes"]) or not set(stack["baseline"]) <= candidates:
        raise ValidationError(
            f"state.json: stack must weigh the same candidates ({sorted(candidates)}) in "
            f"baseline and slopes, got {sorted(stack['baseline'])} and {sorted(stack['slopes'])}"
        )
    stack.setdefault("shift", 0.0)


def _check_arrays(arrays: dict[str, np.ndarray], *, n: int, P: int, state: dict) -> None:
    """Refuse arrays that are not finite floats of the shapes ``state.json`` implies (``n``
    tasks, ``P`` parameters), or variances below 0, naming the array."""
    shapes = {
        "pooled": (P,),
        "pooled_var": (P,),
        "pooled_corr": (P, P),
        "center": (P - 1,),
        "theta": (n, P),
        "var": (n, P),
        "fits": (n, P),
        "n_rows": (n,),
    }
    n_vocab = len(state["vocabulary"] or {})
    for key, a in arrays.items():
        where = f"arrays.safetensors: {key}"
        if a.dtype.kind != "f" or not np.all(np.isfinite(a)):
            raise ValidationError(f"{where} must hold finite floats, got {a.dtype} {a.shape}")
        want = shapes.get(key)
        if key == "vectors" and (a.ndim != 2 or len(a) != n):
            want = (n, "d")
        elif key.startswith("state.tau_") and a.shape != (n_vocab + 1,):
            want = (n_vocab + 1,)  # a constant, then each n-gram
        elif key.startswith("state.glmm_"):
            cols = state["groups"].get(key[len("state.glmm_") :], [])
            if a.ndim != 2 or a.shape[1] != len(cols):
                want = ("k", len(cols))
        if want is not None and a.shape != want:
            raise ValidationError(f"{where} must have shape {want}, got {a.shape}")
        if (key in ("pooled_var", "var", "n_rows") or key.startswith("state.tau_")) and (
            a < 0
        ).any():
            raise ValidationError(f"{where} holds negative values (a variance or count)")
        if key == "pooled_corr" and (np.abs(a) > 1 + 1e-9).any():
            raise ValidationError(f"{where} holds correlations outside [-1, 1]")


# ---------------------------------------------------------------------- the default
_DEFAULTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_generator(index, *, progress: bool = False) -> StatisticalGenerator | None:
    """The default generator, a :class:`StatisticalGenerator` fitted on ``index``.

    Fitted once per index object and kept while the index lives (refitted when tasks are
    added or removed). ``None`` when the index holds no task rows to learn from (built with
    ``keep_tasks=False``, grown with ``add()``, or saved without tasks); callers then fall back
    to the neighbour mean and say so.
    """
    if getattr(index, "tasks", None) is None:
        return None
    key = (len(index), id(index.tasks))
    held = _DEFAULTS.get(index)
    if held is None or held[0] != key:
        held = (key, StatisticalGenerator().fit(index, progress=progress))
        _DEFAULTS[index] = held
    return held[1]


# ---------------------------------------------------------------------- helpers
def _index_tasks(index) -> list[Task]:
    if index.tasks is None:
        raise ValidationError(
            "the index holds no task rows (it was built with keep_tasks=False, grown with "
            "add(), or saved without tasks); rebuild it from a TaskCollection to fit a generator"
        )
    tasks = [t for t in index.tasks if t.task_id in index]
    return tasks


def _small_tasks(index, indexed: list[str]) -> list[Task]:
    """The tasks :meth:`TaskIndex.build` could not fit (``index.skipped_tasks``), with rows of
    the index's schema and no patient shared with an indexed task: extra held-out tasks for
    the stack, so that it is validated on tasks as small as new ones often are."""
    from ragim.tasks import patient_id_set

    small = getattr(index, "skipped_tasks", None)
    if small is None:
        return []
    taken = set().union(*(patient_id_set(index.record(t).get("metadata")) for t in indexed))
    return [
        t
        for t in small
        if len(t.y) and not (patient_id_set(t.metadata) & taken) and t.task_id not in index
    ]


def _pooled_fit(index, tasks: list[Task], max_rows: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """The pooled L2 logistic model (C = 1) on the index tasks' rows, subsampled to ``max_rows``,
    and the mean design row of those rows (the centre of the centred intercept)."""
    w, center, _, _ = _pooled_fit_with_variance(index, tasks, max_rows, rng)
    return w, center


def _pooled_fit_with_variance(
    index, tasks: list[Task], max_rows: int, rng, between: Sequence[int] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_pooled_fit`, the sampling variances of the pooled model's centred parameters
    and their correlations (the inverse Hessian of its penalised log-likelihood at the fit,
    as its diagonal and as a correlation matrix: the identity when it cannot be inverted).

    ``between`` are the positions of terms constant within every task
    (:func:`ragim.data_checks.between_task_terms`). Their effect rests on the differences
    between the few tasks, not on independent rows, so their variances take the task-clustered
    sandwich estimate (Liang & Zeger 1986, with the G / (G - 1) small-sample factor) where it
    is larger than the model-based one; their correlations are kept."""
    import pandas as pd

    X = pd.concat([t.X for t in tasks], ignore_index=True)
    y = np.concatenate([t.y for t in tasks])
    task_of = np.repeat(np.arange(len(tasks)), [len(t.y) for t in tasks])
    if len(y) > max_rows:
        keep = np.sort(rng.choice(len(y), max_rows, replace=False))
        X, y, task_of = X.iloc[keep].reset_index(drop=True), y[keep], task_of[keep]
    D = design_matrix(index.model, index.schema, X)
    center = D.mean(axis=0)
    w = model_family(index.model).pooled_fit(index.schema, X, y, D)
    Ac = np.hstack([np.ones((len(D), 1)), D - center])
    p = np.exp(log_expit(Ac @ (centring(center) @ w)))
    H = (Ac * (p * (1 - p))[:, None]).T @ Ac + np.diag([0.0] + [1.0] * (len(w) - 1))
    try:
        cov = np.linalg.inv(H + 1e-9 * np.eye(len(w)))
        var, corr = np.diag(cov).copy(), std_and_correlation(cov)[1]
    except (np.linalg.LinAlgError, ValidationError):
        return w, center, np.zeros(len(w)), np.eye(len(w))
    if len(between):
        var[list(between)] = np.maximum(
            var[list(between)], _clustered_variance(cov, Ac * (y - p)[:, None], task_of)[between]
        )
    return w, center, np.maximum(var, 0.0), corr


def _clustered_variance(cov: np.ndarray, scores: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """The cluster-robust (sandwich) variances of a fit's parameters, shape (P,).

    Parameters
    ----------
    cov : the model-based covariance, the inverse Hessian of the log-likelihood, (P, P).
    scores : each row's score (gradient of its log-likelihood at the fit), (n, P).
    clusters : each row's cluster (task) label, (n,).

    Returns
    -------
    numpy.ndarray
        ``diag(cov @ B @ cov) * G / (G - 1)`` with ``B`` the sum over the ``G`` clusters of the
        outer product of their summed scores (Liang & Zeger 1986; the CR1 factor of
        Cameron & Miller 2015, J. Human Resources 50:317). Zeros for one cluster.

    Examples
    --------
    >>> s = np.array([[1.0], [1.0], [-1.0], [-1.0]])
    >>> _clustered_variance(np.eye(1), s, np.array([0, 0, 1, 1]))
    array([16.])
    """
    _, inverse = np.unique(clusters, return_inverse=True)
    G = int(inverse.max()) + 1 if len(inverse) else 0
    if G < 2:
        return np.zeros(len(cov))
    summed = np.zeros((G, scores.shape[1]))
    np.add.at(summed, inverse, scores)
    half = summed @ cov  # (G, P): each cluster's score mapped through the inverse Hessian
    return (half**2).sum(axis=0) * G / (G - 1)


def _cv_plan(
    records: list[dict], n_folds: int, rng
) -> list[tuple[np.ndarray, list[tuple[int, frozenset]]]]:
    """Leave-task-out validation folds inside the index, leak-free as the evaluation protocols are.

    Tasks are split at random into ``n_folds`` folds (one per task for up to
    :data:`LOO_MAX_TASKS` tasks). Each held-out task is predicted from
    the fold's training tasks *less those that share patients with it* (returned as the
    frozenset of their positions), so a subgroup task is never predicted from its own
    whole-site task, while the site's other subgroups still count.
    """
    from ragim.tasks import patient_id_set

    n = len(records)
    pids = [patient_id_set(rec.get("metadata")) for rec in records]
    owners: dict[str, list[int]] = {}
    for i, ps in enumerate(pids):
        for pid in ps:
            owners.setdefault(pid, []).append(i)
    k = n if n <= LOO_MAX_TASKS else min(n_folds, n)
    assign = rng.permutation(np.arange(n) % k)
    plan = []
    for f in range(k):
        train = np.flatnonzero(assign != f)
        in_train = set(train.tolist())
        tests = []
        for j in np.flatnonzero(assign == f):
            overlap = {o for pid in pids[j] for o in owners[pid]} & in_train
            tests.append((int(j), frozenset(overlap)))
        plan.append((train, tests))
    return plan


def patient_halves(task: Task, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of ``task`` in half A and half B of the patients, shape (n_a,), (n_b,).

    A patient's half is a seeded hash of its canonical id (CRC-32), so a patient falls in the
    same half in every task that holds it. Rows of a task without patient ids are split at
    random (seeded by ``seed`` and the task id).

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"x": range(6)})
    >>> one = Task("a", "d", X, np.array([0, 1] * 3), {"patient_ids": [1, 2, 3, 4, 5, 6]})
    >>> two = Task("b", "d", X, np.array([1, 0] * 3), {"patient_ids": [6, 5, 4, 3, 2, 1]})
    >>> a1, _ = patient_halves(one, 0); a2, _ = patient_halves(two, 0)
    >>> sorted(6 - a2) == sorted(a1 + 1)   # the same patients, whichever task holds them
    True
    """
    import zlib

    ids = task.metadata.get("patient_ids")
    if ids:
        in_b = np.array(
            [zlib.crc32(f"{seed}:{canonical_id(p, 'patient id')}".encode()) & 1 for p in ids],
            dtype=bool,
        )
    else:
        rng = np.random.default_rng([seed, zlib.crc32(task.task_id.encode())])
        in_b = rng.permutation(task.n_rows) < task.n_rows // 2
    return np.flatnonzero(~in_b), np.flatnonzero(in_b)


def _fit_candidates(
    cfg: StatisticalConfig,
    index,
    tasks: list[Task],
    summ: TaskSummaries,
    rows: np.ndarray,
    T: np.ndarray,
    descriptions: list[str],
    vectors: np.ndarray,
    groups: dict[str, list[int]],
    rng,
    task_rows: list[tuple[np.ndarray, np.ndarray]] | None,
) -> _Fitted:
    """The candidates fitted on the tasks at positions ``rows``. The pooled model is refitted
    on their rows too: fitted on every index task it would have seen a held-out task (and the
    tasks that share its patients). ``task_rows``: every task's :func:`_glmm_rows`."""
    pooled, _ = _pooled_fit(index, [tasks[i] for i in rows], cfg.pooled_rows, rng)
    return _Fitted(
        cfg,
        summ.take(rows),
        T @ pooled,
        [descriptions[i] for i in rows],
        vectors[rows],
        groups,
        rows=None if task_rows is None else [task_rows[i] for i in rows],
    )


def _glmm_rows(
    cfg: StatisticalConfig, index, tasks: list[Task], center: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Per task, its centred design with the intercept column and its labels, at most
    ``max_rows_per_task`` rows (a seeded subsample per task): what the ``text-glmm`` candidate
    is fitted on. None when that candidate is not used."""
    if "text-glmm" not in cfg.candidates:
        return None
    out = []
    for i, t in enumerate(tasks):
        A, y = _rows(t, index, cfg.max_rows_per_task, np.random.default_rng([cfg.seed, i]))
        A[:, 1:] -= center
        out.append((A, y))
    return out


def _rows(task: Task, index, max_rows: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(design with intercept column, y) of a task, subsampled to ``max_rows`` rows."""
    D = design_matrix(index.model, index.schema, task.X)
    y = task.y.astype(float)
    if len(y) > max_rows:
        keep = rng.choice(len(y), max_rows, replace=False)
        D, y = D[keep], y[keep]
    return np.hstack([np.ones((len(D), 1)), D]), y


def _stack(
    candidates: tuple[str, ...],
    held: list[dict],
    held_pos: list[np.ndarray],
    held_rows: list,
    summ: TaskSummaries,
    center: np.ndarray,
) -> tuple[dict, dict, float, np.ndarray, np.ndarray]:
    """Stack weights by held-out mean per-task log-loss; the CV table; the interval scale; the
    stacked (centred) parameters of every held-out task and their stacked SDs (before
    :func:`_predictive_sd`), in ``held_pos`` order.

    ``held`` holds, per held-out task, each candidate's (centred parameters, variances).

    Each candidate ``c`` contributes its baseline risk ``eta_c`` (the centred intercept) and
    its slope part ``(x - center) @ beta_c`` with separate non-negative weights ``u_c`` and
    ``w_c``, plus one free shift ``a``: ``logit = a + sum_c u_c eta_c + w_c (x - center) beta_c``.
    Separate weights let validation shrink the slopes towards zero when a new task's effects
    are less certain than the pooled ones (heterogeneity attenuates the best single model),
    while the baseline follows the description. The interval scale makes the held-out tasks'
    summaries, standardised by the predictive and the summary variances, average 1.
    """
    names = [c for c in candidates if all(c in h for h in held)]
    if not names:
        raise ValidationError(
            f"none of the candidates {list(candidates)} could be fitted on this index (the "
            "descriptions share no n-gram in at least min_df of them); add 'pooled' to candidates"
        )
    C = len(names)
    feats, ys, owners = [], [], []
    means = {c: [] for c in names}
    sds = {c: [] for c in names}
    t = 0
    for pred, pos in zip(held, held_pos, strict=True):
        for j in range(len(pos)):
            A, y = held_rows[t]
            Dc = A[:, 1:] - center
            cols = []
            for c in names:
                theta = pred[c][0][j]
                means[c].append(theta)
                sds[c].append(np.sqrt(pred[c][1][j]))
                cols.append((np.full(len(y), theta[0]), Dc @ theta[1:]))
            feats.append(np.column_stack([b for b, _ in cols] + [s for _, s in cols]))
            ys.append(y)
            owners.append(np.full(len(y), t))
            t += 1
    Z, y, owner = np.concatenate(feats), np.concatenate(ys), np.concatenate(owners)
    n_tasks = t
    row_w = 1.0 / np.bincount(owner)[owner] / n_tasks  # every held-out task counts once

    def row_losses(x):  # (linear predictor, log-loss) of every held-out row
        z = x[0] + Z @ x[1:]
        return z, -(y * log_expit(z) + (1 - y) * log_expit(-z))

    def loss(x, ridge=0.0, at=None):
        z, ll = row_losses(x)
        r = np.exp(log_expit(z)) - y
        g = np.concatenate([[np.sum(row_w * r)], Z.T @ (row_w * r)])
        if ridge:  # pulls the weights towards the anchor: few held-out tasks, small moves
            d = x - at
            return float(np.sum(row_w * ll)) + 0.5 * ridge * float(d @ d), g + ridge * d
        return float(np.sum(row_w * ll)), g

    def unit(i):
        x = np.zeros(1 + 2 * C)
        x[1 + i] = x[1 + C + i] = 1.0
        return x

    def task_losses(x):  # (n_tasks,) each held-out task's mean log-loss
        ll = row_losses(x)[1]
        return np.bincount(owner, weights=ll, minlength=n_tasks) / np.bincount(owner)

    per_task = np.column_stack([task_losses(unit(i)) for i in range(C)])  # (n_tasks, C)
    single = dict(zip(names, per_task.mean(axis=0).tolist(), strict=True))
    # the anchor: how often each candidate is best when the held-out tasks are reweighted by
    # the Bayesian bootstrap (Rubin 1981), as pseudo-BMA+ (Yao, Vehtari, Simpson & Gelman 2018)
    # reweights them; pseudo-BMA+ averages softmax weights over the draws where this counts
    # wins, which is its limit when each draw's scores differ by many nats. With many held-out
    # tasks it is the best candidate; with few, and candidates close, it averages them instead
    # of trusting a noisy choice
    draws = np.random.default_rng(0).dirichlet(np.ones(n_tasks), size=2000) @ per_task
    anchor = np.bincount(draws.argmin(axis=1), minlength=C) / len(draws)
    x0 = np.concatenate([[0.0], anchor, anchor])
    ridge = 1.0 / n_tasks
    res = minimize(
        lambda v: loss(v, ridge, x0),
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(None, None)] + [(0.0, None)] * (2 * C),
    )
    x = res.x if loss(res.x)[0] <= loss(x0)[0] else x0
    a, u, w = float(x[0]), x[1 : 1 + C], x[1 + C :]
    stack = {
        "shift": a,
        "baseline": {c: float(v) for c, v in zip(names, u, strict=True)},
        "slopes": {c: float(v) for c, v in zip(names, w, strict=True)},
    }
    cv = {
        "n_tasks": n_tasks,
        "candidates": {c: round(v, 6) for c, v in single.items()},
        "anchor": {c: round(float(v), 4) for c, v in zip(names, anchor, strict=True)},
        "stack": round(float(loss(x)[0]), 6),
    }
    order = np.concatenate(held_pos)
    real = order >= 0
    mean = np.zeros((len(order), summ.theta.shape[1]))
    sd = np.zeros_like(mean)
    for i, c in enumerate(names):
        th, s = np.asarray(means[c]), np.asarray(sds[c])
        mean[:, 0] += u[i] * th[:, 0]
        mean[:, 1:] += w[i] * th[:, 1:]
        sd[:, 0] += u[i] * s[:, 0]
        sd[:, 1:] += w[i] * s[:, 1:]
    mean[:, 0] += a
    mean, sd, order = mean[real], sd[real], order[real]
    obs, obs_var = summ.theta[order], summ.var[order]
    informative = obs_var < 0.5 * VAR_BOUNDS[1]
    # E[(obs - mean)^2] = scale * predictive variance + summary variance, by moments. It may widen
    # the meta-regression's own posterior, never narrow it: the summaries are MAP fits shrunk
    # towards the pooled model, so their spread understates the tasks' true deviations (with a
    # floor of 0.05 the 90% intervals held 57% of true synthetic slopes)
    num = np.sum(((obs - mean) ** 2 - obs_var)[informative])
    den = np.sum((sd**2)[informative])
    scale = float(np.clip(num / den, 1.0, INTERVAL_SCALE_MAX)) if den > 0 else 1.0
    return stack, cv, scale, mean, sd


def _predictive_sd(
    sd: np.ndarray, scale: float, pooled_var: np.ndarray, center: np.ndarray
) -> np.ndarray:
    """SDs of generated parameters (model's own intercept) from the stack's centred SDs: what the
    stack does not know about a new task, scaled to cover held-out tasks, plus what the pooled
    model itself is unsure of (tasks that all agree still leave its sampling error)."""
    var = sd**2 * scale + pooled_var
    var[:, 0] += var[:, 1:] @ center**2
    return np.sqrt(var)


__all__ = [
    "CANDIDATES",
    "StatisticalConfig",
    "StatisticalGenerator",
    "default_generator",
    "patient_halves",
]
