"""Patient rows from a CSV file, checked against a model's features.

:func:`read_rows` is what ``ragim predict``, ``score``, ``adapt`` and ``explain --rows``
read: one patient per line, the model's feature columns, and optionally an outcome
column (0/1) and a patient-id column. Every problem is one :class:`ValidationError`
that names the file and the fix: a missing file, an empty file, a separator that
made the whole line one column (``--sep``), a missing outcome or id column,
outcomes other than 0/1, and columns that do not match the model.

Examples
--------
>>> import tempfile, pathlib, pandas as pd
>>> from ragim.schema import FeatureSchema
>>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.csv"
>>> _ = path.write_text("id,age,cad\\n7,61,1\\n8,45,0\\n")
>>> X = pd.DataFrame({"age": [40.0, 70.0]})
>>> rows = read_rows(path, schema=FeatureSchema.infer(X).fit(X), outcome="cad", patient_id="id")
>>> rows.X.columns.tolist(), rows.y.tolist(), rows.ids.tolist()
(['age'], [1, 0], ['7', '8'])
>>> _ = path.write_text("age;cad\\n61;1\\n")
>>> read_rows(path)
Traceback (most recent call last):
ragim.errors.ValidationError: ... it looks semicolon-separated: pass --sep ';' ...
"""

from __future__ import annotations

import csv
import difflib
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ragim.canonical import MISSING_TEXT, canonical_ids, canonical_text, widen_floats
from ragim.errors import DataWarning, ValidationError, user_stacklevel
from ragim.schema import FeatureSchema, thousands_problem, thousands_separator
from ragim.tasks import binary_outcome

DEFAULT_PATIENT_ID = "patient_id"
_SEPARATORS = {";": "semicolon", "\t": "tab", ",": "comma", "|": "pipe"}


@dataclass
class PatientRows:
    """Rows read by :func:`read_rows`.

    Attributes
    ----------
    X : the feature columns (in the schema's order when a schema was given).
    y : the outcome as 0/1 integers, shape (n,), or None without an outcome column.
    ids : the patient ids (a Series), or None without an id column.
    path : the file read.
    """

    X: pd.DataFrame
    y: np.ndarray | None
    ids: pd.Series | None
    path: Path

    def __len__(self) -> int:
        return len(self.X)


#: a number written with a decimal point and no digit groups (``100.0``, ``-1.5``)
_DOT_DECIMAL = re.compile(r"-?[0-9]*\.[0-9]+")


def _sep_name(sep: str) -> str:
    return _SEPARATORS.get(sep, repr(sep))


def _check_header(path: Path, names: list[str], where: str) -> None:
    """Column names must be unique and non-empty (pandas would silently rename them)."""
    canon = [canonical_text(n) for n in names]
    dupes = sorted({n for n in canon if canon.count(n) > 1})
    if dupes:
        raise ValidationError(
            f"{where}{path} has duplicated columns {dupes}; every column needs a unique name"
        )
    empty = [i + 1 for i, n in enumerate(canon) if not n]
    if empty:
        raise ValidationError(
            f"{where}{path}: column(s) {empty} have no name; name every column in the header row"
        )


def na_value_list(na_values: Any) -> list[str]:
    """Extra values that mean "missing", as text, from one value or a list of them.

    >>> na_value_list(-99), na_value_list([".", "unknown", 999]), na_value_list(None)
    (['-99'], ['.', 'unknown', '999'], [])

    Raises
    ------
    ValidationError
        For a blank value, a boolean, a dict (per-column codes: see :func:`na_value_spec`), or
        something that is neither text nor a number.
    """
    if na_values is None:
        return []
    if isinstance(na_values, Mapping):
        raise ValidationError(
            "na_values must be a value or a list of values here, not per-column codes "
            f"({dict(list(na_values.items())[:2])!r})"
        )
    items = [na_values] if isinstance(na_values, str | int | float | np.number) else na_values
    try:
        items = list(items)
    except TypeError:
        raise ValidationError(
            "na_values must be a value or a list of values (or a dict of them by column), "
            f"got {type(na_values).__name__}"
        ) from None
    out = []
    for v in items:
        if isinstance(v, bool | np.bool_) or not isinstance(v, str | int | float | np.number):
            raise ValidationError(
                f"na_values must be text or numbers (e.g. ['.', '-99']), got {v!r}"
            )
        text = str(v.item() if isinstance(v, np.number) else v).strip()
        if not text:
            raise ValidationError(
                "na_values holds a blank value; blank cells already count as missing"
            )
        out.append(text)
    return list(dict.fromkeys(out))


NaValues = list[str] | dict[str, list[str]]


def na_value_spec(na_values: Any) -> NaValues:
    """``na_values`` as ``pd.read_csv`` takes them, in canonical form: a value or a list (codes
    for every column) becomes a list of text; a dict ``{column: value or list}`` (codes for
    that column only) becomes a dict of such lists, keyed by canonical column name.

    >>> na_value_spec("."), na_value_spec({"sex": 9, " smoker ": [".", "unknown"]})
    (['.'], {'sex': ['9'], 'smoker': ['.', 'unknown']})

    Raises
    ------
    ValidationError
        As :func:`na_value_list`, for any of the values; for a column name that is not text.
    """
    if not isinstance(na_values, Mapping):
        return na_value_list(na_values)
    out: dict[str, list[str]] = {}
    for column, codes in na_values.items():
        if not isinstance(column, str) or not column.strip():
            raise ValidationError(
                f"na_values given by column needs column names as keys, got {column!r}"
            )
        if isinstance(codes, Mapping):
            raise ValidationError(
                f"na_values[{column!r}] must be a value or a list of values, got a dict"
            )
        out.setdefault(canonical_text(column), []).extend(na_value_list(codes))
    return {c: list(dict.fromkeys(v)) for c, v in out.items()}


def na_codes_for(na: NaValues, column: str) -> list[str]:
    """The codes of ``na`` (from :func:`na_value_spec`) that apply to ``column``."""
    return na.get(canonical_text(column), []) if isinstance(na, dict) else na


def outcome_na_codes(na: NaValues, outcome: str, pos_label: Any = None) -> list[str]:
    """The codes of ``na`` (from :func:`na_value_spec`) that make an outcome cell blank: all
    those given for the outcome column by name, and of a list given for every column those
    that cannot be an outcome's label (not 0, 1, true, false or ``pos_label``): ``--na-values
    0`` for lab values never measured must not blank the outcome's zeros.

    >>> outcome_na_codes(["0", "-9"], "death"), outcome_na_codes({"death": ["0"]}, "death")
    (['-9'], ['0'])
    """
    if isinstance(na, dict):
        return na_codes_for(na, outcome)
    labels = {"true", "false"} | (
        {str(pos_label).strip().lower()} if pos_label is not None else set()
    )
    values = {0.0, 1.0} | ({float(pos_label)} if isinstance(pos_label, (int, float)) else set())

    def label(code: str) -> bool:
        number = pd.to_numeric(pd.Series([code]), errors="coerce").iloc[0]
        return code.strip().lower() in labels or (pd.notna(number) and float(number) in values)

    return [c for c in na if not label(c)]


def missing_code_mask(s: pd.Series, codes: list[str]) -> np.ndarray:
    """Where ``s`` holds one of ``codes``, as ``pd.read_csv(na_values=...)`` compares them:
    text stripped of surrounding spaces, numbers by value (``-99`` matches ``-99.0``)."""
    if not codes or pd.api.types.is_bool_dtype(s):
        return np.zeros(len(s), dtype=bool)
    numbers = pd.to_numeric(pd.Series(codes, dtype=object), errors="coerce").dropna()
    numbers = numbers.to_numpy(float)
    if pd.api.types.is_numeric_dtype(s):
        return s.isin(numbers).to_numpy()
    text = s.map(lambda v: v.strip() if isinstance(v, str) else v)
    return (text.isin(codes) | pd.to_numeric(text, errors="coerce").isin(numbers)).to_numpy()


def _blank(s: pd.Series, mask: np.ndarray, to_numbers: bool = True) -> pd.Series:
    """``s`` with the ``mask`` cells missing; a text column whose other values are all
    numbers becomes numeric (unless ``to_numbers`` is false), as in ``pd.read_csv``."""
    s = s.mask(mask)
    if to_numbers and not pd.api.types.is_numeric_dtype(s):
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().sum() == s.notna().sum():
            s = num
    return s


def _mark_missing(
    df: pd.DataFrame, na: NaValues, skip: tuple[str, ...], keep_text: tuple[str, ...] = ()
) -> pd.DataFrame:
    """``df`` with the ``na`` values blanked outside the ``skip`` columns (see
    :func:`missing_code_mask` and :func:`_blank`); ``keep_text`` columns stay text."""
    for c in df.columns:
        name = canonical_text(str(c))
        if name in skip:
            continue
        mask = missing_code_mask(df[c], na_codes_for(na, str(c)))
        if mask.any():
            df[c] = _blank(df[c], mask, name not in keep_text)
    return df


#: the text cells a file reads as missing, compared as written (as ``pd.read_csv`` compares its
#: ``na_values``): blank, or one of :data:`~ragim.canonical.MISSING_TEXT`; pandas' own default
#: list (which also holds ``None``, a category in clinical data) is not used
FILE_MISSING_TEXT = ("", *MISSING_TEXT)


def _mark_missing_text(df: pd.DataFrame, text_columns: tuple[str, ...]) -> pd.DataFrame:
    """``df`` (read from Parquet) with the text cells of :data:`FILE_MISSING_TEXT` blanked in
    every column, so that a Parquet file reads as the same table written as CSV;
    ``text_columns`` stay text."""
    for c in df.columns:
        s = df[c]
        if not (pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)):
            continue
        mask = s.map(lambda v: isinstance(v, str) and v in FILE_MISSING_TEXT).to_numpy(dtype=bool)
        if mask.any():
            df[c] = _blank(s, mask, canonical_text(str(c)) not in text_columns)
    return df


#: spaces that spreadsheets and EHR exports put around numbers and that ``pd.read_csv`` keeps
#: as text (it trims only plain spaces): no-break, figure and narrow no-break space
WIDE_SPACES = "\u00a0\u2007\u202f"


def numbers_padded_with_wide_spaces(df: pd.DataFrame, skip: Iterable[str] = ()) -> pd.DataFrame:
    """``df`` with each text column whose values are all numbers once :data:`WIDE_SPACES`
    around them are removed (``"\u00a061"``, a no-break space before 61 from an Excel or EHR
    export) read as those numbers, as the column reads without them; columns in ``skip``
    (canonical names: ids, outcomes, declared categorical columns) and other text stay as
    they are. Before, such a cell made its column text and the advice was to declare ``61``
    missing, which blanked every real 61.

    >>> numbers_padded_with_wide_spaces(pd.DataFrame({"k": ["\u00a061", "5", None]}))["k"].tolist()
    [61.0, 5.0, nan]
    """
    skip = set(skip)
    for c in df.columns:
        s = df[c]
        if canonical_text(str(c)) in skip or not (
            pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)
        ):
            continue
        s = s.astype(object).where(s.notna(), None)
        padded = s.map(lambda v: isinstance(v, str) and v.strip(WIDE_SPACES + " ") != v)
        if not padded.any():
            continue
        stripped = s.map(lambda v: v.strip(WIDE_SPACES + " ") if isinstance(v, str) else v)
        numbers = pd.to_numeric(stripped.where(stripped.notna(), None), errors="coerce")
        if numbers.notna().sum() == s.notna().sum():
            df[c] = numbers.astype(float)
    return df


def _text_as_numbers(
    df: pd.DataFrame,
    path: Path,
    text_columns: tuple[str, ...],
    where: str,
    thousands: str | None = None,
) -> pd.DataFrame:
    """``df`` (read from Parquet) with each text column whose values all write numbers as
    numbers, as ``pd.read_csv`` reads the same cells (an all-VARCHAR export: ``"61"``,
    ``" 5 "``, ``"1.5e-3"``); ``text_columns`` (ids, outcomes, declared categorical columns)
    stay text. With ``thousands`` (``","`` or ``"."``), text is read as ``pd.read_csv(
    thousands=..., decimal=...)`` reads it (``"1,718"`` as 1718; with ``"."``, ``"1.718,5"``
    as 1718.5 and ``"1,5"`` as 1.5); without it, numbers written with a thousands separator
    are refused as in a CSV file."""
    for c in df.columns:
        s = df[c]
        if canonical_text(str(c)) in text_columns or not (
            pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)
        ):
            continue
        written = s.dropna()
        if len(written) == 0 or not all(isinstance(v, str) for v in written):
            continue
        if thousands is not None:
            s = s.astype(object).map(partial(_ungroup, thousands=thousands))
        elif hit := thousands_separator(written.to_numpy(dtype=object)):
            raise ValidationError(
                f"{where}{path}: "
                + thousands_problem(
                    canonical_text(str(c)),
                    hit,
                    "save the numbers without it, as numbers (a Parquet DOUBLE or DECIMAL "
                    "column) or as text without digit groups",
                )
            )
        bare = s.astype(object).map(lambda v: v.strip(WIDE_SPACES) if isinstance(v, str) else v)
        numbers = pd.to_numeric(bare.where(s.notna(), None), errors="coerce")
        if numbers.notna().sum() == len(written):
            df[c] = numbers
    return df


def _ungroup(v: Any, thousands: str) -> Any:
    """A text cell as ``pd.read_csv(thousands=thousands)`` reads it (with ``decimal=","``
    when the separator is ``"."``): ``"1.718,5"`` -> ``"1718.5"``; other values unchanged."""
    if not isinstance(v, str):
        return v
    return v.replace(thousands, "").replace("," if thousands == "." else ".", ".")


def _decimals_as_numbers(df: pd.DataFrame, text_columns: tuple[str, ...]) -> pd.DataFrame:
    """``df`` (read from Parquet) with its DECIMAL columns (``decimal.Decimal`` objects, as SQL
    exports write ``NUMERIC(6,2)``) as float numbers, as the same table written as CSV reads;
    ``text_columns`` keep their values (ids and outcomes compare them in canonical form)."""
    for c in df.columns:
        s = df[c]
        if (
            canonical_text(str(c)) not in text_columns
            and pd.api.types.is_object_dtype(s)
            and pd.api.types.infer_dtype(s, skipna=True) == "decimal"
        ):
            df[c] = pd.to_numeric(s, errors="coerce").astype(float)
    return df


def _may_hold_grouped(v: np.ndarray) -> bool:
    """Whether float values read from a CSV may have been numbers written with a thousands
    separator (``1.718`` for 1718): some have 1 to 3 decimals and lie in [1, 1000), and at
    least 2 distinct whole numbers lie in [100, 1000). :func:`thousands_separator` then
    decides on the text as written."""
    v = v[np.isfinite(v)]
    whole = v == np.round(v)
    milli = v * 1000
    three = (
        ~whole & (np.abs(v) >= 1) & (np.abs(v) < 1000) & (np.abs(milli - np.round(milli)) < 1e-6)
    )
    hundreds = v[whole & (np.abs(v) >= 100) & (np.abs(v) < 1000)]
    return bool(three.any()) and len(np.unique(hundreds)) >= 2


def _check_thousands(
    df: pd.DataFrame, path: Path, sep: str, text_columns: tuple[str, ...], where: str
) -> None:
    """Refuse a CSV column of numbers written with a thousands separator
    (:func:`~ragim.schema.thousands_separator`): pandas reads ``1.718`` as 1.718, and
    ``1,718`` as text. Float columns that may hold such numbers are read again as text."""
    found: dict[str, tuple[str, list[str], list[str]]] = {}
    floats = []
    for c in df.columns:
        if canonical_text(str(c)) in text_columns:
            continue
        s = df[c]
        if pd.api.types.is_float_dtype(s):
            if _may_hold_grouped(s.to_numpy(dtype=float)):
                floats.append(c)
        elif pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s):
            if hit := thousands_separator(s.dropna().to_numpy(dtype=object)):
                found[c] = hit
    if floats:
        written = pd.read_csv(path, sep=sep, usecols=floats, dtype=str, encoding="utf-8-sig")
        for c in floats:
            if hit := thousands_separator(written[c].dropna().to_numpy(dtype=object)):
                found[c] = hit
    if found:
        c, hit = next((c, found[c]) for c in df.columns if c in found)
        raise ValidationError(
            f"{where}{path}: "
            + thousands_problem(
                canonical_text(str(c)),
                hit,
                f"read the file with thousands={hit[0]!r} (load_task_folder, read_rows; "
                f"--thousands {hit[0]!r}), or save the numbers without it",
            )
        )


def _check_grouped(
    df: pd.DataFrame,
    path: Path,
    sep: str,
    thousands: str,
    text_columns: tuple[str, ...],
    where: str,
) -> None:
    """With ``thousands`` declared, refuse a number column holding a value that uses the
    separator but is no digit-grouped number (a group after it has 3 digits): with
    ``thousands='.'``, pandas reads ``100.0`` as 1000 and ``1.5`` as 15."""
    decimal = "," if thousands == "." else "."
    grouped = re.compile(
        rf"-?[0-9]{{1,3}}({re.escape(thousands)}[0-9]{{3}})+({re.escape(decimal)}[0-9]*)?"
    )
    numeric = [
        c
        for c in df.columns
        if canonical_text(str(c)) not in text_columns and pd.api.types.is_numeric_dtype(df[c])
    ]
    if not numeric:
        return
    written = pd.read_csv(
        path, sep=sep, usecols=numeric, dtype=str, keep_default_na=False, encoding="utf-8-sig"
    )
    for c in numeric:
        vals = [v.strip() for v in written[c] if thousands in v]
        bad = list(dict.fromkeys(v for v in vals if not grouped.fullmatch(v)))
        if not bad:
            continue
        name = canonical_text(str(c))
        try:
            as_read = float(bad[0].replace(thousands, "").replace(decimal, "."))
            misread = f" ({bad[0]!r} as {as_read:g})"
        except ValueError:
            misread = ""
        if thousands == "." and all(_DOT_DECIMAL.fullmatch(v) for v in bad):
            fix = (
                "this file writes decimals with '.', so '.' cannot also be its thousands "
                "separator: read it without thousands= and save the column(s) written with '.' "
                "digit groups without them (1025), or convert them before reading"
            )
        else:
            fix = "save the numbers without digit groups, or read the file without thousands="
        raise ValidationError(
            f"{where}{path}: column {name!r} holds {bad[:3]}, which are not numbers grouped with "
            f"thousands={thousands!r} (a group after the separator has 3 digits) and would be "
            f"misread{misread}; {fix}"
        )


def _check_na_columns(path: Path, na: NaValues, names: list[str], where: str) -> None:
    """Refuse per-column ``na_values`` naming a column the file does not have."""
    if not isinstance(na, dict):
        return
    cols = [canonical_text(n) for n in names]
    unknown = [c for c in na if c not in cols]
    if unknown:
        raise ValidationError(
            f"na_values names column(s) {unknown} that {where}{path} does not have "
            f"(columns: {cols[:10]})"
        )


def read_table(
    path: str | Path,
    *,
    sep: str = ",",
    text_columns: tuple[str, ...] = (),
    categorical: Iterable[str] = (),
    all_text: bool = False,
    where: str = "",
    na_values: Any = None,
    thousands: str | None = None,
) -> pd.DataFrame:
    """Read one CSV or Parquet table with the checks every ragim reader applies.

    Parameters
    ----------
    path : a ``.csv`` (UTF-8, a header row) or ``.parquet`` file.
    sep : the CSV field separator.
    text_columns : columns read as text (identifiers): never turned into numbers, so
        ``0001`` keeps its zeros.
    categorical : feature columns declared categorical (``schema.json``, a model's schema):
        read as the text written, never turned into numbers, so a ward ``3E1`` stays ``3E1``
        (pandas would read 30) and ``+5`` stays ``+5``; levels are then compared in
        canonical form (:func:`~ragim.canonical.canonical_level`: ``04``, ``4.0`` and ``4``
        are one level). Missing text and ``na_values`` apply to them as to other features.
    all_text : read every column as text (blank cells become None).
    where : how the caller names the file in messages (e.g. ``"--rows "``).
    na_values : values that mean "missing", besides blank cells and ``NA``, ``N/A``, ``NaN``,
        ``null``, ... (:data:`FILE_MISSING_TEXT`, in CSV and Parquet alike; not pandas' own
        default list, so the text ``None`` is a value), as
        in ``pd.read_csv(na_values=...)``: a value or a list for every column but
        ``text_columns``, or a dict ``{column: value or list}`` for those columns only; numbers
        match by value (``-99`` matches ``-99.0``). Codes that blank every cell of a column
        holding two or more of them (``F,M`` on a sex column) are said in a
        :class:`~ragim.errors.DataWarning` (:func:`warn_codes_filling_columns`).
    thousands : the thousands separator of a CSV file's numbers, as in
        ``pd.read_csv(thousands=...)``: ``"."`` for ``1.718`` (1718) as a German spreadsheet
        writes it, which also makes ``","`` the decimal mark (``1.718,5``); ``","`` for
        ``1,718`` (quoted, in a comma-separated file). Without it, a column of numbers written
        with one is refused (see
        :func:`~ragim.schema.thousands_separator`). Parquet files store numbers as numbers;
        a Parquet text column whose values all write numbers is read as numbers, as the same
        cells of a CSV file are (``thousands`` does not apply to it).

    Raises
    ------
    ValidationError
        One line: a missing, empty, unreadable or non-UTF-8 file, duplicated or blank column
        names, a header read as one column that holds another separator (the message names it
        and says ``--sep``), a ``thousands`` that is not one character (other than a digit or
        a sign), or, without ``thousands``, a column of numbers written with a thousands
        separator (``1.718`` beside ``961``: the message names the column and says
        ``thousands=``).
    """
    path = Path(path)
    na = na_value_spec(na_values)
    text_columns = tuple(canonical_text(str(c)) for c in text_columns)
    keep = (*text_columns, *(canonical_text(str(c)) for c in categorical))  # never numbers
    if not isinstance(sep, str) or len(sep) != 1:
        raise ValidationError(f"--sep must be one character such as ',' or ';', got {sep!r}")
    if thousands is not None and (
        not isinstance(thousands, str)
        or len(thousands) != 1
        or thousands.isdigit()
        or thousands in "-+"
    ):
        raise ValidationError(
            f"--thousands must be one character such as '.' or ',' (not a digit or a sign), "
            f"got {thousands!r}"
        )
    if not path.is_file():
        what = (
            "it is a folder; give a file in it"
            if path.is_dir()
            else "it is not a regular file (a device, pipe or socket)"
            if path.exists()
            else "no such file"
        )
        raise ValidationError(f"cannot read {where}{path}: {what}")
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            names = [
                str(n)
                for n in pq.read_schema(path).names
                if not str(n).startswith("__index_level_")
            ]
            _check_header(path, names, where)
            _check_na_columns(path, na, names, where)
            # DECIMAL and REAL (float32) columns read as the same table written as CSV
            df = widen_floats(_decimals_as_numbers(_read_parquet(path), keep))
            if all_text:
                return df.astype(object).where(df.notna(), None)
            df = _mark_missing_text(df, keep)  # as a CSV file's "NA", "null", ...
            # numbers stored as text (an all-VARCHAR export) read as the same CSV cells do
            df = _text_as_numbers(df, path, keep, where, thousands)
            df = _mark_missing(df, na, text_columns, keep) if na else df
            df.columns = [canonical_text(str(c)) for c in df.columns]
            if na:
                warn_codes_filling_columns(df, na, text_columns, partial(_raw_parquet, path), path)
            return df
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            first = fh.readline()
        if not first.strip():
            raise ValidationError(
                f"{where}{path} is empty; it needs a header row and one row per line"
            )
        names = next(csv.reader([first], delimiter=sep))
        if len(names) == 1:
            hint = [x for x in _SEPARATORS if x != sep and x in names[0]]
            if hint:
                raise ValidationError(
                    f"{where}{path} was read as one column ({names[0].strip()[:60]!r}); it looks "
                    f"{_sep_name(hint[0])}-separated: pass --sep {hint[0]!r} "
                    "(sep= in Python), or save the file comma-separated"
                )
        _check_header(path, [n.strip() for n in names], where)
        _check_na_columns(path, na, names, where)
        if all_text:
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            df = df.astype(object).where(df != "", None)
        else:
            df = pd.read_csv(
                path,
                sep=sep,
                dtype={n: str for n in names if canonical_text(n) in keep},
                encoding="utf-8-sig",
                keep_default_na=False,  # one documented list: FILE_MISSING_TEXT, not pandas'
                na_values={
                    n: [
                        *FILE_MISSING_TEXT,
                        *(na_codes_for(na, n) if canonical_text(n) not in text_columns else ()),
                    ]
                    for n in names
                },
                **(
                    {}
                    if thousands is None
                    else {"thousands": thousands, "decimal": "," if thousands == "." else "."}
                ),
                # pandas' C parser ignores a separator of more than one byte in UTF-8 (a
                # no-break space) and leaves the numbers as text; its Python parser reads them
                **({"engine": "python"} if thousands and len(thousands.encode()) > 1 else {}),
            )
            if na:  # cells padded with spaces (" unknown"), which pandas compares as written
                df = _mark_missing(df, na, text_columns, keep)
            df = numbers_padded_with_wide_spaces(df, {*text_columns, *keep})
            if thousands is None:
                _check_thousands(df, path, sep, keep, where)
            else:
                _check_grouped(df, path, sep, thousands, keep, where)
    except ValidationError:
        raise
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start : exc.start + 1].hex()
        raise ValidationError(
            f"cannot read {where}{path}: it is not UTF-8 text (byte 0x{byte} at position "
            f"{exc.start}, as written by Excel's plain 'CSV' or Windows-1252); save it "
            f"as 'CSV UTF-8', or convert it, e.g. iconv -f cp1252 -t utf-8 {path.name} > utf8.csv"
        ) from exc
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        msg = " ".join(str(exc).split())
        raise ValidationError(
            f"cannot read {where}{path}: {msg[:200]}; check the separator (--sep) and the quoting"
        ) from exc
    df.columns = [canonical_text(str(c)) for c in df.columns]
    if na and not all_text:
        warn_codes_filling_columns(
            df,
            na,
            text_columns,
            lambda cols: pd.read_csv(
                path,
                sep=sep,
                dtype=str,
                keep_default_na=False,
                encoding="utf-8-sig",
                usecols=lambda c: canonical_text(str(c)) in cols,
            ).set_axis(cols, axis=1),
            path,
            where,
        )
    return df


def _read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file as pandas reads it, with a named index back among the columns: a table
    saved after ``set_index("patient_id")`` holds its ids as a column of the file's schema,
    which ``pd.read_parquet`` would make the index, and ragim would not see."""
    df = pd.read_parquet(path, columns=columns)
    if any(n is not None for n in df.index.names):
        df = df.reset_index()
        if columns is not None:
            df = df[[c for c in df.columns if c in columns]]
    return df


def _raw_parquet(path: Path, columns: list[str]) -> pd.DataFrame:
    """The ``columns`` (canonical names) of a Parquet file as stored."""
    raw = _read_parquet(path)
    return raw.set_axis([canonical_text(str(c)) for c in raw.columns], axis=1)[columns]


def warn_codes_filling_columns(
    df: pd.DataFrame,
    na: NaValues,
    skip: tuple[str, ...],
    read_raw,
    path: Path,
    where: str = "",
) -> list[str]:
    """One :class:`~ragim.errors.DataWarning` when declared missing-value codes blanked every
    cell of a column that held at least two of them (``--na-values F,M`` on a column coded
    F/M): such codes are that column's values, not missing values, and the column silently
    became empty. ``read_raw(columns)`` reads those columns of the file as written (text);
    only columns left entirely blank are read again. Returns the columns named."""
    empty = [c for c in df.columns if c not in skip and len(df) > 1 and df[c].isna().all()]
    empty = [c for c in empty if na_codes_for(na, c)]
    halved = _binary_halved(df, na, skip, read_raw)
    if not empty:
        return halved
    raw = read_raw(empty)
    found = []
    for c in empty:
        cells = raw[c].map(lambda v: v.strip() if isinstance(v, str) else v)
        cells = cells[cells.notna() & ~cells.isin(FILE_MISSING_TEXT)]
        hit = cells[missing_code_mask(cells, na_codes_for(na, c))]
        if len(hit) == len(cells) and hit.nunique() >= 2:
            counts = ", ".join(f"{v!r} x{n}" for v, n in hit.value_counts().items())
            found.append(f"{c!r} ({counts})")
    if found:
        warnings.warn(
            f"{where}{path}: the missing-value codes (na_values) blank every cell of column(s) "
            f"{'; '.join(found)}: codes that fill a whole column with several values are "
            "usually its values (F/M), not missing values; give na_values by column "
            "(na_values={'column': [...]}) or leave those codes out",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    return found + halved


def _binary_halved(df: pd.DataFrame, na: NaValues, skip: tuple[str, ...], read_raw) -> list[str]:
    """One :class:`~ragim.errors.DataWarning` when codes given for every column (a list, not a
    dict) blanked every cell of one of the two values of a column that held only two (``0``
    of a 0/1 flag, under ``--na-values 0`` meant for labs never measured): the column is then
    one value and blanks, its zeros read as missing. Returns the columns named."""
    if isinstance(na, dict) or not na or len(df) < 2:
        return []
    suspects = [
        c
        for c in df.columns
        if c not in skip and df[c].isna().any() and df[c].nunique(dropna=True) == 1
    ]
    if not suspects:
        return []
    raw = read_raw(suspects)
    found = []
    for c in suspects:
        cells = raw[c].map(lambda v: v.strip() if isinstance(v, str) else v)
        cells = cells[cells.notna() & ~cells.isin(FILE_MISSING_TEXT)]
        coded = missing_code_mask(cells, na)
        hit, kept = cells[coded], cells[~coded]
        if hit.nunique() == 1 and kept.nunique() == 1:
            found.append(f"{c!r} (every {hit.iloc[0]!r}, beside {kept.iloc[0]!r})")
    if found:  # no file or count named: one line for a folder of files alike
        warnings.warn(
            "the missing-value codes (na_values) given for every column blank one of the two "
            f"values of column(s) {'; '.join(found)}, which are then one value and blanks: a "
            "0/1 column's 0 is a value, not a missing one; give na_values by column "
            "(na_values={'column': [...]}) for the columns the codes are meant for",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    return found


#: a code written like a number in exponent notation: digits, ``E``, one or two digits, no sign
#: and no decimal point (ward ``3E1``, read as 30); its value is a whole number below 1000
EXPONENT_CODE = re.compile(r"[0-9]{1,3}[eE][0-9]{1,2}")
_EXPONENT_CELL = re.compile(
    r"(?:^|[,;\t|\"])\s*[0-9]{1,3}[eE][0-9]{1,2}\s*(?=[,;\t|\"\r\n]|$)", re.M
)


def exponent_codes(
    path: str | Path, df: pd.DataFrame, *, sep: str = ","
) -> dict[str, dict[float, str]]:
    """The number columns of ``df`` (``path`` as :func:`read_table` read it) whose file writes
    some values as codes in exponent notation (ward ``3E1``, ``1E2``: see
    :data:`EXPONENT_CODE`), which pandas reads as numbers (30, 100): per column, each such
    number and the text written for it. Numbers of 1000 and more in exponent notation (a
    viral load ``1E6``) and those with a sign or a decimal point (``1e-3``, ``2.5E2``) are
    real numbers, not listed. Messages quote the text (:meth:`FeatureSchema.infer`'s
    ``written=``).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("ward,lab\\n3E1,1e-3\\n30,2E6\\n1E2,0.5\\n")
    >>> exponent_codes(p, read_table(p))
    {'ward': {30.0: '3E1', 100.0: '1E2'}}
    """
    path = Path(path)
    floats = [c for c in df.columns if pd.api.types.is_float_dtype(df[c])]
    if not floats:
        return {}
    if path.suffix.lower() == ".parquet":  # text columns read as numbers (_text_as_numbers)
        import pyarrow as pa
        import pyarrow.parquet as pq

        stored = pq.read_schema(path)
        texts = [
            n
            for n in stored.names
            if canonical_text(str(n)) in floats
            and (
                pa.types.is_string(stored.field(n).type)
                or pa.types.is_large_string(stored.field(n).type)
            )
        ]
        if not texts:  # numbers stored as numbers hold no text to quote: no second read
            return {}
        text = _read_parquet(path, columns=texts)
        text.columns = [canonical_text(str(c)) for c in text.columns]
        text = text.apply(lambda s: s.map(lambda v: v if isinstance(v, str) else ""))
    else:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            if not _EXPONENT_CELL.search(fh.read()):
                return {}
        text = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        text.columns = [canonical_text(str(c)) for c in text.columns]
    found: dict[str, dict[float, str]] = {}
    for c in floats:
        if c not in text.columns:
            continue
        for v in pd.unique(text[c].str.strip()):
            if EXPONENT_CODE.fullmatch(v) and float(v) < 1000:
                found.setdefault(c, {}).setdefault(float(v), v)
    return found


def sniff_separator(path: str | Path, default: str = ",") -> str:
    """The field separator of a CSV file, from its header row: comma, semicolon or tab,
    whichever splits the header into the most columns (``default`` when it does as well, as
    for a one-column header, a Parquet file or a file that does not exist).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "descriptions.csv"
    >>> _ = path.write_text("task_id;description\\na;Predict sepsis, adults\\n")
    >>> sniff_separator(path), sniff_separator(path, default="\\t")
    (';', ';')
    """
    path = Path(path)
    if not (isinstance(default, str) and len(default) == 1):
        return default  # read_table refuses it in one line
    if path.suffix.lower() == ".parquet" or not path.is_file():
        return default
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        first = fh.readline()
    counts = {s: len(next(csv.reader([first], delimiter=s), [])) for s in (default, ",", ";", "\t")}
    most = max(counts.values())
    return next(s for s, n in counts.items() if n == most)


def _need_column(
    df: pd.DataFrame, name: str, place: str, what: str, fix: str, taken: Iterable[str] = ()
) -> None:
    """Raise, naming the columns (the first 12, then how many more), the column most likely
    meant (same name in another case, or a close spelling; never one of ``taken``, such as
    the model's features) and ``fix``, unless ``df`` has the ``what`` column ``name``."""
    if name not in df.columns:
        cols, taken = [str(c) for c in df.columns], {str(t).casefold() for t in taken}
        free = [c for c in cols if c.casefold() not in taken]
        folded = [c for c in free if c.strip().casefold() == str(name).strip().casefold()]
        near = folded or difflib.get_close_matches(str(name), free, n=1, cutoff=0.75)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        more = f" and {len(cols) - 12} more" if len(cols) > 12 else ""
        raise ValidationError(
            f"{place} has no {what} column {name!r}{hint} (columns: {cols[:12]}{more}); {fix}"
        )


def read_rows(
    path: str | Path,
    *,
    schema: FeatureSchema | None = None,
    outcome: str | None = None,
    patient_id: str | None = None,
    sep: str = ",",
    pos_label=None,
    ignore_outcome: str | None = None,
    where: str = "--rows",
    na_values: Any = None,
    thousands: str | None = None,
) -> PatientRows:
    """Read patients from a CSV file; see the module docstring.

    Parameters
    ----------
    path : the CSV file (UTF-8; a header row, then one patient per row).
    schema : the model's feature schema; the file's feature columns must be exactly its
        features (in any order), and their values must fit it.
    outcome : the outcome column (0/1 or true/false, or any two values with ``pos_label``);
        it must exist when given.
    patient_id : the patient-id column (read as text); it must exist when given. Without it,
        a column named ``patient_id`` is used as the ids when present (and not a feature).
    sep : the field separator (``";"`` for files saved by a European spreadsheet).
    pos_label : the outcome value that marks the event, when outcomes are not 0/1.
    ignore_outcome : an outcome column dropped unread, when only risks are wanted (its values
        may be coded any way); it must exist when given.
    where : how the caller names the file in messages (``--rows``).
    na_values : values that mean "missing" in the feature columns (missing-value codes such
        as ``"."`` or ``-99``), as for :func:`read_table`; never in the ids. In the outcome a
        declared code (:func:`outcome_na_codes`: not 0, 1, true/false or ``pos_label`` unless
        named for the outcome column) is a blank outcome, which is refused naming its rows
        (as in a task folder), never read as a third label.
    thousands : the thousands separator of the file's numbers (``"."`` for ``1.718``, which
        also makes ``","`` the decimal mark), as for :func:`read_table`.

    Returns
    -------
    PatientRows

    Raises
    ------
    ValidationError
        One line naming the file, the problem and the fix.
    """
    path = Path(path)
    ids_col = patient_id or DEFAULT_PATIENT_ID
    text = (ids_col,) if outcome is None else (ids_col, outcome)  # outcomes as written
    df = read_table(
        path,
        sep=sep,
        text_columns=text,
        # the model's categorical features as written: ward 3E1 is not 30, +4 is not 4
        categorical=() if schema is None else schema.names_of("categorical"),
        where=f"{where} ",
        na_values=na_values,
        thousands=thousands,
    )
    if len(df) == 0:
        raise ValidationError(f"{where} {path} has a header but no patient rows")
    # an outcome is never one of the model's features nor the patient ids
    taken = [*(schema.names if schema is not None else ()), ids_col]
    if ignore_outcome is not None:
        _need_column(
            df,
            ignore_outcome,
            f"{where} {path}",
            "outcome",
            "name it with --outcome, or leave --outcome out",
            taken,
        )
        df = df.drop(columns=[ignore_outcome])
    y = None
    if outcome is not None:
        _need_column(
            df,
            outcome,
            f"{where} {path}",
            "outcome",
            "name the 0/1 outcome column with --outcome",
            taken,
        )
        written = df[outcome].to_numpy(dtype=object, copy=True)  # pandas may give a read-only view
        # a declared missing-value code is a blank outcome, as in a task folder:
        # binary_outcome names those rows
        codes = outcome_na_codes(na_value_spec(na_values), outcome, pos_label)
        written[missing_code_mask(df[outcome], codes)] = None
        y = binary_outcome(
            written,
            pos_label=pos_label,
            where=f"{where} {path}: outcome column {outcome!r}",
        )
    ids = None
    if patient_id is not None:
        _need_column(df, patient_id, f"{where} {path}", "patient-id", "name it with --patient-id")
        ids = df[patient_id]
    elif DEFAULT_PATIENT_ID in df.columns and (
        schema is None or DEFAULT_PATIENT_ID not in schema.names
    ):
        patient_id, ids = DEFAULT_PATIENT_ID, df[DEFAULT_PATIENT_ID]
    if ids is not None and ids.isna().any():
        rows = (np.where(ids.isna())[0] + 1).tolist()[:5]
        raise ValidationError(
            f"{where} {path}: patient-id column {patient_id!r} is empty in data row(s) {rows}"
        )
    X = df.drop(columns=[c for c in (outcome, patient_id) if c is not None])
    if schema is not None:
        X = _match_schema(X, schema, path, where)
    ids = None if ids is None else pd.Series(canonical_ids(ids, "patient id"), name=patient_id)
    if ids is not None and ids.duplicated().any():
        repeated = list(dict.fromkeys(ids[ids.duplicated()]))
        raise ValidationError(
            f"{where} {path}: patient id(s) {repeated[:5]} appear on more than one row "
            f"({int(ids.duplicated(keep=False).sum())} rows); each row must be a different "
            "patient, or the same patients count twice in every figure: drop the repeats"
        )
    empty = [c for c in X.columns if len(X) > 1 and X[c].isna().all()]
    if empty:
        warnings.warn(
            f"{where} {path}: column(s) {empty[:10]} are empty in all {len(X)} rows; the model "
            "fills in its usual value for every patient, so these features tell it nothing "
            "here (fill them in if the data exist)",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    return PatientRows(X=X, y=y, ids=ids, path=path)


#: the share of rows that must repeat another row exactly before :func:`warn_repeated_rows` warns
REPEAT_SHARE = 0.10
#: how many times more repeats than chance (independent columns) :func:`warn_repeated_rows` needs
REPEAT_CHANCE_FACTOR = 10.0


def repeated_rows(X: pd.DataFrame, y=None) -> tuple[int, float, tuple[int, int] | None]:
    """The rows of ``X`` (with their outcome ``y``) that repeat an earlier row exactly.

    Returns ``(count, chance, example)``: how many rows equal an earlier row in every feature
    and the outcome (a blank equals a blank); how many coinciding pairs of rows chance would
    give; and the 0-based positions of the first repeat and of the row it repeats (None
    without one). ``chance`` is ``n (n - 1) / 2`` times the probability that two patients
    agree on every column, taking the columns as independent: per column, the sum of the
    squared shares of the values that at least two *different* rows hold. A value that only
    one distinct row holds (a lab value measured to its decimals) is taken as a measurement no
    other patient shares by chance, so copies of a row cannot make their own values look
    common, while a yes/no finding, a category or an age in years that many different rows
    share counts with its share of the rows.

    >>> X = pd.DataFrame({"age": [61.5, 47.0, 61.5, 55.0], "sex": ["F", "M", "F", "M"]})
    >>> count, chance, example = repeated_rows(X, [1, 0, 1, 0])
    >>> count, chance, example
    (1, 0.0, (2, 0))
    """
    frame = pd.DataFrame(X).reset_index(drop=True)
    frame.columns = range(frame.shape[1])
    if y is not None:
        frame[frame.shape[1]] = np.asarray(y).reshape(-1)
    n = len(frame)
    if n < 2 or frame.shape[1] == 0:
        return 0, 0.0, None
    again = frame.duplicated(keep="first").to_numpy()
    count = int(again.sum())
    q = 1.0
    for c in frame.columns:
        codes, _ = pd.factorize(frame[c], use_na_sentinel=False)
        rows = np.bincount(codes)
        distinct_rows = np.bincount(codes[~again], minlength=len(rows))
        q *= float(np.sum((rows[distinct_rows >= 2] / n) ** 2))
    chance = n * (n - 1) / 2 * q
    if count == 0:
        return 0, chance, None
    first = int(np.argmax(again))
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    same = np.flatnonzero(hashes[:first] == hashes[first])
    return count, chance, (first, int(same[0]) if len(same) else 0)


def warn_repeated_rows(
    X: pd.DataFrame,
    y=None,
    *,
    where: str = "the rows",
    fix: str = "drop the copies, or give patient ids (--patient-id) so ragim can check them",
    stacklevel: int | None = None,
) -> int:
    """One :class:`~ragim.errors.DataWarning` when many rows are exact copies of another row.

    A row that repeats another in every feature and the outcome is, far more often than not,
    the same patient written twice (an export joined to a many-row table, a file pasted
    twice), not a new one. Adapting on it (``ZeroShotClassifier.fit``, ``adapt_params``,
    ``ragim adapt``) and scoring on it (``score_predictions(X=...)``, ``ragim score``) count
    it as one more patient: the adaptation's evidence is multiplied (6 patients written 20
    times look like 120 and pick a steep recalibration), and the score's bootstrap CIs
    resample copies as independent patients (a 95% CI of 1.000 to 1.000). Nothing is
    dropped; the warning says how many rows repeat another, of how many, an example and the
    fix.

    It warns only when the repeats are material and not explained by chance: at least 2
    rows repeat another, they are at least :data:`REPEAT_SHARE` (10%) of the rows, and they
    outnumber :data:`REPEAT_CHANCE_FACTOR` (10) times the coinciding pairs that chance gives
    (:func:`repeated_rows`). With continuous features (age, blood pressure, a lab value) two
    different patients agree exactly on all of them almost never, so chance allows next to no
    repeats and copies warn. With only binary or categorical features (or one coarse number
    among them) many real patients share a row; chance then accounts for as many coinciding
    rows as there are, and nothing warns (copies there cannot be told from real patients, and
    are not flagged). The rule is conservative: a repeated row is at most one coinciding
    pair, and the factor 10 leaves room for features that go together more often than
    independence assumes.

    Returns the number of rows that repeat another (whether or not it warned).

    >>> import warnings
    >>> X = pd.DataFrame({"age": [61.5, 47.0, 55.2] * 3, "sbp": [141.0, 118.0, 130.0] * 3})
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warn_repeated_rows(X, [1, 0, 0] * 3, where="rows.csv")
    6
    >>> print(w[0].message)  # doctest: +ELLIPSIS
    rows.csv: 6 of 9 rows repeat another row exactly (every feature and the outcome; data row 4 ...
    """
    count, chance, example = repeated_rows(X, y)
    n = len(X)
    if count < 2 or count < REPEAT_SHARE * n or count <= REPEAT_CHANCE_FACTOR * chance:
        return count
    later, earlier = example
    warnings.warn(
        f"{where}: {count} of {n} rows repeat another row exactly (every feature and the "
        f"outcome; data row {later + 1} repeats data row {earlier + 1}): a copy is not a new "
        "patient, but the adaptation's evidence and the score's CIs count each row as one, so "
        f"they are overconfident (as if {n} patients, not {n - count}); {fix}",
        DataWarning,
        stacklevel=user_stacklevel() if stacklevel is None else stacklevel + 1,
    )
    return count


def case_only_names(wanted: list[str], found: list[str]) -> str:
    """A clause naming the columns of ``found`` that match one of ``wanted`` but for letter case
    (``Age`` for ``age``), or ``""``: column names are matched as written.

    >>> case_only_names(["age", "sex"], ["Age", "SEX", "bmi"])
    "'Age' and 'age', 'SEX' and 'sex' differ only in letter case (column names match as written)"
    """
    folded = {w.casefold(): w for w in wanted}
    pairs = [(f, folded[f.casefold()]) for f in found if f.casefold() in folded]
    if not pairs:
        return ""
    return (
        ", ".join(f"{f!r} and {w!r}" for f, w in pairs[:4])
        + (", ..." if len(pairs) > 4 else "")
        + " differ only in letter case (column names match as written)"
    )


def _match_schema(X: pd.DataFrame, schema: FeatureSchema, path: Path, where: str) -> pd.DataFrame:
    cols = list(X.columns)
    missing = [n for n in schema.names if n not in cols]
    extra = [c for c in cols if c not in schema.names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing the model's features {missing[:10]}")
        if extra:
            parts.append(f"has columns the model does not use {extra[:10]}")
        fix = "add the missing columns (empty cells count as missing values)" if missing else ""
        if extra:
            fix += (
                ("; " if fix else "")
                + "drop the extra columns, or name the outcome and id columns with "
                "--outcome and --patient-id"
            )
        if case := case_only_names(missing, extra):
            parts.append(case)
        raise ValidationError(f"{where} {path} does not match the model: {'; '.join(parts)}; {fix}")
    X = X[schema.names]
    schema.validate_frame(X, where=f"{where} {path}")
    return X


__all__ = [
    "DEFAULT_PATIENT_ID",
    "EXPONENT_CODE",
    "PatientRows",
    "WIDE_SPACES",
    "numbers_padded_with_wide_spaces",
    "read_rows",
    "read_table",
    "exponent_codes",
    "repeated_rows",
    "sniff_separator",
    "warn_repeated_rows",
]
