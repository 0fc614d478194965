"""Argument checks of configs and trainers: scikit-learn's ``check_scalar`` with ragim's errors.

:func:`check_int` and :func:`check_number` test one value with
:func:`sklearn.utils.check_scalar` and raise a one-line
:class:`~ragim.errors.ValidationError` that names the argument, the range it must lie in and
the value it got. Booleans are never numbers here, and numbers must be finite. Both return
the value as a plain ``int`` or ``float`` (numpy scalars included), so that a config that
stores it stays JSON-safe.

:func:`check_fields` applies such checks to the fields of a config dataclass and raises one
error listing every problem (the way ``LMConfig(...)`` reports all its bad fields at once);
:func:`setting` declares such a field with its help text.

Examples
--------
>>> check_int(3, "max_steps", ge=1)
3
>>> check_number(0.2, "val_fraction", ge=0, lt=1)
0.2
>>> check_int(0, "max_steps", ge=1)
Traceback (most recent call last):
...
ragim.errors.ValidationError: max_steps must be an integer >= 1, got 0
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import field, fields
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import check_scalar

from ragim.errors import ValidationError

Bound = int | float | None


def _num(v: int | float) -> str:
    return str(int(v)) if isinstance(v, numbers.Integral) else f"{v:g}"


def _range_text(gt: Bound, ge: Bound, lt: Bound, le: Bound) -> str:
    lo, hi = (gt if ge is None else ge), (lt if le is None else le)
    if lo is not None and hi is not None:
        return f" in {'(' if ge is None else '['}{_num(lo)}, {_num(hi)}{')' if le is None else ']'}"
    if lo is not None:
        return f" {'>' if ge is None else '>='} {_num(lo)}"
    if hi is not None:
        return f" {'<' if le is None else '<='} {_num(hi)}"
    return ""


def _checked(
    value: Any,
    name: str,
    kind: type,
    noun: str,
    cast: Callable[[Any], Any],
    *,
    gt: Bound = None,
    ge: Bound = None,
    lt: Bound = None,
    le: Bound = None,
    allow_none: bool = False,
    note: str = "",
) -> Any:
    """``cast(value)`` (None stays None when allowed), or a ValidationError naming the range."""
    if value is None and allow_none:
        return None
    lo, hi = (gt if ge is None else ge), (lt if le is None else le)
    closed = {
        (True, True): "both",
        (True, False): "left",
        (False, True): "right",
        (False, False): "neither",
    }[(gt is None, lt is None)]
    if (closed == "left" and lo is None) or (closed == "right" and hi is None):
        closed = "neither"  # the side without a bound has nothing to include
    ok = not isinstance(value, bool) and isinstance(value, kind)
    if ok and isinstance(value, numbers.Real) and not math.isfinite(float(value)):
        ok = False
    if ok:
        try:
            check_scalar(value, name, kind, min_val=lo, max_val=hi, include_boundaries=closed)
        except (TypeError, ValueError):
            ok = False
    if ok:
        return cast(value)
    none = " or None" if allow_none else ""
    why = f" ({note})" if note else ""
    raise ValidationError(
        f"{name} must be {noun}{_range_text(gt, ge, lt, le)}{none}{why}, got {value!r}"
    )


def check_int(value: Any, name: str, **bounds: Any) -> int | None:
    """``value`` as an ``int`` after checking it is an integer within the bounds.

    Parameters
    ----------
    value : the argument.
    name : its name, as the user wrote it (``"max_steps"``, ``"--k"``).
    bounds : keywords ``gt``, ``ge``, ``lt``, ``le``: strict and inclusive lower and upper
        bounds (None, the default: unbounded); ``allow_none``: None passes (and is
        returned), default False; ``note``: why the range is what it is, said in the error
        (``"rag-im-2024 needs neighbours"``).

    Raises
    ------
    ValidationError
        One line: ``"<name> must be an integer >= 1, got 0"``.

    Examples
    --------
    >>> import numpy as np
    >>> check_int(np.int64(4), "batch_size", ge=1)
    4
    >>> check_int(None, "max_tasks", ge=1, allow_none=True) is None
    True
    """
    return _checked(value, name, numbers.Integral, "an integer", int, **bounds)


def check_number(value: Any, name: str, **bounds: Any) -> float | None:
    """``value`` as a ``float`` after checking it is a finite real number within the bounds.

    Integers are numbers too (``learning_rate=1`` is 1.0); booleans, text, NaN and infinity
    are not. Parameters (the same keywords) and errors as :func:`check_int`.

    Examples
    --------
    >>> check_number(1, "learning_rate", gt=0)
    1.0
    >>> check_number(float("nan"), "temperature", ge=0)
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: temperature must be a number >= 0, got nan
    """
    return _checked(value, name, numbers.Real, "a number", float, **bounds)


def check_fields(
    obj: Any,
    rules: Mapping[str, Callable[[Any, str], Any]],
    what: str,
    problems: list[str] | None = None,
) -> None:
    """Check fields of a config object in place, then raise one error listing every problem.

    Parameters
    ----------
    obj : the config (a dataclass instance); every checked field is replaced by the
        value its rule returns (a plain ``int`` or ``float``).
    rules : field name -> ``rule(value, name)``, e.g.
        ``functools.partial(check_int, ge=1)``.
    what : the config's name in the error message.
    problems : problems found by other checks, reported in the same error.

    Raises
    ------
    ValidationError
        ``"invalid <what>:"`` followed by one line per problem.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> from functools import partial
    >>> @dataclass
    ... class Run:
    ...     steps: int = 1
    ...     rate: float = 0.1
    >>> check_fields(Run(steps=0, rate=-1), {"steps": partial(check_int, ge=1),
    ...                                       "rate": partial(check_number, gt=0)}, "Run")
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: invalid Run:
      - steps must be an integer >= 1, got 0
      - rate must be a number > 0, got -1
    """
    found = []
    for name, rule in rules.items():
        try:
            setattr(obj, name, rule(getattr(obj, name), name))
        except ValidationError as exc:
            found.append(str(exc))
    found += list(problems or [])
    if found:
        raise ValidationError(f"invalid {what}:", found)


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a bool; a :class:`ValidationError` for anything but True or False (a
    string such as "no" is truthy, so it would silently mean True).

    Examples
    --------
    >>> check_bool(True, "uncertainty")
    True
    >>> check_bool("no", "uncertainty")
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: uncertainty must be True or False, got 'no'
    """
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise ValidationError(f"{name} must be True or False, got {value!r}")


def check_names(value: Any, name: str, *, what: str = "method names") -> list[str]:
    """``value`` as a list of names without repeats, in order; a one-line
    :class:`ValidationError` for a bare string (which would be read letter by letter), an
    empty list, or anything but a list of strings.

    Examples
    --------
    >>> check_names(("pooled", "oracle", "pooled"), "baselines")
    ['pooled', 'oracle']
    >>> check_names("pooled", "baselines")
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: baselines must be a list of method names, got the text \
'pooled'; write ['pooled']
    """
    if isinstance(value, str):
        raise ValidationError(
            f"{name} must be a list of {what}, got the text {value!r}; write [{value!r}]"
        )
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise ValidationError(f"{name} must be a non-empty list of {what}, got {value!r}")
    names = list(value)
    if not names or not all(isinstance(v, str) for v in names):
        raise ValidationError(f"{name} must be a non-empty list of {what}, got {value!r}")
    return list(dict.fromkeys(names))


def check_float_array(value: Any, name: str, *, what: str = "numbers") -> np.ndarray:
    """``value`` (a list, array or pandas Series) as a flat float array; a one-line
    :class:`ValidationError` naming the argument when an entry is not a number (text such as
    "yes", which numpy would report as "could not convert string to float").

    Examples
    --------
    >>> check_float_array([True, 0, "1"], "y_true").tolist()
    [1.0, 0.0, 1.0]
    >>> check_float_array(["yes", "no"], "y_true", what="0/1 outcomes")
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: y_true must hold 0/1 outcomes, got 'yes'; map the labels to \
0/1 first
    """
    try:
        return np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        pass
    flat = np.asarray(value, dtype=object).reshape(-1)
    bad = next((v for v in flat if not _is_float(v)), flat[0] if flat.size else value)
    hint = "; map the labels to 0/1 first" if "0/1" in what else ""
    raise ValidationError(f"{name} must hold {what}, got {bad!r}{hint}")


def check_frame(value: Any, name: str, columns: Sequence[str], *, source: str) -> None:
    """Refuse, in one line, a ``value`` that is not a pandas DataFrame holding ``columns``;
    ``source`` says where such a frame comes from ("the output of zero_shot/few_shot").

    >>> check_frame(pd.DataFrame({"a": [1]}), "per_task", ["a", "b"], source="zero_shot's output")
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: per_task lacks columns ['b']; pass zero_shot's output
    """
    if not isinstance(value, pd.DataFrame):
        raise ValidationError(
            f"{name} must be a pandas DataFrame, got {type(value).__name__}; pass {source}"
        )
    missing = [c for c in columns if c not in value.columns]
    if missing:
        raise ValidationError(f"{name} lacks columns {missing}; pass {source}")


def _is_float(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def setting(default: Any, help: str) -> Any:
    """A config dataclass field: its ``default`` and its ``help`` text, kept in the field's
    metadata the way peft's configs keep it (``field(default=..., metadata={"help": ...})``).

    Examples
    --------
    >>> from dataclasses import dataclass, fields
    >>> @dataclass
    ... class Run:
    ...     steps: int = setting(10, "optimiser steps")
    >>> Run().steps, fields(Run)[0].metadata["help"]
    (10, 'optimiser steps')
    """
    return field(default=default, metadata={"help": help})


def config_from(
    cls: type, config: Any, overrides: Mapping[str, Any], *, skip_none: bool = False
) -> Any:
    """A new, checked instance of the config dataclass ``cls``: the fields of ``config`` (an
    instance of ``cls``, a dict of its fields, or None for the defaults) with ``overrides``
    (keyword arguments naming fields) applied. ``cls`` checks the result, so a config changed
    after it was built is checked again. With ``skip_none``, an override that is None leaves
    the field as it is (a trainer's keyword that was not set).

    Raises
    ------
    ValidationError
        ``config`` is of another type, or a dict with unknown fields; or a value is bad.
    TypeError
        An override that is not a field of ``cls`` (as for an unexpected keyword argument).

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Run:
    ...     steps: int = 1
    >>> config_from(Run, {"steps": 2}, {"steps": 3}).steps
    3
    >>> config_from(Run, None, {"step": 3})
    Traceback (most recent call last):
    ...
    TypeError: unexpected keyword argument(s) ['step']: not Run fields ['steps']
    """
    names = [f.name for f in fields(cls) if f.init]
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, dict):
        unknown = sorted(set(config) - set(names))
        if unknown:
            raise ValidationError(f"unknown {cls.__name__} field(s) {unknown}; fields: {names}")
        base = dict(config)
    elif isinstance(config, cls):
        base = {n: getattr(config, n) for n in names}
    else:
        raise ValidationError(
            f"config must be a {cls.__name__} (or a dict of its fields), "
            f"got {type(config).__name__}"
        )
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {unknown}: not {cls.__name__} fields {names}"
        )
    changes = {k: v for k, v in overrides.items() if not (skip_none and v is None)}
    return cls(**{**base, **changes})


def misaligned_labels(X: Any, y: Any) -> list[str]:
    """The problem, if any, of outcomes ``y`` paired with a patient table ``X``: a pandas
    Series, or a one-column DataFrame (``y = df[["y"]]``), whose index holds ``X``'s row labels
    in another order, or only some of them.

    ragim pairs ``X`` and ``y`` by position, as scikit-learn does; such a ``y`` (say ``X``
    was shuffled, sorted or filtered after ``y`` was taken from it) would put each outcome on
    another patient's row. An index equal to ``X``'s passes, and so do plain arrays and
    lists, a ``y`` whose labels share none with ``X``'s (``X``'s index was reset), and one
    sharing only some of them when either index is pandas' default 0..n-1, which names no rows
    (``X = d[cols].reset_index(drop=True); y = d["y"]`` after filtering ``d``): those pair by
    position, as given. Labels that share some but not all of ``X``'s, both sides named, are
    refused. A one-column DataFrame is checked exactly as a Series.

    Parameters
    ----------
    X : the patient table, shape (n, p); only a pandas DataFrame has labels to compare.
    y : the outcomes, shape (n,) or (n, 1).

    Returns
    -------
    list of str
        Empty, or one problem, in the words :class:`~ragim.Task` and the estimators use.

    Examples
    --------
    >>> X = pd.DataFrame({"age": [50, 60, 70]}, index=[10, 11, 12])
    >>> misaligned_labels(X, pd.Series([0, 1, 1], index=[10, 11, 12]))
    []
    >>> misaligned_labels(X, pd.Series([0, 1, 1], index=[12, 10, 11]))[0][:44]
    "y is a pandas Series whose index holds X's r"
    >>> misaligned_labels(X, pd.DataFrame({"y": [0, 1, 1]}, index=[11, 12, 13]))[0][:60]
    "y is a one-column pandas DataFrame whose index holds 2 of X'"
    """
    if isinstance(y, pd.DataFrame) and y.shape[1] == 1:
        what, y = "a one-column pandas DataFrame", y.iloc[:, 0]
    elif isinstance(y, pd.Series):
        what = "a pandas Series"
    else:
        return []
    if not isinstance(X, pd.DataFrame) or len(X) != len(y):
        return []
    if y.index.equals(X.index) or not (y.index.is_unique and X.index.is_unique):
        return []
    shared = len(X.index.intersection(y.index))
    if shared == 0:
        return []  # other labels (e.g. X's index was reset): matched by position, as given
    if shared == len(X) and _default_labels(X.index):
        # X numbered 0..n-1: either y was reordered after X was taken, or the table was
        # reordered and X alone renumbered (reset_index); which cannot be told
        return [
            f"y is {what} whose index holds X's row numbers 0..{len(X) - 1} in another order; "
            "rows are matched by position: if X's index was reset after the table was sorted "
            "or shuffled, pass y.to_numpy() (or reset y's index too); if y was reordered after "
            "X was taken, align it (y = y.loc[X.index])"
        ]
    if shared == len(X):
        return [
            f"y is {what} whose index holds X's row labels in another order; rows are "
            "matched by position, so align them first (y = y.loc[X.index]) or pass y.to_numpy()"
        ]
    if _default_labels(X.index) or _default_labels(y.index):
        # 0..n-1 names no rows (reset_index(drop=True) after filtering writes it): matched by
        # position, as given, since which side was reset cannot be told
        return []
    return [
        f"y is {what} whose index holds {shared} of X's {len(X)} row labels, and "
        f"{len(X) - shared} others; rows are matched by position: align them "
        "(y = y.loc[X.index]) if y's labels name X's rows, or pass y.to_numpy() if the two "
        "already pair by position"
    ]


def _default_labels(index: pd.Index) -> bool:
    """Whether ``index`` is 0, 1, ..., n-1 (pandas' default, or rows numbered so by hand),
    which names no rows."""
    if isinstance(index, pd.RangeIndex):
        return index.start == 0 and index.step == 1
    return pd.api.types.is_integer_dtype(index) and index.equals(pd.RangeIndex(len(index)))


def check_aligned_labels(X: Any, y: Any) -> None:
    """Refuse outcomes ``y`` that :func:`misaligned_labels` finds paired with the wrong rows.

    Parameters
    ----------
    X : the patient table, shape (n, p).
    y : the outcomes, shape (n,) or (n, 1).

    Raises
    ------
    ValidationError
        One line, when ``y`` is a pandas Series or a one-column DataFrame whose index holds
        ``X``'s row labels in another order, or some of them but not all.

    Examples
    --------
    >>> X = pd.DataFrame({"age": [50, 60]}, index=["a", "b"])
    >>> check_aligned_labels(X, pd.Series([1, 0], index=["b", "a"]))
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: y is a pandas Series whose index holds X's row labels in \
another order; rows are matched by position, so align them first (y = y.loc[X.index]) or \
pass y.to_numpy()
    """
    problems = misaligned_labels(X, y)
    if problems:
        raise ValidationError(problems[0])


def repeated(values: Iterable[Any]) -> list[Any]:
    """The values that occur more than once in ``values``, sorted: the ids a list names twice.

    >>> repeated(["b", "a", "b", "c", "a"]), repeated([1, 2])
    (['a', 'b'], [])
    """
    return sorted(v for v, n in Counter(values).items() if n > 1)


def check_loaded(value: Any, spec: Any, name: str) -> Any:
    """Check a value read from a saved artifact's JSON against ``spec``, its expected type
    and shape, before any code uses it; returns ``value`` (integers as ``int``, numbers as
    ``float``).

    Parameters
    ----------
    value : the loaded value (from ``json.loads``).
    spec : what it must be:

        - ``int``: an integer (not a bool, not a float such as ``1e30``); ``float``: a
          finite number; ``str``, ``bool``: those;
        - a callable ``rule(value, name)`` (e.g. ``partial(check_int, ge=0, le=10)``), whose
          result is kept;
        - ``[spec]``: a list whose items are each ``spec``;
        - ``{"*": spec}``: an object mapping any text key to ``spec``;
        - ``{key: spec, ...}``: an object with exactly these keys (a key written ``"key?"``
          may be absent);
        - ``None``: anything (not checked).
    name : where the value is, said in the error (``"state.json: stack"``).

    Raises
    ------
    ValidationError
        One line naming the first wrong field: ``"<name>.<key> must be ..., got ..."``.

    Examples
    --------
    >>> check_loaded({"k": 3, "w": [0.5, 1]}, {"k": int, "w": [float]}, "state")
    {'k': 3, 'w': [0.5, 1.0]}
    >>> check_loaded({"k": 1e30}, {"k": int}, "state")
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: state.k must be an integer, got 1e+30
    """
    if spec is None:
        return value
    if spec is int:
        return check_int(value, name)
    if spec is float:
        return check_number(value, name)
    if spec is bool:
        return check_bool(value, name)
    if spec is str:
        if not isinstance(value, str):
            raise ValidationError(f"{name} must be text, got {value!r}")
        return value
    if isinstance(spec, list):
        if not isinstance(value, list):
            raise ValidationError(f"{name} must be a list, got {_short(value)}")
        return [check_loaded(v, spec[0], f"{name}[{i}]") for i, v in enumerate(value)]
    if isinstance(spec, Mapping):
        if not isinstance(value, Mapping):
            raise ValidationError(f"{name} must be an object, got {_short(value)}")
        if set(spec) == {"*"}:
            return {str(k): check_loaded(v, spec["*"], f"{name}.{k}") for k, v in value.items()}
        keys = {k.rstrip("?"): k.endswith("?") for k in spec}
        unknown = sorted(set(value) - set(keys), key=str)
        missing = [k for k, optional in keys.items() if not optional and k not in value]
        if unknown or missing:
            raise ValidationError(
                f"{name} must have the keys {sorted(keys)}, "
                + (f"missing {missing}" if missing else f"got also {unknown[:5]}")
            )
        spec_of = {k.rstrip("?"): s for k, s in spec.items()}
        return {k: check_loaded(v, spec_of[k], f"{name}.{k}") for k, v in value.items()}
    return spec(value, name)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{type(value).__name__} {text[:50]}..."


__all__ = [
    "check_aligned_labels",
    "check_bool",
    "check_fields",
    "check_float_array",
    "check_int",
    "check_loaded",
    "check_names",
    "check_number",
    "config_from",
    "misaligned_labels",
    "repeated",
    "setting",
]
