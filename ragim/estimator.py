"""ZeroShotClassifier: a scikit-learn classifier built from an index, a generator and a description.

With no labels, ``fit()`` generates the task's model zero-shot. With k labelled rows it
adapts the generated model ``theta0`` to them (:mod:`ragim.adaptation`). The default,
``adaptation="auto"``, fits four nested candidates and keeps the simplest one whose
Laplace evidence on the k rows is within one nat of the best:

* ``"zero-shot"``: ``theta0`` unchanged (kept whenever the rows cannot tell the others apart);
* ``"intercept"``: ``theta0`` with its intercept shifted (the event rate differs between hospitals);
* ``"recalibrate"``: an intercept shift and one *positive* scale ``b = exp(beta)`` on the
  generated log-odds, so a few unlucky rows can weaken the generated model but never reverse it;
* ``"map"``: every coefficient moves, a MAP logistic regression whose Gaussian prior is centred
  on ``theta0`` (precision ``lambda``, the intercept's ``lambda * intercept_prior_ratio``),
  ``lambda`` integrated out by the evidence (``prior_strength="evidence"``), chosen by
  cross-validation (``"cv"``) or given. With many rows it tends to the per-task fit.

The default generator also validates, on its index's own tasks held out one fold at a time,
which adaptation actually helps with k labelled rows (:mod:`ragim.adaptation_policy`): for
each k it keeps zero-shot, the evidence choice above (with margin 1, 3 or 10 nats), the
intercept shift or ``"prior"`` (below), whichever lowers held-out log-loss against zero-shot
with an upper bound (mean + one standard error over the held-out tasks) below zero, losing
more than 0.05 AUROC in at most 5% of draws, and zero-shot when none does. ``"auto"``
follows that policy, carried in the generated model's ``metadata["adaptation_policy"]``; its
entry is in ``adaptation_report_["policy"]``. Beyond the largest validated k, and for
models without a policy, the evidence alone chooses.

``adaptation="recalibrate"`` (or any other candidate's name) forces that candidate.
``adaptation="prior"`` is a fifth, asked for by name or by the validated policy: every
coefficient moves under the
generator's own prior, ``N(theta0, diag(std) R diag(std))`` with the SDs and correlations it
generated (a Bayesian update;
a coefficient the index pins down barely moves; it needs a generator that reports SDs, as the
default one does).
Rows of one class cannot show which patients are at higher risk: then only
``"zero-shot"`` and ``"intercept"`` compete, whatever ``adaptation`` says. What the
adaptation did is in ``adaptation_report_``; an :class:`~ragim.errors.AdaptationWarning`
says when it moved a coefficient across zero, scaled the log-odds by more than
:data:`~ragim.adaptation.SCALE_WARN_FACTOR` either way, or worked from rows of one class.

Without an index the prior is centred at zero, which makes the estimator a penalised
logistic regression with an evidence-chosen penalty (``"map"``, whatever ``adaptation``
says). With an index, a description outside the index's domain
(:func:`ragim.domain.check`) raises a :class:`~ragim.errors.DomainWarning` at ``fit``.

Examples
--------
>>> import numpy as np
>>> from ragim import ZeroShotClassifier
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(40, 3)); y = (X[:, 0] + rng.normal(size=40) > 0).astype(int)
>>> clf = ZeroShotClassifier().fit(X, y)
>>> clf.predict_proba(X).shape
(40, 2)

``classes_`` is sorted as scikit-learn sorts labels, whichever is the event, so column ``i`` of
``predict_proba`` is ``classes_[i]`` and scikit-learn's scorers read the columns right:

>>> named = ZeroShotClassifier(pos_label="case").fit(X, np.where(y == 1, "case", "control"))
>>> named.classes_.tolist(), named.event_label_
(['case', 'control'], 'case')
>>> bool(np.allclose(named.predict_proba(X)[:, 0], clf.predict_proba(X)[:, 1]))
True
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ragim.adaptation import EVIDENCE_MARGIN, ORDER, adapt, recalibration
from ragim.adaptation_policy import AdaptationPolicy
from ragim.canonical import canonical_level
from ragim.checks import check_aligned_labels
from ragim.errors import AdaptationWarning, DataWarning, ValidationError, user_stacklevel
from ragim.models.base import BinaryClassifierTags, check_binary_targets, json_label
from ragim.models.family import constant_terms
from ragim.models.map import map_logistic  # noqa: F401  (re-exported: ragim.estimator.map_logistic)
from ragim.params import ModelParams, design_matrix
from ragim.schema import FeatureSchema
from ragim.tasks import binary_outcome


def recalibrate(
    D: np.ndarray,
    y: np.ndarray,
    theta0: np.ndarray,
    *,
    intercept_sd: float | None = None,
    slope_sd: float | None = None,
    prior_std: np.ndarray | None = None,
    prior_correlation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """MAP recalibration of a generated model: ``theta = [theta0_0 + a, b * theta0_terms]`` with
    ``a ~ N(0, intercept_sd^2)`` and ``log b ~ N(0, slope_sd^2)`` (so ``b > 0``).

    When the prior widths are not given, ``(intercept_sd, slope_sd) = s * (1, 0.5)`` with the
    scale ``s`` integrated out over :data:`ragim.adaptation.RECAL_SCALES`; the parameters are
    those at the most probable ``s``. Returns (theta, std, intercept_sd used). This is the
    ``"recalibrate"`` candidate of :func:`ragim.adaptation.adapt`.

    ``std``: each adapted parameter's SD, combining the generated SDs ``prior_std`` (and their
    ``prior_correlation``) with the uncertainty of ``a`` and ``b`` on the rows
    (:func:`ragim.adaptation.recalibration` gives the formula); None without ``prior_std``
    (the generated coefficients' uncertainty is then unknown).

    Examples
    --------
    >>> D = np.array([[-1.0], [0.0], [1.0], [2.0]]); y = np.array([0, 1, 1, 1])
    >>> theta, std, s = recalibrate(D, y, np.array([-1.0, 1.0]), prior_std=np.array([0.5, 0.4]))
    >>> bool(theta[0] > -1.0)   # more positives than the generated intercept expects
    True
    >>> bool(std[1] >= theta[1] * 0.4)   # b (theta0's term is 1) times the generated SD at least
    True
    """
    if (intercept_sd is None) != (slope_sd is None):
        raise ValidationError("give both intercept_sd and slope_sd, or neither")
    y = np.asarray(y, dtype=float)
    theta0 = np.asarray(theta0, dtype=float)
    sds = {"prior_std": prior_std, "prior_correlation": prior_correlation}
    if intercept_sd is None:
        c = recalibration(D, y, theta0, **sds)
    else:
        c = recalibration(
            D,
            y,
            theta0,
            scales=(float(intercept_sd),),
            slope_ratio=float(slope_sd) / intercept_sd,
            **sds,
        )
    return c.theta, c.std, float(c.detail["prior_scale"])


def adapt_prior(
    prior: ModelParams,
    X: pd.DataFrame,
    y01,
    *,
    adaptation: str = "auto",
    prior_strength="evidence",
    intercept_prior_ratio: float = 0.1,
    labels: tuple | None = None,
    warn: bool = True,
    design: np.ndarray | None = None,
) -> tuple[ModelParams, dict]:
    """Adapt generated parameters to labelled rows: :func:`ragim.adaptation.adapt` on a model.

    Parameters
    ----------
    prior : the generated (or any) parameters, the prior.
    X : the labelled rows, the schema's feature columns.
    y01 : 1 for an event, 0 otherwise, shape (len(X),).
    adaptation, prior_strength, intercept_prior_ratio : as :class:`ZeroShotClassifier`.
    labels : the user's (non-event, event) labels, for messages.
    warn : raise :class:`~ragim.errors.AdaptationWarning` for what the report flags.
    design : ``design_matrix(prior.kind, prior.schema, X)`` when the caller has it already,
        shape (len(X), n_params - 1); it is used instead of recomputing it (an evaluation
        adapting to many draws of one task's rows computes the task's design once).

    Returns
    -------
    (params, report): the adapted parameters (``metadata``: ``source`` "adapted" unless the
    zero-shot model was kept, ``adaptation`` (the candidate used), ``k_shot``,
    ``prior_strength``, ``prior_source``; the prior's provenance and coverage) and the report
    of :func:`ragim.adaptation.adapt`, plus ``policy``: with ``adaptation="auto"``, the entry of
    the prior's ``metadata["adaptation_policy"]`` (validated in the index by the generator,
    :mod:`ragim.adaptation_policy`) that set the candidate to prefer and the evidence margin for
    this many rows, or None (the evidence alone chose), and ``policy_note``: why there was no
    entry, or what it said and whether it was followed. An adapted model carries no policy
    (it was validated for the generated one): adapting it again, the evidence alone chooses.
    ``std`` and ``correlation``: the candidate's posterior SDs and correlations: the Laplace
    fit's for ``"prior"`` and ``"map"``; for ``"intercept"`` and ``"recalibrate"``, which keep
    the generated terms (times one scale ``b``), the prior's SDs combined with the fit's (a
    term's SD is never below ``b`` times its generated SD; none when the prior has none,
    :func:`ragim.adaptation.recalibration`); the prior's own for ``"zero-shot"``.

    Raises
    ------
    ValidationError
        When the rows give non-finite features, ``design`` has the wrong shape,
        ``adaptation`` is unknown or ``y01`` is a pandas Series whose index holds ``X``'s
        row labels in another order (:func:`ragim.checks.check_aligned_labels`).

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"age": np.linspace(40, 80, 30)})
    >>> schema = FeatureSchema.infer(X).fit(X)
    >>> prior = ModelParams.from_dict("logistic", schema, {"intercept": -2.0, "age": 1.0})
    >>> params, report = adapt_prior(prior, X, (np.arange(30) % 3 != 0).astype(float))
    >>> report["chosen"], bool(params.intercept > -2.0)   # far more events than the prior expects
    ('intercept', True)
    """
    check_aligned_labels(X, y01)
    if design is None:
        D = design_matrix(prior.kind, prior.schema, X)
    else:
        D = np.asarray(design, dtype=float)
        if D.shape != (len(X), len(prior.vector) - 1):
            raise ValidationError(
                f"design has shape {D.shape} but X has {len(X)} rows and the model "
                f"{len(prior.vector) - 1} terms; pass design_matrix(prior.kind, prior.schema, X)"
            )
    if not np.all(np.isfinite(D)):
        raise ValidationError("X contains values that could not be turned into finite features")
    entry, why = None, "adaptation was asked for by name"
    if adaptation == "auto":
        policy = AdaptationPolicy.from_dict(
            {"entries": prior.metadata.get("adaptation_policy", [])}
        )
        entry = policy.for_k(len(D))
        if not policy.entries:
            why = "the model carries no adaptation policy validated in an index"
        elif entry is None:
            why = (
                f"{len(D)} rows is beyond the largest k the policy was validated at "
                f"({policy.entries[-1]['k']})"
            )
    cand, report = adapt(
        D,
        np.asarray(y01, dtype=float),
        prior.vector,
        prior.names,
        adaptation=adaptation,
        prior_strength=prior_strength,
        intercept_ratio=intercept_prior_ratio,
        labels=labels,
        warn=False,
        prior_std=prior.std,
        prior_correlation=prior.correlation,
        margin=EVIDENCE_MARGIN if entry is None else entry["margin"],
        prefer=None if entry is None else entry["prefer"],
    )
    report["policy"] = entry
    report["policy_note"] = (
        why
        if entry is None
        else f"the policy validated in the index for k = {entry['k']} says {entry['option']!r}"
        + (f", not followed: {report['prefer_ignored']}" if report["prefer_ignored"] else "")
    )
    if warn:
        for msg in report["warnings"]:
            warnings.warn(msg, AdaptationWarning, stacklevel=user_stacklevel())
    # the candidate's SDs and correlations (the Laplace fits' own; the intercept shift's and
    # the recalibration's combine the prior's with the fit's); the prior's where it has none
    # (zero-shot, or a shift or recalibration of a model without SDs, which has none either)
    std, corr = cand.std, cand.correlation
    if cand.std is None:
        std, corr = prior.std, prior.correlation
    params = prior.replace(
        vector=cand.theta,
        std=std,
        correlation=corr,
        metadata={
            "source": "adapted"
            if cand.name != "zero-shot"
            else prior.metadata.get("source", "generated"),
            "adaptation": cand.name,
            "k_shot": int(len(D)),
            "prior_strength": cand.detail.get("prior_strength"),
            "prior_source": prior.metadata.get("source"),
            # the policy was validated for the generated model, not for one adapted already
            **({} if cand.name == "zero-shot" else {"adaptation_policy": []}),
            **_still_constant(prior, D, cand.name),
        },
    )
    return params, report


def _still_constant(prior: ModelParams, D: np.ndarray, how: str) -> dict:
    """The prior's ``constant_terms`` (terms its fitted rows never varied) that the adaptation
    rows ``D`` do not vary either, as metadata: a term the new rows move is estimated now.
    Zero-shot and intercept-only adaptation move no term, so the record stands."""
    const = prior.metadata.get("constant_terms")
    if not const or how in ("zero-shot", "intercept"):
        return {}
    names = prior.names[1:]
    now = constant_terms(names, D) if len(D) else {}
    return {"constant_terms": {t: v for t, v in const.items() if now.get(t) == v}}


class ZeroShotClassifier(BinaryClassifierTags, ClassifierMixin, BaseEstimator):
    """Zero-shot (no labels) or few-shot (k labels) interpretable classifier; see module docstring.

    Parameters
    ----------
    index : a :class:`~ragim.TaskIndex`, or None (prior centred at zero).
    generator : a fitted generator (``StatisticalGenerator``, ``AttentionGenerator``,
        ``LMGenerator``); None uses the default, a
        :class:`~ragim.generate.statistical.StatisticalGenerator` fitted on the index once (or,
        for an index without task rows, the similarity-weighted neighbour mean, with a warning).
    description : the target task's clinical description (needed with an index).
    k : neighbours the generator retrieves (None: the generator's default, else 10). The
        default :class:`~ragim.generate.statistical.StatisticalGenerator` learns from every
        indexed task, so for it ``k`` changes no coefficient, only how many tasks
        ``provenance`` lists (tuning it, as in ``GridSearchCV``, compares identical models);
        the attention and LM generators, and the neighbour mean, use the ``k`` nearest tasks.
    adaptation : "auto" (the evidence chooses among "zero-shot", "intercept", "recalibrate"
        and "map"; the zero-shot model when it cannot tell them apart), one of those names, or
        "prior" (every coefficient under the generator's own SDs).
    prior_strength : for "map": "evidence", "cv", or a positive number (lambda).
    intercept_prior_ratio : the intercept's prior precision relative to the coefficients' ("map").
    exclude : task ids (a list, tuple or set) or a predicate excluded from retrieval (see
        :meth:`TaskIndex.search`). A one-shot iterator (a generator expression, ``iter(...)``)
        is refused at :meth:`fit`: the first fit would use it up, and every later one (each
        cross-validation fold, ``GridSearchCV``, a refit) would silently exclude nothing.
    pos_label : the label that marks the event. With an index it is needed whenever the
        labels are not 0/1 or true/false (``"yes"``/``"no"``, ``1``/``2``), because the
        generated model predicts the event: a ward that labels only its events ``"yes"``
        must say so, or :meth:`fit` raises. scikit-learn's ``cross_val_predict`` with
        ``method="predict_proba"`` passes ``y`` to ``fit`` re-coded as 0, 1 in sorted order
        (``"case"``, ``"control"`` -> 0, 1: the event would be ``"control"``); give it ``y`` as
        0/1 with 1 = the event.

    Attributes
    ----------
    classes_ : the two labels, sorted as ``np.unique(y)`` sorts them (scikit-learn's order,
        whichever is the event): ``predict_proba(X)[:, i]`` is the probability of
        ``classes_[i]`` and ``decision_function`` the log-odds of ``classes_[1]``, so
        scikit-learn's scorers (``"roc_auc"``, ``"neg_log_loss"``, ...) read them right.
        With labels ``"case"``/``"control"`` and ``pos_label="case"``, ``classes_`` is
        ``["case", "control"]`` and the event's probability is column 0.
    event_label_ : the label that marks the event (``pos_label``, ``fit``'s ``classes[1]``, or
        1 / true); its probability is ``predict_proba(X)[:, list(classes_).index(event_label_)]``
        and its log-odds ``params_.log_odds(X)`` (X a DataFrame of the schema's columns).
    params_ : the fitted :class:`~ragim.ModelParams` (``metadata["coverage"]``: the index's
        coverage of the description; ``metadata["adaptation"]``: the candidate used).
    prior_params_ : the generated (zero-shot) parameters.
    adaptation_report_ : None after a zero-shot fit; otherwise what the adaptation did
        (:func:`ragim.adaptation.adapt`): the candidate chosen, each candidate's log evidence,
        the intercept shift, the log-odds scale, the coefficients moved across zero, what was
        done with rows of one class, and the warnings raised.
    coverage_ : the index's coverage of the description (:class:`ragim.domain.Coverage`), or
        None without an index.
    prior_strength_ : the MAP prior precision used, or None.
    n_features_in_ : the number of the schema's features.
    feature_names_in_ : the schema's feature names (when fitted on a DataFrame, or zero-shot
        with no rows). A DataFrame is always read by column name, in any order; an array's
        columns are read in this order, with scikit-learn's warning that X has no feature
        names.

    Missing values are NaN (or None) in a DataFrame and NaN in an array; the schema handles
    both alike (a missing-value term, or the training median where the model has none).
    """

    _parameter_constraints = {
        "index": "no_validation",
        "generator": "no_validation",
        "description": [None, str],
        "k": [None, Interval(Integral, 1, None, closed="left")],
        "prior_strength": [
            StrOptions({"evidence", "cv"}),
            Interval(Real, 0, None, closed="neither"),
        ],
        "intercept_prior_ratio": [Interval(Real, 0, None, closed="neither")],
        "adaptation": [StrOptions({"auto", *ORDER})],
        "exclude": "no_validation",
        "pos_label": "no_validation",
    }

    def __init__(
        self,
        index=None,
        generator=None,
        description=None,
        k=None,
        adaptation="auto",
        prior_strength="evidence",
        intercept_prior_ratio=0.1,
        exclude=None,
        pos_label=None,
    ):
        self.index = index
        self.generator = generator
        self.description = description
        self.k = k
        self.adaptation = adaptation
        self.prior_strength = prior_strength
        self.intercept_prior_ratio = intercept_prior_ratio
        self.exclude = exclude
        self.pos_label = pos_label

    def __sklearn_clone__(self):
        # the index and generator are shared, read-only resources: never deep-copy them
        return type(self)(**self.get_params(deep=False))

    # ------------------------------------------------------------------ helpers
    def _as_frame(self, X, schema: FeatureSchema | None, *, reset: bool) -> pd.DataFrame:
        """X as a DataFrame: a DataFrame's columns are matched by name (in any order) later, by
        the schema; an array's columns are the schema's features in order (``feature_names_in_``
        when fitted on a DataFrame, with scikit-learn's warning). NaN marks a missing value
        in an array as in a DataFrame; the schema handles it."""
        if isinstance(X, pd.DataFrame):
            return X.set_axis([str(c) for c in X.columns], axis=1)
        if isinstance(X, pd.Series):  # one patient's row (df.iloc[i]), or one column
            raise ValidationError(
                f"X is a pandas Series of {len(X)} value(s); X must be a table of rows: for "
                "one patient pass a one-row DataFrame (df.iloc[[i]], or series.to_frame().T)"
            )
        try:
            arr = validate_data(
                self, X, reset=reset, dtype="numeric", ensure_all_finite="allow-nan"
            )
        except ValueError as exc:
            if "convert string" in str(exc):  # text categories: the schema reads them by name
                raise ValidationError(
                    f"X is an array holding text ({str(exc).split(': ', 1)[-1]}); an array must "
                    "hold numbers only: pass a DataFrame with the schema's columns"
                    + (f" {list(schema.names)}" if schema is not None else "")
                    + " for text categories"
                ) from exc
            raise ValidationError(str(exc)) from exc
        names = schema.names if schema is not None else [f"x{j}" for j in range(arr.shape[1])]
        if len(names) != arr.shape[1]:
            raise ValidationError(
                f"X has {arr.shape[1]} columns but the schema has {len(names)} features: {names}"
            )
        return pd.DataFrame(arr, columns=names)

    def _prior(self, X_frame: pd.DataFrame | None) -> ModelParams:
        if self.index is None:
            if X_frame is None:
                raise ValidationError("without an index, fit() needs labelled rows X and y")
            schema = FeatureSchema.infer(X_frame).fit(X_frame)
            return ModelParams.zeros("logistic", schema, metadata={"source": "zero-prior"})
        if not self.description or not str(self.description).strip():
            raise ValidationError(
                "ZeroShotClassifier needs a task description when an index is given"
            )
        generator = self.generator
        if generator is None:
            from ragim.generate.statistical import default_generator

            generator = default_generator(self.index)
        if generator is not None:
            return generator.generate_params(
                self.description, self.index, k=self.k, exclude=self.exclude
            )
        warnings.warn(
            "the index holds no task rows, so the default (statistical) "
            "generator cannot be fitted; using the similarity-weighted neighbour mean",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
        return neighbor_mean(self.index, self.description, k=self.k or 10, exclude=self.exclude)

    # ------------------------------------------------------------------ sklearn API
    def fit(self, X=None, y=None, classes=None):
        """Generate the prior model; with labelled rows, adapt it (see the module docstring).

        ``classes``: both labels the outcome can take, ``[non-event, event]`` (as
        scikit-learn's ``partial_fit`` takes them; for 0/1 and true/false labels 1 is the
        event, so they must be stated ``[0, 1]``). It names the event without ``pos_label``,
        and is needed when the rows hold one class and their labels are not 0/1 (say a ward
        labelled only its "yes" events): ``classes_`` then holds both labels, so ``predict``
        and ``score`` speak the user's labels. Whatever order they are given in, ``classes_``
        holds them sorted (scikit-learn's order) and ``event_label_`` names the event.

        Raises
        ------
        ValidationError
            Bad rows or labels (one line naming the problem; a pandas ``y`` whose index holds
            ``X``'s row labels in another order among them, since rows pair by position:
            :func:`ragim.checks.check_aligned_labels`); rows of one class with labels
            other than 0/1 and no ``classes``; ``classes`` that are not two labels holding
            every label of ``y``, or that name another event than ``pos_label`` or than 1;
            ``exclude`` given as a one-shot iterator.

        Warns
        -----
        DomainWarning
            When the description is outside the index's domain.
        AdaptationWarning
            When the adaptation moved a coefficient across zero, scaled the log-odds by more
            than a factor 2 either way, or the rows hold one class only.
        DataWarning
            When many rows of ``X`` repeat another exactly, with the same label (copies are
            adapted on as separate patients: :func:`ragim.rows.warn_repeated_rows`); with an
            index, when the labelled rows look like another unit, hold missing-value codes or
            values far from the index's, or blanks the model has no term for
            (:meth:`FeatureSchema.warn_new_rows`, as ``predict``, :func:`ragim.validation.
            adapt_params` and ``ragim adapt`` warn; **changed:** ``fit`` adapted on them
            silently).
        """
        from ragim.domain import check
        from ragim.generate.base import Generator, check_task_index

        self._validate_params()
        if self.index is not None:
            check_task_index(self.index)
        if isinstance(self.exclude, Iterator):
            raise ValidationError(
                f"exclude is a one-shot iterator ({type(self.exclude).__name__}): the first fit "
                "would use it up and every later fit (each cross-validation fold, GridSearchCV, "
                "a refit) would exclude nothing; pass a list, tuple or set of task ids"
            )
        if self.generator is not None and not isinstance(self.generator, Generator):
            raise ValidationError(
                "generator must be a ragim Generator (e.g. StatisticalGenerator(), or a saved "
                f"one loaded with StatisticalGenerator.load(path)), got "
                f"{type(self.generator).__name__}"
            )
        check_aligned_labels(X, y)  # before the frame's index is reset
        schema = None if self.index is None else self.index.schema
        frame = None if X is None else self._as_frame(X, schema, reset=True)
        if frame is not None and len(frame) == 0:
            raise ValidationError(
                "X has no rows; pass labelled rows, or call fit() without X for the zero-shot model"
            )
        prior = self._prior(frame)
        self.prior_params_ = prior
        self.schema_ = prior.schema
        self.coverage_ = check(prior, description=self.description)
        self.adaptation_report_ = None
        if y is None:
            if X is not None and self.index is None:
                raise ValidationError(
                    f"{type(self).__name__} requires y to be passed, but the target y is None "
                    "(without an index, fit() needs labelled rows)"
                )
            self._set_classes(np.array([0, 1]))
            self.params_ = prior
            self.prior_strength_ = None
            self._set_features(X)
            return self
        if frame is None:
            raise ValidationError(
                "y was given without X; pass the labelled rows X with their labels y"
            )
        stated = classes  # the fit argument: [non-event, event]
        y, classes = check_binary_targets(
            y, len(frame), type(self).__name__, allow_single_class=self.index is not None
        )
        pos_label = self.pos_label
        if stated is not None:
            classes, pos_label = self._stated_classes(stated, classes, pos_label)
        y01, ordered = self._event_indicator(y, classes, pos_label)
        self._set_classes(ordered)
        if self.index is None and self.adaptation not in ("auto", "map"):
            raise ValidationError(
                f"adaptation {self.adaptation!r} needs a generated model; without an index the "
                "prior is centred at zero and only 'map' (or 'auto') applies"
            )
        asked = (
            self.adaptation if self.index is not None else "map"
        )  # a zero prior has nothing to recalibrate
        if len(classes) == 2:
            labels = tuple(json_label(c) for c in ordered)
        else:  # one class: the user's label of it, on the side it was read as
            labels = (
                (None, json_label(classes[0])) if y01[0] == 1 else (json_label(classes[0]), None)
            )
        from ragim.rows import warn_repeated_rows

        warn_repeated_rows(frame, y01, where="X", fix="drop the copies")
        if self.index is not None:  # another unit, codes, far values: fitted as measurements
            prior.schema.warn_new_rows(frame)
        self.params_, report = adapt_prior(
            prior,
            frame,
            y01,
            adaptation=asked,
            prior_strength=self.prior_strength,
            intercept_prior_ratio=self.intercept_prior_ratio,
            labels=labels,
            warn=False,
        )
        for msg in report["warnings"]:
            warnings.warn(
                msg + " (see adaptation_report_)", AdaptationWarning, stacklevel=user_stacklevel()
            )
        self.adaptation_report_ = report
        self.prior_strength_ = report.get("prior_strength")
        self._set_features(X)
        return self

    @staticmethod
    def _stated_classes(stated, present: np.ndarray, pos_label) -> tuple[np.ndarray, Any]:
        """``fit``'s ``classes``, checked: ``[non-event, event]``, two distinct labels holding
        every label of y. Returns them and the event label: ``classes[1]``, or for 0/1 and
        true/false labels the one that reads as 1 (stated in the other order, or against
        ``pos_label``, it is refused in one line)."""
        stated = np.asarray(stated, dtype=object).reshape(-1)
        canon = [canonical_level(c) for c in stated]
        shown = [json_label(c) for c in stated]
        if len(stated) != 2 or canon[0] == canon[1]:
            raise ValidationError(f"classes must be the outcome's two labels, got {shown}")
        missing = [c for c in present if canonical_level(c) not in canon]
        if missing:
            raise ValidationError(
                f"y holds the label {json_label(missing[0])!r}, which is not among classes {shown}"
            )
        try:
            as01 = binary_outcome(stated)
        except ValidationError:
            as01 = None
        if as01 is not None and as01.tolist() != [0, 1]:
            raise ValidationError(
                f"classes {shown} name {shown[1]!r} the event, but 0/1 and true/false labels mean "
                f"1 (true) is the event; pass classes={shown[::-1]}"
            )
        if pos_label is not None and canonical_level(pos_label) != canon[1]:
            raise ValidationError(
                f"classes {shown} are [non-event, event], so the event is {shown[1]!r}, but "
                f"pos_label is {json_label(pos_label)!r}"
            )
        # the labels as y holds them (0/1 ints stay ints: scikit-learn's metrics refuse a mix
        # of object and int labels), in the stated order
        kinds = {type(v) for v in present}
        if len(kinds) == 1 and kinds <= {int, float, bool, np.int64, np.float64, np.bool_, str}:
            as_y = {canonical_level(v): v for v in present}
            natural = np.asarray([as_y.get(c, s) for c, s in zip(canon, stated, strict=True)])
            if {canonical_level(v) for v in natural.tolist()} == set(canon):
                stated = natural
        return stated, stated[1]

    def _event_indicator(
        self, y: np.ndarray, classes: np.ndarray, pos_label
    ) -> tuple[np.ndarray, np.ndarray]:
        """(1.0 where a label is the event, the two labels as ``[non-event, event]``).

        With an index the generated prior predicts the *event*, so which label is the event
        must be unambiguous: 0/1 or true/false labels, ``pos_label`` or ``fit``'s ``classes``.
        Without an index (and without either) scikit-learn's convention holds: the label that
        sorts last.
        """
        if pos_label is not None:
            pos = canonical_level(pos_label)
            canon = np.array([canonical_level(c) for c in classes], dtype=object)
            if len(classes) == 2 and pos not in canon:
                recoded = set(canon.tolist()) == {"0", "1"} and pos not in ("0", "1")
                raise ValidationError(
                    f"pos_label {pos_label!r} is not one of the labels "
                    f"{[json_label(c) for c in classes]}"
                    + (
                        "; if these are your labels re-coded by scikit-learn "
                        "(cross_val_predict with method='predict_proba' or "
                        "'decision_function' passes y to fit as 0, 1 in sorted order: "
                        "'case', 'control' -> 0, 1), pass y as 0/1 with 1 = the event "
                        "instead, and no pos_label"
                        if recoded
                        else ""
                    )
                )
            if len(classes) == 2:
                ordered = classes[np.argsort(canon == pos, kind="stable")]
            else:  # one class, and the other label unknown: predictions speak 0/1
                try:
                    as01 = bool(binary_outcome(classes)[0])
                except ValidationError:
                    as01 = None
                if as01 is None or as01 != (canon[0] == pos):
                    only = json_label(classes[0])
                    both = (
                        f"['<the non-event label>', {only!r}]"
                        if canon[0] == pos
                        else f"[{only!r}, {json_label(pos_label)!r}]"
                    )
                    raise ValidationError(
                        f"y holds only the label {only!r}, so the other label is unknown and "
                        "predictions could not speak your labels; pass both, non-event first, "
                        f"to fit(X, y, classes={both}), or give y as 0/1 (1 = the event)"
                    )
                ordered = np.array([0, 1])
            return np.array([canonical_level(v) == pos for v in y], dtype=float), ordered
        if self.index is None:
            return (y == classes[1]).astype(float), classes
        try:
            y01 = binary_outcome(
                y,
                where="y (the generated model predicts the event, so its label must be clear)",
            ).astype(float)
        except ValidationError as exc:
            if len(classes) != 1:
                raise
            raise ValidationError(  # one class: pos_label alone cannot name the other label
                f"{exc}; rows of one class need both labels: fit(X, y, classes=[non-event, event])"
            ) from None
        if len(classes) == 1:
            return y01, np.array([0, 1])
        # which label reads as 1 (true): not always the one that sorts last ("True"/"false")
        return y01, classes[np.argsort(binary_outcome(classes), kind="stable")]

    def _set_classes(self, ordered) -> None:
        """``classes_`` sorted as ``np.unique`` sorts labels (scikit-learn's contract: column i of
        ``predict_proba`` is ``classes_[i]``), from the labels ``[non-event, event]``; the event
        is ``event_label_``, its column ``_event_column``."""
        ordered = np.asarray(ordered)
        try:
            order = np.argsort(ordered, kind="stable")
        except TypeError:  # labels numpy cannot compare (stated classes of mixed kinds)
            order = np.array(
                sorted(range(2), key=lambda i: (type(ordered[i]).__name__, str(ordered[i])))
            )
        self.classes_ = ordered[order]
        self._event_column = int(np.flatnonzero(order == 1)[0])
        self.event_label_ = ordered.tolist()[1]

    def _set_features(self, X) -> None:
        """``n_features_in_``, and ``feature_names_in_`` (the schema's names, the order an
        array's columns are read in) when ``X`` is a DataFrame, as scikit-learn sets them, or
        None (a zero-shot fit: the model's features are the index schema's names, so an array
        later gets scikit-learn's warning that it has none)."""
        self.n_features_in_ = len(self.schema_.names)
        if X is None or isinstance(X, pd.DataFrame):
            self.feature_names_in_ = np.asarray(self.schema_.names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _event_log_odds(self, X) -> np.ndarray:
        check_is_fitted(self, "params_")
        frame = self._as_frame(X, self.schema_, reset=False)
        self.schema_.warn_new_rows(frame)
        return self.params_.log_odds(frame)

    def _event_is_second(self) -> bool:
        return getattr(self, "_event_column", 1) == 1

    def decision_function(self, X):
        """Log-odds of ``classes_[1]``, shape (n_rows,): scikit-learn's convention for binary
        classifiers, which its scorers rely on. That is the event's log-odds when the event
        label sorts last (0/1, true/false, "no"/"yes") and their negation when it sorts first
        ("case"/"control", "died"/"survived", 1 = event and 2 = none); the event's own
        log-odds are always ``params_.log_odds(X)``."""
        z = self._event_log_odds(X)
        return z if self._event_is_second() else -z

    def predict_proba(self, X):
        """Class probabilities, shape (n_rows, 2), columns in ``classes_`` order (the event's
        probability in the column of ``event_label_``, wherever it sorts)."""
        p = expit(self._event_log_odds(X))
        return np.column_stack([1 - p, p] if self._event_is_second() else [p, 1 - p])

    def predict(self, X):
        """Predicted labels from ``classes_`` (``classes_[1]`` where ``decision_function`` > 0)."""
        check_is_fitted(self, "params_")
        return self.classes_[(self.decision_function(X) > 0).astype(int)]

    @property
    def model_(self):
        """The fitted parameters as a LogisticModel or GAMModel (for explanations)."""
        from ragim.models import model_from_params

        check_is_fitted(self, "params_")
        return model_from_params(self.params_)

    def explain(self, X_row=None):
        """The fitted model explained: globally, or for one patient.

        Parameters
        ----------
        X_row : None for the whole model, or one patient (a one-row DataFrame, a Series or a
            dict of the schema's features).

        Returns
        -------
        :class:`~ragim.explain.GlobalExplanation` (odds ratios with intervals, against the
        reference patient) or :class:`~ragim.explain.LocalExplanation` (the patient's
        contributions, which add up from its ``baseline`` to the event's log-odds,
        ``params_.log_odds(X_row)``, whichever column of ``predict_proba`` the event is).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        ValidationError
            When ``X_row`` is not one patient of the schema's features.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = pd.DataFrame({"age": rng.normal(60, 10, 40), "ward": rng.choice(["icu", "ed"], 40)})
        >>> clf = ZeroShotClassifier().fit(X, (X["age"] > 60).astype(int))
        >>> local = clf.explain(X.iloc[[0]])
        >>> bool(np.isclose(local.baseline + local.to_frame()["contribution"].sum(),
        ...                 clf.decision_function(X.iloc[[0]])[0]))
        True
        """
        return self.model_.explain(X_row)

    @property
    def provenance(self) -> list[dict]:
        """The indexed tasks that shaped the generated (zero-shot) model, with their weights:
        ``prior_params_.metadata["provenance"]``, the same after a few-shot adaptation; ``[]``
        without an index. For the default statistical generator, the ``k`` tasks that weigh
        most in its baseline risk.

        Examples
        --------
        >>> X = pd.DataFrame({"age": np.linspace(40, 80, 20)})
        >>> ZeroShotClassifier().fit(X, np.arange(20) % 2).provenance
        []
        """
        check_is_fitted(self, "params_")
        return list(self.prior_params_.metadata.get("provenance", []))


def neighbor_mean(index, description: str, *, k: int = 10, exclude=None) -> ModelParams:
    """The similarity-weighted mean of the top-k neighbours' parameters (weights ∝ max(sim, 0)),
    with ``metadata["coverage"]`` (:mod:`ragim.domain`)."""
    from ragim.domain import attach
    from ragim.generate.base import provenance_records
    from ragim.index import normalize_exclude

    exclude = normalize_exclude(exclude)  # read twice: by the search and by attach()
    hits = index.search(description, k, exclude=exclude)
    if not hits:  # search returns every eligible task up to k, so none are left
        raise ValidationError(
            f"no neighbours found: all {len(index)} indexed tasks are excluded"
            if len(index)
            else "no neighbours found: the index holds no tasks"
        )
    sims = np.array([max(h.score, 0.0) for h in hits])
    w = sims / sims.sum() if sims.sum() > 0 else np.full(len(hits), 1 / len(hits))
    vec = np.sum([wi * h.params.vector for wi, h in zip(w, hits, strict=True)], axis=0)
    params = ModelParams(
        index.model,
        index.schema,
        vec,
        metadata={"source": "neighbor-mean", "provenance": provenance_records(hits, w)},
    )
    return attach(params, description, index, exclude=exclude)
