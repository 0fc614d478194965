"""Canonical forms of the values ragim compares: names, ids, categorical levels, group codes.

Hospital exports type the same value differently from file to file: pandas reads a
numeric-coded category as ``4`` in a complete column and ``4.0`` once one value is
missing, reads a ward id ``007`` as the integer ``7``, and text may arrive in composed
(NFC) or decomposed (NFD) Unicode. ragim never compares such values in the form it was
given; it compares their canonical forms:

* :func:`canonical_text` — Unicode NFC, surrounding whitespace removed. Used for
  feature names, task ids, descriptions and text metadata.
* :func:`canonical_id` — an identifier as text (task ids, patient ids). Numbers that
  pandas guessed are written back as integers (``7.0`` -> ``"7"``), but text is kept as
  text, so ``"007"`` stays ``"007"``: leading zeros are part of an id.
* :func:`canonical_level` — a categorical level or a group code (site, ASA class,
  triage level). Numbers and plain decimal numerals compare by value: ``4``, ``4.0``,
  ``"4.0"`` and ``"04"`` are all ``"4"``; ``True``/``False``, and the text ``true``/``false``
  in any case (``"TRUE"``, ``"False"``: how spreadsheets, databases and ``read_csv(dtype=str)``
  write a boolean that ``read_csv`` would have made ``True``/``False``), are ``"1"``/``"0"``
  (see :func:`truth_text`); other text is compared as :func:`canonical_text`, as written: a
  ward ``"3E1"`` is not ``30`` and ``"+5"``, ``"1_000"``, ``"0x1F"`` or ``"inf"`` are not
  numbers (see :func:`plain_numeral`). Invisible characters (a zero-width space, a soft
  hyphen, a BOM: :func:`invisible_characters`) are not part of a level: ``"Fe\\u200bmale"``
  is ``"Female"``, as surrounding spaces are not.

One set of text means "missing" wherever ragim reads values: :data:`MISSING_TEXT` (``NA``,
``N/A``, ``n/a``, ``NaN``, ``nan``, ``null``, ``NULL``, ``#N/A``, ``<NA>``, surrounding spaces
allowed), in CSV and Parquet files and in DataFrames alike (:func:`is_missing_text`). ``None``
written as text is a value (smoking ``None``/``Light``/``Heavy``), not a missing one.

Examples
--------
>>> canonical_level(4.0), canonical_level("04"), canonical_level(" Cleveland ")
('4', '4', 'Cleveland')
>>> canonical_level(True), canonical_level(" TRUE "), canonical_level("false")
('1', '1', '0')
>>> canonical_id("007"), canonical_id(7.0)
('007', '7')
>>> canonical_text("Zu\\u0308rich") == canonical_text("Z\\u00fcrich")
True
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from ragim.errors import DataWarning, ValidationError, user_stacklevel

#: a plain decimal numeral: ASCII digits, an optional leading minus and decimal point; no
#: exponent (``3E1`` is a ward, not 30), no ``+``, no digit groups, hex, ``inf`` or ``nan``
_NUMERAL = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
#: Unicode categories that carry no visible content: controls (other than tab and newline)
#: and format characters such as the zero-width space, the BOM and direction marks.
_INVISIBLE = {"Cc", "Cf"}
# In ASCII the only invisible characters are the controls (no format characters there); a
# regex finds them 20x faster than a per-character category lookup.
_ASCII_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


#: the text read as a missing value wherever ragim reads values (CSV and Parquet files,
#: DataFrames), compared without surrounding spaces; blank cells are missing too. pandas'
#: own default list is not used: it also makes the word ``None`` missing, a category in
#: clinical data (smoking ``None``/``Light``/``Heavy``, oxygen ``None``/``Nasal``/``Mask``).
MISSING_TEXT = ("NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "#N/A", "<NA>")
_MISSING_TEXT = frozenset(MISSING_TEXT)


def is_missing_text(v: Any) -> bool:
    """True for text that is blank or one of :data:`MISSING_TEXT` (surrounding spaces
    allowed): how ragim reads a missing value written as text, in files and DataFrames alike.

    >>> [is_missing_text(v) for v in ("NA", " null ", "", "None", "Na", 0, None)]
    [True, True, True, False, False, False, False]
    """
    return isinstance(v, str) and (v.strip() in _MISSING_TEXT or not v.strip())


def is_missing(v: Any) -> bool:
    """True for None, NaN (``Decimal("NaN")`` too), NaT and pandas' NA.

    >>> is_missing(float("nan")), is_missing(None), is_missing(0), is_missing(Decimal("NaN"))
    (True, True, False, True)
    """
    if v is None:
        return True
    if isinstance(v, float | np.floating):
        return math.isnan(v)
    if isinstance(v, Decimal):
        return v.is_nan()
    try:
        import pandas as pd

        return v is pd.NA or v is pd.NaT
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False


def canonical_text(s: str) -> str:
    """NFC-normalised text without surrounding whitespace.

    >>> canonical_text("  e\\u0301 ")
    'é'
    """
    return unicodedata.normalize("NFC", s).strip()


def invisible_characters(s: str) -> list[str]:
    """The characters of ``s`` that carry no content (controls other than tab/newline, and
    format characters such as U+200B ZERO WIDTH SPACE), as ``U+XXXX`` codes.

    >>> invisible_characters("sepsis\\u200b in adults")
    ['U+200B']
    """
    if s.isascii():
        return [f"U+{ord(c):04X}" for c in _ASCII_CONTROLS.findall(s)]
    return [
        f"U+{ord(c):04X}" for c in s if c not in "\t\n\r" and unicodedata.category(c) in _INVISIBLE
    ]


def strip_invisible(s: str) -> str:
    """``s`` without the characters :func:`invisible_characters` lists, NFC-normalised."""
    if s.isascii():
        return _ASCII_CONTROLS.sub("", s).strip()
    return canonical_text(
        "".join(c for c in s if c in "\t\n\r" or unicodedata.category(c) not in _INVISIBLE)
    )


def plain_numeral(text: Any) -> bool:
    """Whether ``text`` is text written as a plain decimal numeral (``"4"``, ``"04"``,
    ``"-2.50"``, ``".5"``; surrounding whitespace allowed): the only text
    :func:`canonical_level` reads as a number. Exponents (``"3E1"``), a leading ``+``,
    digit groups (``"1_000"``, ``"1,000"``), hex, ``"inf"``, ``"nan"`` and non-ASCII digits
    are not plain numerals; neither is anything that is not text.

    >>> [plain_numeral(t) for t in ("04", " -2.50 ", ".5", "3E1", "+5", "1_000", "inf", 4)]
    [True, True, True, False, False, False, False, False]
    """
    return isinstance(text, str) and _NUMERAL.fullmatch(canonical_text(text)) is not None


#: the text of a boolean, in any case, and the value it is (as ``True``/``False`` are 1/0)
_TRUTH_TEXT = {"true": "1", "false": "0"}


def truth_text(v: Any) -> str | None:
    """``"1"``/``"0"`` for text that writes a boolean (``true``/``false`` in any case,
    surrounding whitespace allowed: ``"TRUE"``, ``" False "``), else None (also for the
    booleans themselves, and for ``"yes"``, ``"T"`` or ``"1"``).

    ``pd.read_csv`` makes such a column booleans, but the same text arrives as text from
    ``read_csv(dtype=str)``, ``read_excel`` or a database: ragim reads both as 1/0.

    >>> [truth_text(v) for v in ("TRUE", " false ", "True", "yes", True, "1")]
    ['1', '0', '1', None, None, None]
    """
    if not isinstance(v, str) or len(v) > 16:
        return None
    return _TRUTH_TEXT.get(v.strip().casefold())


#: float types narrower than a Python float: their values are written with their own shortest
#: round-trip digits (float32 1.1 is 1.1, not 1.100000023841858)
_NARROW_FLOATS = (np.float16, np.float32)


def _is_narrow_float_dtype(dtype: Any) -> bool:
    numpy_dtype = getattr(dtype, "numpy_dtype", dtype)  # pandas' Float32 holds a float32
    try:
        return np.dtype(numpy_dtype).type in _NARROW_FLOATS
    except TypeError:
        return False


def widen_floats(values: Any) -> Any:
    """``values`` (a Series, DataFrame or array) with float16/float32 values (numpy's, or
    pandas' ``Float32``) as the float64 numbers their shortest round-trip text names: a
    float32 ``1.1`` (a Parquet REAL column) is ``1.1``, as the same table written as CSV
    reads, not ``1.100000023841858``. Anything else is returned unchanged.

    >>> widen_floats(np.array([1.1, np.nan], dtype=np.float32)).tolist()
    [1.1, nan]
    """
    import pandas as pd

    if isinstance(values, pd.DataFrame):
        narrow = [c for c in values.columns if _is_narrow_float_dtype(values[c].dtype)]
        if not narrow:
            return values
        out = values.copy()
        for c in narrow:
            out[c] = widen_floats(values[c])
        return out
    if isinstance(values, pd.Series):
        if not _is_narrow_float_dtype(values.dtype):
            return values
        narrow = np.dtype(getattr(values.dtype, "numpy_dtype", values.dtype))
        arr = values.to_numpy(dtype=narrow, na_value=np.nan)
        return pd.Series(widen_floats(arr), index=values.index, name=values.name)
    if isinstance(values, np.ndarray) and values.dtype.type in _NARROW_FLOATS:
        return values.astype(str).astype(np.float64)  # numpy writes the shortest digits
    return values


def _number_text(x: Decimal) -> str:
    if x == x.to_integral_value():
        return str(int(x))
    return format(x.normalize(), "f")


def canonical_level(v: Any) -> str | None:
    """The canonical text of a categorical level or group code; None for a missing value.

    Text is compared without surrounding spaces and without invisible characters
    (:func:`strip_invisible`: a zero-width space copied from a web page into one export's
    ``Female`` does not make a second level). Numbers (``decimal.Decimal`` too) and plain
    decimal numerals compare by value (``4 == 4.0 == "4.0" == "04"``), booleans and the text
    ``true``/``false`` in any case as ``"1"``/``"0"`` (:func:`truth_text`), other text as
    :func:`canonical_text`, as written: ``"3E1"`` (a ward) stays ``"3E1"``, not 30 (see
    :func:`plain_numeral`).

    Raises
    ------
    ValidationError
        For values that cannot be a level: lists, dicts, infinite numbers.

    Examples
    --------
    >>> [canonical_level(v) for v in (4, 4.0, "4.0", "04", True, "TRUE", 2.50, "mild", None)]
    ['4', '4', '4', '4', '1', '1', '2.5', 'mild', None]
    >>> [canonical_level(v) for v in ("3E1", "+5", "1_000", Decimal("0.50"))]
    ['3E1', '+5', '1_000', '0.5']
    """
    if is_missing(v):
        return None
    if isinstance(v, bool | np.bool_):
        return "1" if v else "0"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        if not math.isfinite(v):
            raise ValidationError(
                f"{v!r} cannot be a category level; levels must be finite numbers or text"
            )
        if isinstance(v, _NARROW_FLOATS):  # float32 1.1 is 1.1: its own shortest digits
            return _number_text(Decimal(np.format_float_positional(v, unique=True, trim="-")))
        return _number_text(Decimal(repr(float(v))))
    if isinstance(v, Decimal):
        if not v.is_finite():
            raise ValidationError(
                f"{v!r} cannot be a category level; levels must be finite numbers or text"
            )
        return _number_text(v)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, list | dict | set | tuple | np.ndarray):
        raise ValidationError(
            f"a {type(v).__name__} cannot be a category level; levels must be numbers or text"
        )
    text = strip_invisible(str(v))  # "Fe\u200bmale" is "Female", as " Female " is
    if _NUMERAL.fullmatch(text):
        try:
            return _number_text(Decimal(text))
        except InvalidOperation:  # pragma: no cover - the pattern only admits valid numerals
            return text
    return _TRUTH_TEXT.get(text.casefold(), text)


def canonical_levels(values: Any) -> np.ndarray:
    """:func:`canonical_level` of every value of an array-like (a DataFrame, a Series, a
    list), as an object array of the same shape; None where a value is missing.

    The first step of every categorical feature in :func:`ragim.export.to_sklearn_pipeline`.

    Raises
    ------
    ValidationError
        For a value that cannot be a level (see :func:`canonical_level`).

    Examples
    --------
    >>> canonical_levels([[4.0], ["04"], [True], ["True"], [None], [" mild "]]).ravel().tolist()
    ['4', '4', '1', '1', None, 'mild']
    """
    arr = np.asarray(widen_floats(values), dtype=object)
    flat = arr.ravel()
    out = np.empty(len(flat), dtype=object)
    seen: dict[Any, str | None] = {}
    for i, v in enumerate(flat):
        try:  # values that compare equal (1, 1.0, True) have one canonical form
            out[i] = seen[v]
        except KeyError:
            out[i] = seen[v] = canonical_level(v)
        except TypeError:  # unhashable: canonical_level names it
            out[i] = canonical_level(v)
    return out.reshape(arr.shape)


def canonical_id(v: Any, what: str = "id") -> str:
    """An identifier as canonical text (task ids, patient ids).

    Text is kept as written (NFC, stripped), so leading zeros survive; integers, and floats
    that pandas made of integers (``7.0``), are written as integers.

    Raises
    ------
    ValidationError
        For a missing (blank or NaN) id, or a non-integral float.

    Examples
    --------
    >>> canonical_id("0001"), canonical_id(np.int64(12)), canonical_id(3.0)
    ('0001', '12', '3')
    """
    if is_missing(v):
        raise ValidationError(f"a {what} is missing (blank or NaN); every {what} must be given")
    if isinstance(v, bool | np.bool_):
        raise ValidationError(f"{v!r} is not a valid {what}; ids are text or integers")
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        if not (math.isfinite(v) and float(v).is_integer()):
            raise ValidationError(
                f"{what} {v!r} is not an integer; read ids as text (e.g. dtype=str)"
            )
        return str(int(v))
    if isinstance(v, Decimal):  # a DECIMAL(p, 0) id column of a SQL export
        if not (v.is_finite() and v == v.to_integral_value()):
            raise ValidationError(
                f"{what} {v!r} is not an integer; read ids as text (e.g. dtype=str)"
            )
        return str(int(v))
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    text = canonical_text(str(v))
    if not text:
        raise ValidationError(f"a {what} is blank; every {what} must be given")
    return text


#: an integer as pandas writes a float of a whole number: ``5.0``, ``-12.0`` (no leading zeros)
_WHOLE_FLOAT_TEXT = re.compile(r"-?(0|[1-9][0-9]*)\.0+")


def canonical_ids(values: Any, what: str = "id") -> list[str]:
    """:func:`canonical_id` of every id of a column (a list, Series or array).

    A column of text ids that are all whole numbers as pandas writes a float column (``5.0``,
    ``12.0``: ids saved from a table whose id column pandas made float, after a NaN or from R's
    numeric ids, and read back as text) is read as those integers, as the same float ids read
    from Parquet are (``5.0`` -> ``"5"``). Any other text is kept as written: ``"0005"`` stays
    ``"0005"``, and a column mixing ``"5.0"`` with ``"A7"`` keeps ``"5.0"``.

    Raises
    ------
    ValidationError
        As :func:`canonical_id`.

    Examples
    --------
    >>> canonical_ids(["5.0", "12.0"]), canonical_ids(["5.0", "A7"]), canonical_ids(["0005", 6.0])
    (['5', '12'], ['5.0', 'A7'], ['0005', '6'])
    """
    values = list(values)
    ids = [canonical_id(v, what) for v in values]
    if ids and all(
        isinstance(v, str | bytes) and _WHOLE_FLOAT_TEXT.fullmatch(i)
        for v, i in zip(values, ids, strict=True)
    ):
        return [str(int(i.split(".")[0])) for i in ids]
    return ids


def same_level(a: Any, b: Any) -> bool:
    """Whether two levels or group codes are the same value (see :func:`canonical_level`).

    >>> same_level("01", 1), same_level("Cleveland", "cleveland")
    (True, False)
    """
    return canonical_level(a) == canonical_level(b)


def spellings(values: Any) -> list[list[str]]:
    """The distinct values grouped by :func:`canonical_level` with letter case ignored, each
    group the spellings seen (text as written, numbers in canonical form), in order of first
    appearance; missing values left out. Two groups holding more than two values are one
    binary outcome written several ways (``Died``, ``died ``, ``died`` / ``alive``), which the
    label checks (:func:`ragim.tasks.binary_outcome`, the estimators' ``fit``) name.

    >>> spellings(["died", "Died", "alive", "died ", 1, "1.0"])
    [['died', 'Died', 'died '], ['alive'], ['1', '1.0']]
    """
    groups: dict[str, list[str]] = {}
    for v in np.asarray(values, dtype=object).reshape(-1).tolist():
        key = canonical_level(v)
        if key is None:
            continue
        shown = v if isinstance(v, str) else key
        group = groups.setdefault(key.casefold(), [])
        if shown not in group:
            group.append(shown)
    return list(groups.values())


def two_labels_spelt_apart(values: Any) -> str:
    """The :func:`spellings` of ``values`` as a message shows them (``'died', 'Died' /
    'alive'``) when they are exactly two labels written several ways; else "".

    >>> two_labels_spelt_apart(["died", "Died", "alive"]), two_labels_spelt_apart(["a", "b", "c"])
    ("'died', 'Died' / 'alive'", '')
    """
    groups = spellings(values)
    return " / ".join(", ".join(map(repr, g)) for g in groups) if len(groups) == 2 else ""


def level_key(v: Any) -> tuple:
    """A sort key that orders numeric levels by value and puts them before text levels.

    >>> sorted(["10", "9", "b", "a"], key=level_key)
    ['9', '10', 'a', 'b']
    """
    c = canonical_level(v)
    if c is not None and _NUMERAL.fullmatch(c):
        return (0, float(Decimal(c)), c)
    return (1, 0.0, c or "")


def description_key(text: str) -> str:
    """The form in which two task descriptions are the same text: without invisible
    characters, spaces collapsed, letter case ignored.

    >>> description_key("  Predict  sepsis\u200b in ADULTS ")
    'predict sepsis in adults'
    """
    return " ".join(strip_invisible(text).casefold().split())


def shared_descriptions(
    tasks: Iterable[tuple[str, str]], new: Iterable[str] | None = None
) -> list[list[str]]:
    """The groups of task ids whose descriptions are the same text (:func:`description_key`),
    each in the order given, groups in order of their first task. With ``new`` (task ids just
    added), only the groups that hold one of them.

    Retrieval finds tasks by their descriptions, so tasks that share one cannot be told apart:
    a generator can only pool them, whatever their outcomes.

    Parameters
    ----------
    tasks : (task id, description) pairs.
    new : ids of the tasks to check against all of ``tasks``; None checks every task.

    >>> pairs = [("a", "Predict death"), ("b", "Predict sepsis"), ("c", "predict  death")]
    >>> shared_descriptions(pairs), shared_descriptions(pairs, new=["b"])
    ([['a', 'c']], [])
    """
    groups: dict[str, list[str]] = {}
    for task_id, text in tasks:
        groups.setdefault(description_key(text), []).append(task_id)
    shared = [ids for ids in groups.values() if len(ids) > 1]
    if new is not None:
        wanted = set(new)
        shared = [ids for ids in shared if wanted.intersection(ids)]
    return shared


#: the share of the tasks checked that must share a description with another task before
#: :func:`warn_shared_descriptions` warns: a few coinciding descriptions among many tasks (a
#: large family worded from templates) are left alone, a template description for a tenth of
#: the tasks is not
SHARED_DESCRIPTION_SHARE = 0.05


def warn_shared_descriptions(
    tasks: Iterable[tuple[str, str]],
    new: Iterable[str] | None = None,
    *,
    min_share: float = SHARED_DESCRIPTION_SHARE,
    stacklevel: int | None = None,
) -> None:
    """One :class:`~ragim.errors.DataWarning` naming the groups of
    :func:`shared_descriptions` (up to 3 groups, 5 ids each), when the tasks in them are at
    least ``min_share`` of the tasks checked (all of ``tasks``, or the ``new`` ones); nothing
    otherwise."""
    tasks = list(tasks)
    new = None if new is None else list(new)
    groups = shared_descriptions(tasks, new)
    checked = set(new) if new is not None else {t for t, _ in tasks}
    shared = {t for ids in groups for t in ids} & checked
    if not groups or len(shared) < min_share * len(checked):
        return
    import warnings

    shown = [
        f"{ids[:5]}" + (f" and {len(ids) - 5} more" if len(ids) > 5 else "") for ids in groups[:3]
    ]
    more = f" and {len(groups) - 3} more group(s)" if len(groups) > 3 else ""
    warnings.warn(
        f"{sum(map(len, groups))} tasks share a description with another task: "
        f"{'; '.join(shown)}{more}. Descriptions must tell tasks apart: retrieval cannot, so "
        "a model generated for such a description pools them, whatever their outcomes or "
        "populations; say in each description what its task predicts, in whom and where",
        DataWarning,
        stacklevel=user_stacklevel() if stacklevel is None else stacklevel + 1,
    )


#: an id that reads as a whole number however it is padded or tailed: ``007``, ``7``, ``7.0``
_WHOLE_NUMBER_ID = re.compile(r"(-?)0*([0-9]+)(?:\.0+)?")


def _whole_number(text: str) -> str | None:
    """The integer an id spells as digits (``"007"``, ``"7"``, ``"7.0"`` -> ``"7"``), else None."""
    m = _WHOLE_NUMBER_ID.fullmatch(text)
    if m is None:
        return None
    digits = m.group(2).lstrip("0") or "0"
    return (m.group(1) if digits != "0" else "") + digits


def _number_written_otherwise(text: str, cores: set[str] | None = None) -> str | None:
    """The whole number an id spells when it is written other than plainly (padded, ``.0``
    tail: ``"007"``, ``"7.0"`` -> ``"7"``), else None. With ``cores``, only numbers whose
    digits (no sign, padding or tail) are among them: a cheap look before the exact reading."""
    if not ("." in text or (len(text) > 1 and text[0] == "0") or text.startswith("-0")):
        return None
    if cores is not None and (text.lstrip("-").lstrip("0").split(".", 1)[0] or "0") not in cores:
        return None
    return _whole_number(text)


def patient_id_near_misses(
    tasks: Iterable[tuple[str, Iterable[str]]], new: Iterable[str] | None = None
) -> list[tuple[str, str, str, str]]:
    """Patient ids that are the same whole number written apart (``"007"``, ``"7"``,
    ``"7.0"``) in tasks that never hold both spellings.

    ragim compares patient ids as text (:func:`canonical_id`: leading zeros are kept, since
    ``"007"`` may be another record than ``"7"``), so such ids count as different patients and
    the tasks as sharing none. When one table kept an MRN's leading zeros and another read it
    as a number, that is wrong, silently: leave-task-out would train on the held-out patients.
    Spellings found together in one task are that task's distinct patients: not counted.

    Parameters
    ----------
    tasks : (task id, canonical patient ids) pairs.
    new : ids of the tasks to check against all of ``tasks`` (where a new task holds a
        spelling, the result names it); None checks every task.

    Returns
    -------
    ``(spelling, a task holding it, other spelling, a task holding that)`` for each number
    written apart, sorted.

    >>> patient_id_near_misses([("a", ["007", "8"]), ("b", ["7", "9"]), ("c", ["0010"])])
    [('007', 'a', '7', 'b')]
    >>> patient_id_near_misses([("a", ["007", "7"]), ("b", ["7"])])  # two records of task a
    []
    """
    tasks = [
        (t, ids if isinstance(ids, set | frozenset | list | tuple) else list(ids))
        for t, ids in tasks
    ]
    wanted = None if new is None else ({new} if isinstance(new, str) else set(new))
    numbers = cores = None  # with new tasks, only the numbers their ids spell can be apart
    if wanted is not None:
        numbers = {n for t, ids in tasks if t in wanted for n in map(_whole_number, ids) if n}
        if not numbers:
            return []
        cores = {n.lstrip("-") for n in numbers}
    # cheap passes first (most id columns have no number written apart): which numbers have
    # two spellings, then the tasks of each spelling of those numbers only
    first: dict[str, str] = {}
    apart: set[str] = set()
    for _, ids in tasks:
        for text in ids:
            key = _number_written_otherwise(text, cores)
            if key is not None and (numbers is None or key in numbers):
                if first.setdefault(key, text) != text:
                    apart.add(key)
    if not first:
        return []
    for _, ids in tasks:
        apart.update(t for t in ids if t in first)  # the plain spelling beside another one
    if not apart:
        return []
    apart_cores = {n.lstrip("-") for n in apart}
    by_number: dict[str, dict[str, set[str]]] = {}
    for task_id, ids in tasks:
        for text in ids:
            key = text if text in apart else _number_written_otherwise(text, apart_cores)
            if key in apart:
                by_number.setdefault(key, {}).setdefault(text, set()).add(task_id)

    def name(holders: set[str]) -> str:  # a new task when one holds the spelling
        return min(holders & wanted) if wanted and holders & wanted else min(holders)

    out = []
    for spelt in by_number.values():
        items = sorted(spelt.items())
        pick = next(
            (
                (a, name(ta), b, name(tb))
                for n, (a, ta) in enumerate(items)
                for b, tb in items[n + 1 :]
                if ta.isdisjoint(tb) and (wanted is None or wanted & (ta | tb))
            ),
            None,
        )
        if pick is not None:
            out.append(pick)
    return sorted(out)


def warn_patient_id_near_misses(
    tasks: Iterable[tuple[str, Iterable[str]]],
    new: Iterable[str] | None = None,
    *,
    stacklevel: int | None = None,
) -> None:
    """One :class:`~ragim.errors.DataWarning` naming up to 3 of
    :func:`patient_id_near_misses` (and how many there are); nothing when there are none."""
    found = patient_id_near_misses(tasks, new)
    if not found:
        return
    import warnings

    shown = "; ".join(f"{a!r} (task {ta}) and {b!r} (task {tb})" for a, ta, b, tb in found[:3])
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    warnings.warn(
        f"{len(found)} patient id(s) are one number written apart in different tasks: "
        f"{shown}{more}. Patient ids are compared as text, so "
        "these count as different patients and their tasks as sharing none; if they are one "
        "patient, write each id the same way in every task (read id columns as text "
        "everywhere, keeping any leading zeros, and whole numbers without a '.0' tail)",
        DataWarning,
        stacklevel=user_stacklevel() if stacklevel is None else stacklevel + 1,
    )


__all__ = [
    "canonical_id",
    "canonical_ids",
    "canonical_level",
    "canonical_levels",
    "canonical_text",
    "MISSING_TEXT",
    "patient_id_near_misses",
    "SHARED_DESCRIPTION_SHARE",
    "invisible_characters",
    "is_missing",
    "is_missing_text",
    "level_key",
    "plain_numeral",
    "same_level",
    "shared_descriptions",
    "spellings",
    "two_labels_spelt_apart",
    "strip_invisible",
    "truth_text",
    "warn_patient_id_near_misses",
    "warn_shared_descriptions",
    "widen_floats",
]
