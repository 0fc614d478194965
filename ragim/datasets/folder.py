"""Bring your own tasks: a folder of CSV or Parquet files plus a descriptions file.

Expected layout::

    my_tasks/
      descriptions.csv        task_id,description[,site,subgroup,...]   (extra columns -> metadata)
      schema.json             optional: {"features": [{"name", "type", "unit", "description"}, ...]}
      data/
        <task_id>.csv         feature columns + the outcome column (default "y")
        <task_id>.parquet     (either format; optional "patient_id" column for overlap checks)

How values are read (docs/own_tasks.md):

* task ids and every metadata column of ``descriptions.csv`` are read as **text**, so a
  ward ``007`` or a site ``01`` keeps its leading zeros; group codes compare by value
  (``--site 1`` finds a site written ``01``).
* ``patient_id`` is read as text in every file: ``0001`` and ``1`` are different patients,
  and the same id in two files is the same patient (that is how overlap is found). Ids of
  different files that differ only by leading zeros are named in a warning.
* feature columns may come in any order; their types are inferred from *all* files. A column
  declared categorical in ``schema.json`` is read as the text written (ward ``3E1`` is not 30).
* outcomes are 0/1 or true/false; other codings need ``pos_label``.

Examples
--------
>>> import tempfile, pathlib, pandas as pd, numpy as np
>>> d = pathlib.Path(tempfile.mkdtemp()); (d / "data").mkdir()
>>> pd.DataFrame({"task_id": ["a"], "description": ["Predict sepsis in adults"]}).to_csv(
...     d / "descriptions.csv", index=False)
>>> pd.DataFrame({"lactate": np.linspace(1, 4, 10), "y": [0, 1] * 5}).to_csv(
...     d / "data" / "a.csv", index=False)
>>> load_task_folder(d)["a"].n_rows
10
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ragim.canonical import (
    canonical_id,
    canonical_ids,
    canonical_level,
    canonical_text,
    level_key,
    patient_id_near_misses,
)
from ragim.checks import repeated
from ragim.errors import DataWarning, ValidationError, name_some, user_stacklevel
from ragim.rows import (
    case_only_names,
    exponent_codes,
    missing_code_mask,
    na_value_spec,
    outcome_na_codes,
    read_table,
    sniff_separator,
)
from ragim.schema import (
    FeatureSchema,
    missing_codes,
    missing_marker_hint,
    number_text_advice,
    scale_gaps,
    truth_as_numbers,
    value_kind,
    warn_missing_codes,
    warn_scale_gaps,
)
from ragim.tasks import Task, TaskCollection, binary_outcome


def _patient_ids(df: pd.DataFrame, column: str, file: Path) -> list[str]:
    try:
        ids = canonical_ids(df[column], "patient id")
    except ValidationError as exc:
        blank = [
            i + 2
            for i, v in enumerate(df[column])
            if v is None
            or (isinstance(v, float) and np.isnan(v))
            or (isinstance(v, str) and not v.strip())
        ]
        raise ValidationError(
            f"{file}: column {column!r} has blank ids (lines {blank[:5]}): {exc}"
        ) from None
    lines: dict[str, list[int]] = {}
    for i, pid in enumerate(ids):
        lines.setdefault(pid, []).append(i + 2)  # line 1 is the header
    dupes = {pid: at for pid, at in lines.items() if len(at) > 1}
    if dupes:
        shown = "; ".join(f"{pid!r} on lines {at[:5]}" for pid, at in sorted(dupes.items())[:3])
        raise ValidationError(
            f"{file}: patient id(s) {sorted(dupes)[:5]} appear on more than one row ({shown}); "
            "each row of a task must be a different patient"
        )
    return ids


def _data_files(data_dir: Path) -> dict[str, Path]:
    """The data files of a folder by task id (a ``.csv`` or ``.parquet`` file's name without
    its extension, in any case, as canonical text).

    Raises
    ------
    ValidationError
        When two files map to one task id (``t0.csv`` and ``t0.parquet``, or ``t0.csv`` and
        ``t0.CSV``): which one holds the task cannot be guessed.
    """
    if not data_dir.is_dir():
        return {}
    by_id: dict[str, list[Path]] = {}
    for p in sorted(data_dir.glob("*")):
        if p.is_file() and p.suffix.lower() in (".csv", ".parquet"):
            by_id.setdefault(canonical_text(p.stem), []).append(p)
    clashes = {t: ps for t, ps in by_id.items() if len(ps) > 1}
    if clashes:
        shown = "; ".join(
            f"task {t!r} has {' and '.join(p.name for p in ps)}"
            for t, ps in sorted(clashes.items())[:5]
        )
        raise ValidationError(
            f"{data_dir} holds more than one data file for a task ({shown}); keep one file per "
            "task and move or delete the others"
        )
    return {t: ps[0] for t, ps in by_id.items()}


def load_task_folder(
    path: str | Path,
    *,
    outcome: str = "y",
    patient_id: str = "patient_id",
    name: str | None = None,
    pos_label: Any = None,
    sep: str = ",",
    na_values: Any = None,
    thousands: str | None = None,
) -> TaskCollection:
    """Read a task folder (see module docstring) into a validated :class:`TaskCollection`.

    Parameters
    ----------
    path : the folder.
    outcome : the outcome column of every data file.
    patient_id : the column of patient ids (optional in the files; read as text).
    name : the collection's name (default: the folder's name).
    pos_label : the outcome value that marks the event, when outcomes are not 0/1 or
        true/false (e.g. ``"yes"`` or ``2``).
    sep : the field separator of the CSV data files (``data/``). ``descriptions.csv`` is read
        with its own separator, detected from its header (comma, semicolon or tab).
    na_values : values that mean "missing" in the data files, as in
        ``pd.read_csv(na_values=...)``: a value or a list for every column (e.g. ``"."`` from
        SAS or Stata, ``"unknown"``, ``-99``), or a dict such as ``{"sex": [9], "smoker": "."}``
        for those columns only. Numbers match by value (``-99`` matches ``-99.0``). Blank cells
        and ``NA``, ``N/A``, ``NaN``, ``null``, ... (:data:`ragim.canonical.MISSING_TEXT`, not
        pandas' default list: the text ``None`` is a value) always count as missing.
        Declared codes never apply to patient ids.
    thousands : the thousands separator of the CSV data files' numbers, as in
        ``pd.read_csv(thousands=...)``: ``"."`` for ``1.718`` (1718, as a German spreadsheet
        writes it; ``","`` is then the decimal mark: ``1.718,5``), ``","`` for ``1,718``.
        Without it, a column of numbers written with one is refused.

    Raises
    ------
    ValidationError
        Naming the file and the problem: a missing descriptions file, a task listed without
        a data file (or the reverse), two data files for one task (``t0.csv`` and
        ``t0.parquet``), a missing outcome column, outcomes whose event is not
        stated, a wrong separator, numbers written with a thousands separator (``1.718``
        beside ``961``) without ``thousands``, blank or repeated patient ids, columns that
        differ between files, dates or durations among the features.

    Tasks that cannot be fitted (one class, too few rows) are loaded; building an index
    skips them with a warning that names each one.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValidationError(f"task folder {root} does not exist")
    desc_file = root / "descriptions.csv"
    if not desc_file.is_file():
        raise ValidationError(
            f"{root} has no descriptions.csv (columns: task_id, description, optional metadata)"
        )
    na = na_value_spec(na_values)
    if isinstance(na, dict) and canonical_text(patient_id) in na:
        raise ValidationError(
            f"na_values names the patient-id column {patient_id!r}; patient ids are never read "
            "as missing"
        )
    # descriptions.csv is often written apart from the data files: its own separator
    desc = read_table(desc_file, all_text=True, sep=sniff_separator(desc_file, sep))
    desc.columns = [canonical_text(str(c)) for c in desc.columns]
    missing_cols = [c for c in ("task_id", "description") if c not in desc.columns]
    if missing_cols:
        raise ValidationError(
            f"{desc_file} lacks the columns {missing_cols} (it has {list(desc.columns)[:10]})"
        )
    files = _data_files(root / "data")
    blank = [i + 2 for i, t in enumerate(desc["task_id"]) if t is None or not str(t).strip()]
    if blank:
        raise ValidationError(f"{desc_file}: line(s) {blank[:10]} have no task_id")
    ids = [canonical_id(t, "task id") for t in desc["task_id"]]
    dupes = repeated(ids)
    if dupes:
        raise ValidationError(f"{desc_file}: task id(s) {dupes[:10]} are listed more than once")
    problems = [
        f"task {t!r} is listed in descriptions.csv but has no data/{t}.csv or .parquet"
        for t in ids
        if t not in files
    ]
    problems += [
        f"data/{files[t].name} has no row in descriptions.csv" for t in files if t not in set(ids)
    ]
    if problems:
        raise ValidationError(f"task folder {root} is inconsistent:", problems)
    schema_file = root / "schema.json"
    declared: FeatureSchema | None = None
    if schema_file.is_file():
        try:
            declared = FeatureSchema.from_dict(json.loads(schema_file.read_bytes()))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ValidationError(f"{schema_file} is not valid JSON: {exc}") from exc
        except ValidationError as exc:
            raise ValidationError(f"{schema_file}: {exc}") from exc
    # columns declared categorical are read as written: ward 3E1 is not 30, +5 is not 5
    categorical = [] if declared is None else declared.names_of("categorical")
    tasks, frames, labels = [], [], []
    exponents: dict[str, dict[float, str]] = {}  # codes written like 3E1, without a schema
    columns: list[str] | None = None
    first_file: Path | None = None
    for (_, row), tid in zip(desc.iterrows(), ids, strict=True):
        file = files[tid]
        df = read_table(
            file,
            text_columns=(patient_id, outcome),  # outcomes as written
            categorical=categorical,
            sep=sep,
            na_values=na,
            thousands=thousands,
        )
        if declared is None:
            for c, found in exponent_codes(file, df, sep=sep).items():
                if c not in (outcome, patient_id):
                    exponents.setdefault(c, {}).update(found)
        if outcome not in df.columns:
            raise ValidationError(
                f"{file} has no outcome column {outcome!r} (columns: {list(df.columns)[:10]})"
            )
        meta = {k: v for k, v in row.items() if k not in ("task_id", "description")}
        if patient_id in df.columns:
            meta["patient_ids"] = _patient_ids(df, patient_id, file)
        X = df.drop(columns=[c for c in (outcome, patient_id) if c in df.columns])
        if columns is None:
            columns, first_file = list(X.columns), file
        elif set(X.columns) != set(columns):
            lacks = [c for c in columns if c not in X.columns]
            extra = [c for c in X.columns if c not in columns]
            raise ValidationError(
                f"{file} does not have the columns of {first_file.name}: "
                + "; ".join(
                    p
                    for p in (
                        f"it lacks {lacks}" if lacks else "",
                        f"it adds {extra}" if extra else "",
                        case_only_names(lacks, extra),
                    )
                    if p
                )
                + "; every task must share one set of features (the order may differ)"
            )
        X = X[columns]
        written = df[outcome].to_numpy(dtype=object, copy=True)  # an object column: a view
        # a declared missing-value code is a blank outcome: binary_outcome names those rows
        written[missing_code_mask(df[outcome], outcome_na_codes(na, outcome, pos_label))] = None
        y = binary_outcome(
            written,
            pos_label=pos_label,
            where=f"{file}: outcome column {outcome!r}",
        )
        desc_text = row["description"] if isinstance(row["description"], str) else ""
        tasks.append(Task(tid, desc_text, X, y, meta))
        frames.append(X)
        labels.append(file.name)
    if not tasks:
        raise ValidationError(f"{desc_file} lists no tasks")
    _check_kinds(frames, labels)
    _warn_two_value_codings(frames, labels)
    if declared is not None:
        schema = declared
        found = [
            (f.name, codes)
            for f in schema.features
            if f.type == "continuous"
            and f.name in frames[0].columns
            and (codes := missing_codes([X[f.name] for X in frames]))
        ]
        if found:  # FeatureSchema.infer warns about these; a declared schema skips it
            warn_missing_codes(found)
        gaps = [
            gap
            for f in schema.features
            if f.type == "continuous" and f.name in frames[0].columns
            for gap in scale_gaps(f.name, [X[f.name] for X in frames], labels)
        ]
        if gaps:  # so does this
            warn_scale_gaps(gaps, {f.name: f.unit for f in schema.features})
    else:
        schema = FeatureSchema.infer(frames, labels=labels, written=exponents)
    _warn_shared_patients_across_sites(tasks)
    _warn_ids_equal_but_for_leading_zeros(tasks)
    _warn_without_patient_ids(tasks, patient_id)
    return TaskCollection(tasks, schema=schema, name=name or root.name)


def _warn_ids_equal_but_for_leading_zeros(tasks: list[Task]) -> None:
    """Patient ids are text, so ``0001`` in one file and ``1`` in another are two patients.
    When ids of *different* files are one number written apart
    (:func:`ragim.canonical.patient_id_near_misses`: one export kept the leading zeros,
    another, often a spreadsheet, dropped them), the same patients may go unseen as shared,
    and evaluation would leak: one :class:`DataWarning` naming an example and the count."""
    clashes = patient_id_near_misses((t.task_id, t.patient_ids) for t in tasks)
    if not clashes:
        return
    a, ta, b, tb = min(clashes)
    more = f", as do {len(clashes) - 1} more id(s) of different files" if len(clashes) > 1 else ""
    warnings.warn(
        f"patient ids {a!r} (in {ta!r}) and {b!r} (in {tb!r}) differ only by leading "
        f"zeros or a '.0' tail{more}: ragim reads ids as text, so these are different "
        "patients and tasks sharing them are not kept apart; if they are the same patients, "
        "write the ids the same way in every file",
        DataWarning,
        stacklevel=user_stacklevel(),
    )


def _warn_without_patient_ids(tasks: list[Task], column: str) -> None:
    """One :class:`DataWarning` when some data files have no patient-id column: tasks that share
    patients (a cohort's subgroups or outcomes) then cannot be kept apart, and a leave-task-out
    score of one from an index holding the others is optimistic."""
    lacking = [t.task_id for t in tasks if "patient_ids" not in t.metadata]
    if len(tasks) < 2 or not lacking:
        return
    shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more" if len(lacking) > 3 else "")
    if len(lacking) == len(tasks):
        which = f"none of the {len(tasks)} data files have a patient-id column {column!r}"
    else:
        which = (
            f"{len(tasks) - len(lacking)} of the {len(tasks)} data files have a patient-id "
            f"column {column!r}; {shown} {'lacks' if len(lacking) == 1 else 'lack'} it"
        )
    warnings.warn(
        f"{which}, so ragim cannot tell which tasks share patients: if some do (one "
        "cohort's subgroups or outcomes), leave-task-out evaluation, a held-out site and "
        "exclude= cannot keep them apart and their scores are optimistic; add the column, or "
        "name it with patient_id= (--patient-id)",
        DataWarning,
        stacklevel=user_stacklevel(),
    )


#: at most this many distinct values on each side make a column "coded two ways" (text codes
#: in some files, number codes in others: sex F/M against 0/1) rather than stray text
CODED_TWO_WAYS_MAX = 12


#: words that mark a value missing when a file writes nothing else in a column
_MISSING_WORDS = frozenset({"unknown", "unk", "missing", "not recorded", "not done", "nd"})


def _missing_marker_only(texts: set[str]) -> bool:
    """Whether a file's text in a column of numbers is one missing-value marker (``.``,
    ``?``, ``unknown``) rather than text codes (``F``/``M``)."""
    if len(texts) != 1:
        return False
    (text,) = texts
    return not any(ch.isalnum() for ch in text) or text.casefold() in _MISSING_WORDS


def _check_kinds(frames: list[pd.DataFrame], labels: list[str]) -> None:
    """Catch columns whose files disagree (numbers in some, text in others): one clause per
    column, naming the files on each side, an example value, and a decimal-comma hint.

    A column that is wholly text codes in some files and a few number codes in the others
    (sex ``F``/``M`` in three files, ``0``/``1`` in one) is coded two ways: the clause names
    both codings and says to recode one; it never advises declaring the codes missing, which
    would blank the column in the files that write them."""
    kinds: dict[str, dict[str, list[str]]] = {}
    examples: dict[str, str] = {}
    advice: dict[str, str] = {}
    texts: dict[str, set[str]] = {}  # text values of the files whose column is text
    numbers_of: dict[str, set[float]] = {}  # values of the files read as numbers
    mixed: set[str] = set()  # columns with text beside numbers within one file
    for X, label in zip(frames, labels, strict=True):
        for c in X.columns:
            kind = value_kind(X[c])
            kind = "numeric" if kind in ("bool", "numeric") else kind
            if kind == "text":
                numbers = pd.to_numeric(truth_as_numbers(X[c].dropna()), errors="coerce")
            if kind == "text" and numbers.notna().all():
                kind = "numeric"  # numerals (or true/false) typed as text agree with numbers
            if kind == "empty":
                continue
            if kind == "text":
                if numbers.notna().any():
                    mixed.add(c)
                texts.setdefault(c, set()).update(str(v).strip() for v in X[c].dropna())
            else:
                values = pd.to_numeric(truth_as_numbers(X[c].dropna()), errors="coerce")
                numbers_of.setdefault(c, set()).update(values.drop_duplicates().tolist()[:100])
            if kind == "text" and c not in examples:
                examples[c] = str(next(iter(X[c].dropna()[numbers.isna()])))
                advice[c] = number_text_advice(X[c].dropna().tolist())
            kinds.setdefault(c, {}).setdefault(kind, []).append(label)
    drift = []
    for c, by_kind in kinds.items():
        if len(by_kind) < 2:
            continue
        two_ways = (
            c not in mixed
            and not advice.get(c)  # decimal commas, "<5": numbers written as text
            and "numeric" in by_kind
            and not _missing_marker_only(texts.get(c, set()))
        )
        words = name_some(sorted(texts.get(c, ()), key=str), 6, sep="/")
        if two_ways and (
            len(texts.get(c, ())) <= CODED_TWO_WAYS_MAX
            and len(numbers_of.get(c, ())) <= CODED_TWO_WAYS_MAX
            and all(math.isfinite(v) and v == round(v) for v in numbers_of[c])  # codes
        ):
            number_codes = name_some([int(v) for v in sorted(numbers_of[c])], 6, sep="/")
            drift.append(
                f"{c!r} is coded two ways: as text ({words}) in {_files(by_kind['text'])} "
                f"but as numbers ({number_codes}) in {_files(by_kind['numeric'])}; recode one "
                f"side to the other's codes (e.g. write {words} in every file) so that each "
                "value means one thing everywhere; do not declare these codes missing, which "
                "would blank the column in the files that use them"
            )
            continue
        if two_ways:  # words in whole files (low/normal/high) where the others write values
            drift.append(
                f"{c!r} is written as words ({words}) in "
                f"{_files(by_kind['text'])} but as numbers in {_files(by_kind['numeric'])}; "
                "write the values as numbers in every file, or leave the column out of the "
                "files that hold only words; do not declare the words missing, which would "
                "blank the column in those files"
            )
            continue
        sides = [
            f"{kind} in {_files(files)}"
            for kind, files in sorted(by_kind.items(), key=lambda kv: kv[0] != "text")
        ]
        clause = f"{c!r} is {' but '.join(sides)} (e.g. {examples.get(c, '')!r})"
        if advice.get(c):  # decimal commas, percentages, detection limits
            clause += "; " + advice[c]
        elif "numeric" in by_kind and c in examples:
            clause += "; " + missing_marker_hint([examples[c]])
        drift.append(clause)
    if drift:
        raise ValidationError("column types differ between task files:", drift[:10])


def _warn_two_value_codings(frames: list[pd.DataFrame], labels: list[str]) -> None:
    """One :class:`DataWarning` for columns holding two values in every file, but not the
    same two (sex ``0``/``1`` in most files, ``1``/``2`` in one): one variable coded two ways,
    where a shared value (``1``) may mean one thing in some files and the other elsewhere.
    Files holding one value (a subgroup of one sex) are not counted; a column whose files
    hold more than two values is not said (a file may lack a rare level)."""
    clauses = []
    for c in frames[0].columns:
        sets: dict[frozenset, list[str]] = {}
        for X, label in zip(frames, labels, strict=True):
            try:
                values = frozenset(canonical_level(v) for v in pd.unique(X[c].dropna()))
            except ValidationError:  # infinite values: refused by the schema, naming the rows
                break
            if len(values) > 2:
                break
            if len(values) == 2:
                sets.setdefault(values, []).append(label)
        else:
            if len(sets) > 1 and len(frozenset().union(*sets)) == 3:
                ways = sorted(sets.items(), key=lambda kv: -len(kv[1]))
                clauses.append(
                    f"{c!r} "
                    + " but ".join(
                        f"{'/'.join(sorted(v, key=level_key))} in {_files(files)}"
                        for v, files in ways
                    )
                )
    if clauses:
        warnings.warn(
            "columns hold two values in every file, but not the same two: "
            + "; ".join(clauses[:5])
            + ": if a column is one variable coded two ways (0/1 and 1/2), a value may mean "
            "one thing in some files and another elsewhere; recode the files to one coding",
            DataWarning,
            stacklevel=user_stacklevel(),
        )


def _files(files: list[str]) -> str:
    """'a.csv', or '3 files (a.csv, b.csv, c.csv)', or '7 files (a.csv, b.csv, c.csv, ...)'."""
    if len(files) == 1:
        return files[0]
    return f"{len(files)} files ({name_some(files)})"


def _warn_shared_patients_across_sites(tasks: list[Task]) -> None:
    """Patient ids are global in a folder; ids shared by two sites are probably two numbering
    schemes. One warning naming the pairs of sites (site codes in canonical form: ``"01"``
    and ``1`` are one site) and how many distinct ids each pair shares."""
    sites_of: dict[str, set] = {}
    for t in tasks:
        site = t.metadata.get("site")
        if site is None:
            return
        for pid in t.patient_ids:
            sites_of.setdefault(pid, set()).add(canonical_level(site))
    clashes: dict[tuple, set[str]] = {}
    for pid, sites in sites_of.items():
        for pair in itertools.combinations(sorted(sites, key=str), 2):
            clashes.setdefault(pair, set()).add(pid)
    if not clashes:
        return
    pairs = sorted(clashes.items(), key=lambda kv: (-len(kv[1]), str(kv[0])))
    shown = "; ".join(
        f"sites {a!r} and {b!r} share {len(p)} patient id(s) (e.g. {sorted(p)[:3]})"
        for (a, b), p in pairs[:3]
    )
    more = f" and {len(pairs) - 3} more pair(s) of sites" if len(pairs) > 3 else ""
    warnings.warn(
        f"{shown}{more}; ids are global in a task folder, so these are treated as the same "
        "patients: if the sites number patients independently, prefix the ids with the site "
        "(e.g. 'A-0001')",
        DataWarning,
        stacklevel=user_stacklevel(),
    )
