"""Verifiable rewards for generated model parameters, in TRL's reward-function signature.

This module was ``ragim.rewards``; that name still works (with a ``DeprecationWarning``), and
``RewardConfig`` is now :class:`VerifiableRewardConfig` (TRL has a ``RewardConfig`` of its
own, for reward-model training).

Every reward is a plain function ``(prompts, completions, **columns) -> list[float]``
(one float per completion), so it plugs straight into
``trl.GRPOTrainer(reward_funcs=[...])``. TRL calls it as
``func(prompts=..., completions=..., completion_ids=..., trainer_state=..., **columns)``
where every dataset column arrives as a list aligned with ``completions``; unknown
keyword arguments are accepted and ignored.

Completions are either plain strings or conversational message lists
(``[{"role": "assistant", "content": "..."}]``; the last message's content is used).
The text must be exactly an answer of the answer codec (:mod:`ragim.lm.answer`) in the
generator's answer format (``answer_format``: ``"json"``, the object of
:func:`~ragim.lm.answer.parse_json_numbers`, or ``"compact"``, the values alone in key order;
whitespace around it is allowed): the keys of ``param_names`` in order, finite numbers within
``[-max_abs, max_abs]``. Anything else is *malformed*: it never raises, it gets a fixed low
reward (``DEFAULT_FLOOR`` for the log-likelihood, 0.5 for AUROC, 0 otherwise).

Dataset columns
---------------
``param_names`` : list[str]
    The JSON keys in order, ``param_names(kind, schema)``: ``"intercept"`` first, then
    one name per column of the held-out design matrix.
``heldout`` : dict
    Held-out rows of the task the prompt came from, from :func:`encode_heldout`:
    ``{"kind": str, "D": list of rows (design matrix, floats), "y": list of 0/1}``.
    It survives ``datasets.Dataset`` and JSON; a JSON string of it is accepted too.
``max_abs`` : float, optional
    The allowed range of every value (default 20, as in constrained decoding).
``answer_format`` : str, optional
    The answer format's name, a key of :data:`~ragim.lm.answer.ANSWER_FORMATS` (default
    ``"json"``); ``LMConfig.answer_format`` of the generator that wrote the completions.
``prior`` : list[float] or None, optional
    For a generator with ``LMConfig(residual=True)``, whose answers are changes from the
    statistical prior in its prompt: that prior's values in ``param_names`` order, added to
    the parsed values before every reward scores them (``None``: the answer is the
    parameters themselves). :func:`ragim.train.build_sft_dataset` and the GRPO dataset fill it
    in residual mode.
``sign_constraints`` : dict, optional
    Term -> expected sign (+1 / -1), read by :func:`sign_agreement`; ``None`` values
    (what ``datasets`` stores for keys absent from a row) mean "no constraint".

Called directly, a single ``param_names`` list, ``heldout`` dict, ``max_abs`` number,
``answer_format`` name or ``prior`` list is broadcast to every completion.

Examples
--------
>>> names = ["intercept", "x"]
>>> heldout = {"kind": "logistic", "D": [[-1.0], [1.0]], "y": [0, 1]}
>>> good, bad = '{"intercept": 0, "x": 2}', '{"x": 2}'
>>> [round(r, 3)
...  for r in held_out_log_likelihood(None, [good, bad], param_names=names, heldout=heldout)]
[-0.127, -20.0]
>>> parse_validity(None, [good, bad], param_names=names)
[1.0, 0.0]
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from ragim.checks import check_number
from ragim.errors import DataWarning, ValidationError, user_stacklevel
from ragim.lm.answer import ANSWER_FORMATS, completion_text
from ragim.lm.answer import answer_format as make_answer_format
from ragim.metrics import EPS, auroc, clipped_log_loss
from ragim.params import ModelParams, design_matrix

DEFAULT_FLOOR = -20.0
"""Log-likelihood reward of a malformed completion. Valid answers score at least
``log(1 - (1 - EPS)) ≈ log(1e-7) ≈ -16.12`` (probabilities are clipped to
``[EPS, 1 - EPS]`` by :func:`ragim.metrics.clipped_log_loss`), so any valid answer beats any
malformed one."""
DEFAULT_MAX_ABS = 20.0
DEFAULT_SPARSITY_THRESHOLD = 0.05
MIN_VALID_LOG_LIKELIHOOD = math.log(1.0 - (1.0 - EPS))
"""The lowest log-likelihood a valid answer can score (every row predicted with probability
``1 - EPS`` for the wrong class)."""

RewardFunc = Callable[..., list]


# --------------------------------------------------------------------------- completions
def parse_completion(
    completion: Any,
    param_names: Sequence[str],
    *,
    max_abs: float | None = None,
    answer_format: str | None = None,
) -> dict[str, float] | None:
    """The values of a completion (keys in order), or ``None`` when it is malformed.

    ``answer_format`` names the codec (:data:`~ragim.lm.answer.ANSWER_FORMATS`; None means
    ``"json"``); an unknown name raises ValidationError.

    >>> parse_completion('{"intercept": 0.5, "x": -1}', ["intercept", "x"])
    {'intercept': 0.5, 'x': -1.0}
    >>> parse_completion("[0.5, -1]", ["intercept", "x"], answer_format="compact")
    {'intercept': 0.5, 'x': -1.0}
    >>> parse_completion('{"intercept": NaN, "x": -1}', ["intercept", "x"]) is None
    True
    """
    limit = DEFAULT_MAX_ABS if max_abs is None else max_abs
    codec = make_answer_format(
        list(param_names), name="json" if answer_format is None else answer_format, max_abs=limit
    )
    text = completion_text(completion)
    if text is None:
        return None
    return codec.parse_or_none(text.strip())


# --------------------------------------------------------------------------- held-out rows
def encode_heldout(params_kind: str, schema, X, y) -> dict[str, Any]:
    """Held-out rows as a JSON- and ``datasets``-safe dict ``{"kind", "D", "y"}``.

    ``D`` is :func:`ragim.params.design_matrix` (rows as lists of floats), so that
    ``logit = intercept + D @ terms`` for parameters in the order of
    ``param_names(params_kind, schema)``; ``y`` is a list of 0/1 ints.

    >>> import pandas as pd
    >>> from ragim.schema import FeatureSchema
    >>> X = pd.DataFrame({"age": [40.0, 60.0]})
    >>> enc = encode_heldout("logistic", FeatureSchema.infer(X).fit(X), X, [0, 1])
    >>> enc["kind"], [[round(v, 3) for v in row] for row in enc["D"]], enc["y"]
    ('logistic', [[-1.0], [1.0]], [0, 1])
    """
    D = np.asarray(design_matrix(params_kind, schema, X), dtype=np.float64)
    obj = {"kind": str(params_kind), "D": D.tolist(), "y": np.asarray(y).reshape(-1).tolist()}
    decode_heldout(obj)  # validate (finite D, 0/1 y of matching length) before anything is stored
    obj["y"] = [int(v) for v in obj["y"]]
    return obj


def decode_heldout(obj: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(D, y)`` arrays from :func:`encode_heldout`'s dict (or its JSON string).

    >>> D, y = decode_heldout({"kind": "logistic", "D": [[0.5, 1.0]], "y": [1]})
    >>> D.shape, y.tolist()
    ((1, 2), [1.0])
    """
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"heldout is a string but not valid JSON ({exc})") from None
    if not isinstance(obj, Mapping) or "D" not in obj or "y" not in obj:
        raise ValidationError(
            "heldout must be a dict with keys 'D' (design-matrix rows) and 'y' (0/1 labels); "
            "build it with ragim.train.rewards.encode_heldout(kind, schema, X, y)"
        )
    try:
        y = np.asarray(obj["y"], dtype=np.float64).reshape(-1)
        rows = list(obj["D"])
        D = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1) if rows else np.zeros((0, 0))
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"heldout 'D' must be a rectangular list of number rows and 'y' a list of 0/1 ({exc})"
        ) from None
    if y.size == 0:
        raise ValidationError("heldout has no rows; a task needs held-out rows to be rewarded")
    if D.shape[0] != y.size:
        raise ValidationError(
            f"heldout 'D' has {D.shape[0]} rows but 'y' has {y.size} labels; they must match"
        )
    if not np.all(np.isfinite(D)):
        raise ValidationError(
            "heldout 'D' contains non-finite values; encode rows with encode_heldout"
        )
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValidationError("heldout 'y' must contain only 0/1 labels")
    return D, y


# --------------------------------------------------------------------------- scoring core
def _mean_log_likelihood(y: np.ndarray, z: np.ndarray) -> float:
    """Mean Bernoulli log-likelihood of logits ``z``: ``-clipped_log_loss`` of ``ragim.metrics``."""
    return -clipped_log_loss(y, expit(z))


def _auroc(y: np.ndarray, z: np.ndarray, undefined: float = 0.5) -> float:
    """:func:`ragim.metrics.auroc` of the logits, ``undefined`` when the rows hold one class."""
    value = auroc(y, z)
    return undefined if math.isnan(value) else value


def score_params(params: ModelParams, X, y) -> dict[str, float]:
    """Evaluate parameters on labelled rows as the rewards do (:meth:`ModelParams.log_odds`,
    then :func:`ragim.metrics.clipped_log_loss` and :func:`ragim.metrics.auroc`).

    Returns ``log_likelihood`` (mean per row; ``= -log_loss`` of ``ragim.metrics``),
    ``auroc`` (NaN with one class) and ``n_rows``. Raises ValidationError when ``y`` is not
    one 0/1 label per row of ``X``.

    >>> import pandas as pd
    >>> from ragim.schema import FeatureSchema
    >>> X = pd.DataFrame({"x": [-1.0, 1.0]})
    >>> p = ModelParams.from_dict("logistic", FeatureSchema.infer(X).fit(X),
    ...                           {"intercept": 0.0, "x": 2.0})
    >>> s = score_params(p, X, [0, 1])
    >>> round(s["log_likelihood"], 3), s["auroc"], s["n_rows"]
    (-0.127, 1.0, 2)
    """
    z = params.log_odds(X)
    yy = np.asarray(y, dtype=float).reshape(-1)
    return {
        "log_likelihood": _mean_log_likelihood(yy, z),
        "auroc": auroc(yy, z),
        "n_rows": int(yy.size),
    }


# --------------------------------------------------------------------------- columns
def _is_names(v: Any) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, str) and all(isinstance(s, str) for s in v)


def _is_numbers(v: Any) -> bool:
    """None, or a list of finite numbers (one ``prior`` entry)."""
    if v is None:
        return True
    return (
        isinstance(v, Sequence)
        and not isinstance(v, str)
        and all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v
        )
    )


def _per_completion(value: Any, n: int, name: str, single: Callable[[Any], bool]) -> list:
    if single(value):
        return [value] * n
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValidationError(
            f"{name} must be one value or a list with one value per completion, "
            f"got {type(value).__name__}"
        )
    if len(value) != n:
        raise ValidationError(
            f"{name} has {len(value)} values for {n} completions; pass one per completion"
        )
    return list(value)


#: the dataset columns and options some reward reads; an unknown keyword close to one of them
#: that is absent is most likely a misspelling of it (warned once per call site)
READ_COLUMNS = (
    "param_names",
    "max_abs",
    "answer_format",
    "prior",
    "heldout",
    "sign_constraints",
    "sparsity_threshold",
    "floor",
    "strict",
)


def _warn_near_misses(columns: Mapping[str, Any]) -> None:
    import difflib

    for key in columns:
        if key in READ_COLUMNS:
            continue
        close = difflib.get_close_matches(str(key), READ_COLUMNS, n=1, cutoff=0.8)
        if close and close[0] not in columns:
            warnings.warn(
                f"the rewards do not read {key!r}; did you mean {close[0]!r}? (unknown "
                "columns are ignored, so its default is used)",
                DataWarning,
                stacklevel=user_stacklevel(),
            )


def _parse_all(
    completions, columns: Mapping[str, Any]
) -> tuple[list[list[str]], list[np.ndarray | None]]:
    """The keys and values (None: malformed) of every completion, read with the dataset
    ``columns`` every reward reads: ``param_names``, ``max_abs``, ``answer_format`` and
    ``prior`` (added to the values; a misspelt column or option is warned about)."""
    _warn_near_misses(columns)
    param_names, max_abs, answer_format, prior = (
        columns.get(name) for name in ("param_names", "max_abs", "answer_format", "prior")
    )
    if isinstance(completions, str) or not isinstance(completions, Sequence):
        raise ValidationError(
            "completions must be a list (one string or message list per completion)"
        )
    n = len(completions)
    if param_names is None:
        raise ValidationError(
            "these rewards need a 'param_names' dataset column (the JSON keys in order)"
        )
    names = _per_completion(param_names, n, "param_names", _is_names)
    limits = _per_completion(
        max_abs, n, "max_abs", lambda v: v is None or isinstance(v, int | float)
    )
    formats = _per_completion(
        answer_format, n, "answer_format", lambda v: v is None or isinstance(v, str)
    )
    priors = _per_completion(prior, n, "prior", _is_numbers)
    bad = sorted({f for f in formats if f is not None and f not in ANSWER_FORMATS}, key=str)
    if bad:
        raise ValidationError(
            f"unknown answer_format {bad[0]!r}; use one of {sorted(ANSWER_FORMATS)} "
            "(LMConfig.answer_format of the generator that wrote the completions)"
        )
    values = []
    for c, keys, m, f, base in zip(completions, names, limits, formats, priors, strict=True):
        if not _is_names(keys) or not keys:
            raise ValidationError(f"param_names must be a non-empty list of strings, got {keys!r}")
        if not _is_numbers(base) or (base is not None and len(base) != len(keys)):
            raise ValidationError(
                f"prior must be None or one number per name of param_names ({len(keys)}), "
                f"got {base!r}"
            )
        parsed = parse_completion(c, keys, max_abs=m, answer_format=f)
        vec = None
        if parsed is not None:
            vec = np.fromiter(parsed.values(), dtype=np.float64, count=len(keys))
            if base is not None:  # a residual answer: the change from the prior
                vec = vec + np.asarray(base, dtype=np.float64)
        values.append(vec)
    return [list(k) for k in names], values


def _scores(completions, columns: Mapping[str, Any], score, malformed: float) -> list[float]:
    """``score(y, logits)`` of every completion on its ``heldout`` rows (a column, as are those
    of :func:`_parse_all`); ``malformed`` for a malformed one."""
    names, values = _parse_all(completions, columns)
    heldout = columns.get("heldout")
    if heldout is None:
        raise ValidationError(
            "this reward needs a 'heldout' dataset column; build it with encode_heldout"
        )
    rows = _per_completion(heldout, len(names), "heldout", lambda v: isinstance(v, Mapping | str))
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    out = []
    for keys, vec, h in zip(names, values, rows, strict=True):
        if id(h) not in cache:
            cache[id(h)] = decode_heldout(h)
        D, y = cache[id(h)]
        if keys[0] != "intercept" or D.shape[1] != len(keys) - 1:
            raise ValidationError(
                f"param_names ({len(keys)} names, first {keys[0]!r}) do not fit "
                f"heldout 'D' with {D.shape[1]} columns; expected ['intercept', "
                "one name per column] from param_names(kind, schema)"
            )
        out.append(malformed if vec is None else score(y, vec[0] + D @ vec[1:]))
    return out


# --------------------------------------------------------------------------- rewards
def held_out_log_likelihood(
    prompts, completions, *, floor: float = DEFAULT_FLOOR, **columns
) -> list[float]:
    """Mean per-row log-likelihood of the generated model on the task's held-out rows.

    ``(1/n) Σ y log p + (1 - y) log(1 - p)`` with ``p = σ(intercept + D @ terms)``
    clipped to ``[1e-7, 1 - 1e-7]``: a strictly proper scoring rule in ``[-16.12, 0)``.
    Malformed completions get ``floor`` (default -20, below every valid score). Reads the
    columns ``param_names``, ``heldout``, ``max_abs``, ``answer_format`` and ``prior``.

    >>> h = {"D": [[-1.0], [1.0]], "y": [0, 1]}
    >>> r = held_out_log_likelihood(
    ...     None, ['{"intercept": 0, "x": 0}', '{"intercept": 0, "x": 3}', "oops"],
    ...     param_names=["intercept", "x"], heldout=h)
    >>> [round(v, 3) for v in r]
    [-0.693, -0.049, -20.0]
    """
    return _scores(completions, columns, _mean_log_likelihood, float(floor))


def auroc_reward(prompts, completions, **columns) -> list[float]:
    """Held-out AUROC of the generated model; 0.5 when malformed or when the rows hold one class.

    Reads the columns ``param_names``, ``heldout``, ``max_abs``, ``answer_format`` and ``prior``.

    >>> h = {"D": [[-1.0], [0.0], [1.0]], "y": [0, 1, 1]}
    >>> auroc_reward(None, ['{"intercept": 0, "x": 1}', '{"intercept": 0, "x": -1}', "{}"],
    ...              param_names=["intercept", "x"], heldout=h)
    [1.0, 0.0, 0.5]
    """
    return _scores(completions, columns, _auroc, 0.5)


def parse_validity(prompts, completions, **columns) -> list[float]:
    """1.0 if the completion parses with exactly the keys of ``param_names`` (in order) and
    every value finite within ``[-max_abs, max_abs]``, else 0.0.

    Reads the columns ``param_names``, ``max_abs``, ``answer_format`` and ``prior``.

    >>> parse_validity(None, ['{"intercept": 1, "x": 2}', '{"intercept": 1, "x": 99}',
    ...                       [{"role": "assistant", "content": '{"intercept": 1, "x": 2}'}]],
    ...                param_names=["intercept", "x"])
    [1.0, 0.0, 1.0]
    """
    _, values = _parse_all(completions, columns)
    return [0.0 if v is None else 1.0 for v in values]


def sparsity_reward(
    prompts, completions, *, sparsity_threshold: float = DEFAULT_SPARSITY_THRESHOLD, **columns
) -> list[float]:
    """Fraction of coefficients (all but the intercept) with ``|coef| < sparsity_threshold``;
    0 for malformed completions, 1 for an intercept-only model.

    Reads the columns ``param_names``, ``max_abs``, ``answer_format`` and ``prior``.

    >>> sparsity_reward(None, ['{"intercept": 3, "a": 0.01, "b": -2}', "[]"],
    ...                 param_names=["intercept", "a", "b"])
    [0.5, 0.0]
    """
    names, values = _parse_all(completions, columns)
    thr = _per_completion(
        sparsity_threshold, len(names), "sparsity_threshold", lambda v: isinstance(v, int | float)
    )
    out = []
    for keys, vec, t in zip(names, values, thr, strict=True):
        if vec is None:
            out.append(0.0)
            continue
        coefs = np.array([v for k, v in zip(keys, vec, strict=True) if k != "intercept"])
        out.append(1.0 if coefs.size == 0 else float(np.mean(np.abs(coefs) < float(t))))
    return out


# --------------------------------------------------------------------------- sign constraints
_SIGN_TEXT = {"1": 1, "+1": 1, "+": 1, "1.0": 1, "+1.0": 1, "-1": -1, "-": -1, "-1.0": -1}


def _check_sign_constraints(mapping: Any, source: str = "sign constraints") -> dict[str, int]:
    if not isinstance(mapping, Mapping):
        raise ValidationError(
            f"{source} must map term -> sign (+1 or -1), got {type(mapping).__name__}; "
            'for example {"age": 1, "thalch": -1}'
        )
    out, problems = {}, []
    for term, sign in mapping.items():
        if sign is None:  # datasets fills keys absent from a row with None
            continue
        if isinstance(sign, str):
            s = _SIGN_TEXT.get(sign.strip())
        elif isinstance(sign, int | float) and not isinstance(sign, bool) and sign in (1, -1):
            s = int(sign)
        else:
            s = None
        if not isinstance(term, str) or not term:
            problems.append(f"term {term!r} must be a non-empty string")
        elif s is None:
            problems.append(f"term {term!r} has sign {sign!r}; use 1 (or '+') or -1 (or '-')")
        else:
            out[term] = s
    if problems:
        raise ValidationError(f"{source} are invalid:", problems)
    return out


def load_sign_constraints(path: str | Path) -> dict[str, int]:
    """Read term -> expected sign from a JSON object (``{"age": 1, "thalch": -1}``) or a
    CSV file with a header and columns ``term,sign``.

    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "signs.csv")
    >>> _ = open(f, "w").write("term,sign\\nage,1\\nthalch,-1\\n")
    >>> load_sign_constraints(f)
    {'age': 1, 'thalch': -1}
    """
    p = Path(path)
    if not p.is_file():
        raise ValidationError(
            f"sign constraints file {str(p)!r} does not exist; pass a .json or .csv file"
        )
    suffix = p.suffix.lower()
    text = p.read_text(encoding="utf-8-sig")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"sign constraints file {str(p)!r} is not valid JSON ({exc}); "
                'write an object like {"age": 1, "thalch": -1}'
            ) from None
        return _check_sign_constraints(data, f"sign constraints in {str(p)!r}")
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        cols = [c.strip() for c in (reader.fieldnames or [])]
        if not {"term", "sign"} <= set(cols):
            raise ValidationError(
                f"sign constraints file {str(p)!r} needs a header with columns 'term,sign', "
                f"got {cols}"
            )
        data, dups = {}, []
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items()}
            term = (row.get("term") or "").strip()
            if term in data:
                dups.append(term)
            data[term] = row.get("sign") or ""
        if dups:
            raise ValidationError(
                f"sign constraints file {str(p)!r} lists terms more than once: {dups}"
            )
        return _check_sign_constraints(data, f"sign constraints in {str(p)!r}")
    raise ValidationError(f"sign constraints file {str(p)!r} must end in .json or .csv")


def _sign_scores(names, values, constraints_per_row, strict: bool, warned: set[str]) -> list[float]:
    out = []
    for keys, vec, cons in zip(names, values, constraints_per_row, strict=True):
        cons = _check_sign_constraints(cons or {})
        index = {k: i for i, k in enumerate(keys)}
        missing = sorted(set(cons) - set(index) - warned)
        if missing:
            warned.update(missing)
            warnings.warn(
                f"sign constraints on terms not among the parameters are ignored: {missing}",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        if vec is None:
            out.append(0.0)
            continue
        products = [vec[index[t]] * s for t, s in cons.items() if t in index]
        if not products:
            out.append(1.0)
            continue
        ok = [p > 0 if strict else p >= 0 for p in products]
        out.append(float(np.mean(ok)))
    return out


def sign_agreement(
    prompts, completions, *, sign_constraints=None, strict: bool = False, **columns
) -> list[float]:
    """Fraction of sign-constrained terms whose generated coefficient agrees with the expected sign.

    ``sign_constraints`` (term -> +1/-1) is a dataset column or one dict for all completions;
    :func:`make_sign_agreement` fixes it instead. A coefficient agrees when ``coef * sign >= 0``
    (a zero does not contradict the constraint, as in monotone constraints); with
    ``strict=True`` it must be ``> 0``. Terms not among ``param_names`` are ignored with a
    warning; with no applicable constraint the reward is 1. Malformed completions get 0. Reads
    the columns ``param_names``, ``max_abs``, ``answer_format`` and ``prior`` too.

    >>> sign_agreement(None, ['{"intercept": 0, "age": 0.8, "thalch": 0.3}', "nope"],
    ...                param_names=["intercept", "age", "thalch"],
    ...                sign_constraints={"age": 1, "thalch": -1})
    [0.5, 0.0]
    """
    if sign_constraints is None:
        raise ValidationError(
            "sign_agreement needs a 'sign_constraints' dataset column or keyword (term -> +1/-1); "
            "or use make_sign_agreement(constraints) / "
            "VerifiableRewardConfig(sign_constraints=path)"
        )
    names, values = _parse_all(completions, columns)
    cons = _per_completion(
        sign_constraints,
        len(names),
        "sign_constraints",
        lambda v: v is None or isinstance(v, Mapping),
    )
    return _sign_scores(names, values, cons, strict, set())


class SignAgreement:
    """:func:`sign_agreement` with fixed constraints (see :func:`make_sign_agreement`);
    picklable."""

    def __init__(self, constraints: Mapping[str, Any], *, strict: bool = False):
        self.constraints = _check_sign_constraints(constraints)
        self.strict = bool(strict)
        self.__name__ = "sign_agreement"
        self._warned: set[str] = set()

    def __call__(self, prompts, completions, **columns) -> list[float]:
        names, values = _parse_all(completions, columns)
        return _sign_scores(
            names, values, [self.constraints] * len(names), self.strict, self._warned
        )

    def __repr__(self) -> str:
        return f"SignAgreement({self.constraints!r}, strict={self.strict})"


def make_sign_agreement(
    constraints: Mapping[str, Any] | str | Path, *, strict: bool = False
) -> SignAgreement:
    """A reward function (TRL signature, ``__name__ == "sign_agreement"``) with fixed sign
    constraints, given as a mapping or a path for :func:`load_sign_constraints`.

    >>> reward = make_sign_agreement({"age": 1})
    >>> reward(prompts=None, completions=['{"intercept": 0, "age": -0.4}'],
    ...        param_names=[["intercept", "age"]])
    [0.0]
    """
    if isinstance(constraints, str | Path):
        constraints = load_sign_constraints(constraints)
    return SignAgreement(constraints, strict=strict)


# --------------------------------------------------------------------------- combination
REWARDS: dict[str, RewardFunc] = {
    "log_likelihood": held_out_log_likelihood,
    "auroc": auroc_reward,
    "validity": parse_validity,
    "sparsity": sparsity_reward,
    "sign": sign_agreement,
}


def resolve_reward(name_or_func: str | RewardFunc) -> RewardFunc:
    """A reward function from a registry name (``REWARDS``), a function name, or a callable."""
    if callable(name_or_func):
        return name_or_func
    if isinstance(name_or_func, str):
        if name_or_func in REWARDS:
            return REWARDS[name_or_func]
        for f in REWARDS.values():
            if f.__name__ == name_or_func:
                return f
    raise ValidationError(
        f"unknown reward {name_or_func!r}; use a callable or one of {sorted(REWARDS)}"
    )


class BoundReward:
    """A reward with some keyword arguments fixed (dataset columns of the same name win);
    picklable."""

    def __init__(self, func: RewardFunc, name: str | None = None, **fixed: Any):
        self.func, self.fixed = func, fixed
        self.__name__ = name or getattr(func, "__name__", type(func).__name__)

    def __call__(self, prompts, completions, **kwargs) -> list:
        return self.func(prompts, completions, **{**self.fixed, **kwargs})

    def __repr__(self) -> str:
        return f"BoundReward({self.__name__}, {self.fixed})"


class CombinedReward:
    """Weighted sum of rewards (see :func:`combine_rewards`); picklable when its parts are."""

    def __init__(self, parts: list[tuple[RewardFunc, float]], name: str = "combined_reward"):
        self.parts = parts
        self.__name__ = name

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        total: list[float | None] = [None] * len(completions)
        for func, w in self.parts:
            if w == 0:
                continue
            values = func(prompts=prompts, completions=completions, **kwargs)
            if len(values) != len(completions):
                raise ValidationError(
                    f"reward {getattr(func, '__name__', func)!r} returned {len(values)} values "
                    f"for {len(completions)} completions"
                )
            for i, v in enumerate(values):
                if v is not None and not (isinstance(v, float) and math.isnan(v)):
                    total[i] = (total[i] or 0.0) + w * float(v)
        return total

    def __repr__(self) -> str:
        return (
            "CombinedReward("
            + ", ".join(f"{w:g}*{getattr(f, '__name__', f)}" for f, w in self.parts)
            + ")"
        )


def _check_weights(weights: Mapping) -> list[tuple[Any, float]]:
    if not isinstance(weights, Mapping) or not weights:
        raise ValidationError(
            'reward weights must be a non-empty dict such as {"log_likelihood": 1.0, '
            '"validity": 0.5}'
        )
    out, problems = [], []
    for key, w in weights.items():
        try:
            fw = float(w)
        except (TypeError, ValueError):
            fw = math.nan
        if isinstance(w, bool) or not math.isfinite(fw):
            problems.append(f"weight of {key!r} must be a finite number, got {w!r}")
        else:
            out.append((key, fw))
    if problems:
        raise ValidationError("invalid reward weights:", problems)
    return out


def combine_rewards(weights: Mapping[str | RewardFunc, float]) -> CombinedReward:
    """One reward function: the weighted sum of rewards given by registry name or callable.

    Extra keyword arguments (dataset columns) are passed to every part; a ``None`` (or NaN)
    from a part is skipped, as TRL's ``nansum`` does.

    >>> f = combine_rewards({"validity": 1.0, "sparsity": 2.0})
    >>> f(None, ['{"intercept": 1, "x": 0}', "bad"], param_names=["intercept", "x"])
    [3.0, 0.0]
    """
    return CombinedReward([(resolve_reward(k), w) for k, w in _check_weights(weights)])


@dataclass
class VerifiableRewardConfig:
    """Which verifiable rewards GRPO optimises, with what weights and settings.

    Formerly ``RewardConfig`` (still importable, with a ``DeprecationWarning``; renamed because
    TRL's ``RewardConfig`` configures reward-*model* training).

    >>> funcs, weights = VerifiableRewardConfig(
    ...     weights={"log_likelihood": 1.0, "validity": 0.5}).build()
    >>> [f.__name__ for f in funcs], weights
    (['held_out_log_likelihood', 'parse_validity'], [1.0, 0.5])
    """

    weights: dict[str, float] = field(
        default_factory=lambda: {"log_likelihood": 1.0},
        metadata={"help": f"reward name -> weight; names: {sorted(REWARDS)}"},
    )
    sparsity_threshold: float = field(
        default=DEFAULT_SPARSITY_THRESHOLD,
        metadata={"help": "|coef| below this counts as zero in the sparsity reward"},
    )
    sign_constraints: str | None = field(
        default=None,
        metadata={
            "help": (
                "JSON/CSV file of term -> expected sign; without it 'sign' "
                "reads a sign_constraints column"
            )
        },
    )
    floor: float = field(
        default=DEFAULT_FLOOR,
        metadata={
            "help": f"log-likelihood reward of malformed completions; must be below log(1e-7) = "
            f"{MIN_VALID_LOG_LIKELIHOOD:.2f}"
        },
    )
    max_abs: float | None = field(
        default=None,
        metadata={"help": "allowed |value| when the dataset has no max_abs column (default 20)"},
    )

    def __post_init__(self):
        pairs = _check_weights(self.weights)
        for name, _ in pairs:
            if not isinstance(name, str) or name not in REWARDS:
                raise ValidationError(
                    f"unknown reward {name!r} in VerifiableRewardConfig.weights; "
                    f"use {sorted(REWARDS)}"
                )
        negative = [f"{name}={w:g}" for name, w in pairs if w < 0]
        if negative:
            raise ValidationError(
                f"reward weights must be >= 0 (GRPO maximises the weighted sum, so a negative "
                f"weight trains against that reward), got {', '.join(negative)}; drop the sign"
            )
        if not any(w > 0 for _, w in pairs):
            raise ValidationError(
                "every reward weight is 0, so GRPO has nothing to maximise; give one reward a "
                "positive weight, e.g. log_likelihood=1"
            )
        self.weights = dict(pairs)
        self.sparsity_threshold = check_number(self.sparsity_threshold, "sparsity_threshold", gt=0)
        self.max_abs = check_number(self.max_abs, "max_abs", gt=0, allow_none=True)
        if not (isinstance(self.floor, int | float) and self.floor < MIN_VALID_LOG_LIKELIHOOD):
            raise ValidationError(
                f"floor must be below {MIN_VALID_LOG_LIKELIHOOD:.3f} (the lowest valid "
                f"log-likelihood), got {self.floor!r}; otherwise garbage can beat a valid answer"
            )

    def _func(self, name: str) -> RewardFunc:
        common = {} if self.max_abs is None else {"max_abs": self.max_abs}
        if name == "sign" and self.sign_constraints is not None:
            return BoundReward(make_sign_agreement(self.sign_constraints), **common)
        extra = {
            "log_likelihood": {"floor": self.floor},
            "sparsity": {"sparsity_threshold": self.sparsity_threshold},
        }.get(name, {})
        return BoundReward(REWARDS[name], **common, **extra)

    def build(self) -> tuple[list[RewardFunc], list[float]]:
        """``(reward_funcs, reward_weights)`` for ``GRPOTrainer(reward_funcs=...)`` and
        ``GRPOConfig(reward_weights=...)``."""
        names = list(self.weights)
        return [self._func(n) for n in names], [self.weights[n] for n in names]

    def combined(self) -> CombinedReward:
        """All weighted rewards as one function."""
        funcs, weights = self.build()
        return CombinedReward(list(zip(funcs, weights, strict=True)))


# --------------------------------------------------------------------------- ranking
def rank_candidates(
    completions: Sequence[Any],
    *,
    param_names: Sequence[str],
    heldout: Any,
    reward: RewardFunc = held_out_log_likelihood,
    **kwargs,
) -> list[int]:
    """Indices of the candidates of one prompt, best first (ties keep their order).

    Used for best-of-n selection and for building preference pairs.

    >>> rank_candidates(['{"intercept": 0, "x": 1}', "bad", '{"intercept": 0, "x": 3}'],
    ...                 param_names=["intercept", "x"], heldout={"D": [[-1.0], [1.0]], "y": [0, 1]})
    [2, 0, 1]
    """
    n = len(completions)
    scores = resolve_reward(reward)(
        prompts=[None] * n,
        completions=list(completions),
        param_names=[list(param_names)] * n,
        heldout=[heldout] * n,
        **kwargs,
    )
    keyed = [-math.inf if s is None or math.isnan(s) else float(s) for s in scores]
    return sorted(range(n), key=lambda i: -keyed[i])


def __getattr__(name: str):
    if name == "RewardConfig":
        warnings.warn(
            "ragim.train.rewards.RewardConfig is deprecated; use VerifiableRewardConfig "
            "(the same class; TRL's RewardConfig is another thing)",
            DeprecationWarning,
            stacklevel=2,
        )
        return VerifiableRewardConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_FLOOR",
    "DEFAULT_MAX_ABS",
    "DEFAULT_SPARSITY_THRESHOLD",
    "MIN_VALID_LOG_LIKELIHOOD",
    "REWARDS",
    "BoundReward",
    "CombinedReward",
    "VerifiableRewardConfig",
    "SignAgreement",
    "auroc_reward",
    "combine_rewards",
    "completion_text",
    "decode_heldout",
    "encode_heldout",
    "held_out_log_likelihood",
    "load_sign_constraints",
    "make_sign_agreement",
    "parse_completion",
    "parse_validity",
    "rank_candidates",
    "resolve_reward",
    "score_params",
    "sign_agreement",
    "sparsity_reward",
]
