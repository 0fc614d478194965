"""Bring your own tasks: a folder of CSV or Parquet files plus a descriptions file.

Expected layout::

    my_tasks/
      descriptions.csv        task_id,description[,site,subgroup,...]   (extra columns -> metadata)
      schema.json             optional: {"features": [{"name", "type", "unit", "description"}, ...]}
      data/
        <task_id>.csv         feature columns + the outcome column (default "y")
        <task_id>.parquet     (either format; optional "patient_id" column for overlap checks)

Examples
--------
>>> import tempfile, pathlib, pandas as pd, numpy as np
>>> d = pathlib.Path(tempfile.mkdtemp()); (d / "data").mkdir()
>>> pd.DataFrame({"task_id": ["a"], "description": ["Predict sepsis in adults"]}).to_csv(d / "descriptions.csv", index=False)
>>> pd.DataFrame({"lactate": np.linspace(1, 4, 10), "y": [0, 1] * 5}).to_csv(d / "data" / "a.csv", index=False)
>>> load_task_folder(d)["a"].n_rows
10
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ragim.errors import ValidationError
from ragim.schema import FeatureSchema
from ragim.tasks import Task, TaskCollection


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            names = [str(n) for n in pq.read_schema(path).names if not str(n).startswith("__index_level_")]
            _check_header(path, names)
            return pd.read_parquet(path)
        header = pd.read_csv(path, nrows=0, header=None, dtype=str, keep_default_na=False).columns
        if len(header):
            raw = pd.read_csv(path, nrows=1, header=None, dtype=str, keep_default_na=False)
            _check_header(path, [str(v).strip() for v in raw.iloc[0]] if len(raw) else [])
        return pd.read_csv(path)
    except ValidationError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise ValidationError(f"cannot read {path}: {exc}") from exc


def _check_header(path: Path, names: list[str]) -> None:
    """Column names must be unique and non-empty (pandas would silently rename them)."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValidationError(f"{path} has duplicated columns {dupes}; every column needs a unique name")
    empty = [i + 1 for i, n in enumerate(names) if not n.strip()]
    if empty:
        raise ValidationError(f"{path}: column(s) {empty} have an empty name; name every column")


def load_task_folder(path: str | Path, *, outcome: str = "y", patient_id: str = "patient_id",
                     name: str | None = None) -> TaskCollection:
    """Read a task folder (see module docstring) into a validated :class:`TaskCollection`.

    Errors name the file and the problem: a missing descriptions file, a task listed without
    a data file (or the reverse), a missing outcome column, non-binary outcomes, schema drift
    between files.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValidationError(f"task folder {root} does not exist")
    desc_file = root / "descriptions.csv"
    if not desc_file.is_file():
        raise ValidationError(f"{root} has no descriptions.csv (columns: task_id, description, optional metadata)")
    desc = _read_table(desc_file)
    missing_cols = [c for c in ("task_id", "description") if c not in desc.columns]
    if missing_cols:
        raise ValidationError(f"{desc_file} lacks the columns {missing_cols}")
    data_dir = root / "data"
    files = {p.stem: p for p in sorted(data_dir.glob("*")) if p.suffix in (".csv", ".parquet")} if data_dir.is_dir() else {}
    blank = [i + 2 for i, t in enumerate(desc["task_id"]) if pd.isna(t) or not str(t).strip()]
    if blank:
        raise ValidationError(f"{desc_file}: line(s) {blank[:10]} have no task_id")
    ids = [str(t) for t in desc["task_id"]]
    problems = [f"task {t!r} is listed in descriptions.csv but has no data/{t}.csv or .parquet" for t in ids if t not in files]
    problems += [f"data/{files[t].name} has no row in descriptions.csv" for t in files if t not in set(ids)]
    if problems:
        raise ValidationError(f"task folder {root} is inconsistent:", problems)
    tasks, columns = [], None
    for _, row in desc.iterrows():
        tid = str(row["task_id"])
        df = _read_table(files[tid])
        if outcome not in df.columns:
            raise ValidationError(f"{files[tid]} has no outcome column {outcome!r} (columns: {list(df.columns)[:10]})")
        meta = {k: (None if pd.isna(v) else v.item() if isinstance(v, np.generic) else v)
                for k, v in row.items() if k not in ("task_id", "description")}
        if patient_id in df.columns:
            meta["patient_ids"] = [v.item() if isinstance(v, np.generic) else v for v in df[patient_id]]
        X = df.drop(columns=[c for c in (outcome, patient_id) if c in df.columns])
        kinds = {c: _kind(X[c]) for c in X.columns}
        if columns is None:
            columns, first, first_kinds = list(X.columns), files[tid], kinds
        elif list(X.columns) != columns:
            raise ValidationError(
                f"{files[tid]} has columns {list(X.columns)}, but the first task file has {columns}; "
                "every task must share one schema"
            )
        else:
            drift = [f"{c!r} is {kinds[c]} here but {first_kinds[c]} in {first.name}" for c in columns
                     if "empty" not in (kinds[c], first_kinds[c]) and kinds[c] != first_kinds[c]]
            if drift:
                raise ValidationError(f"{files[tid]}: column types differ from the first task file:", drift)
            first_kinds = {c: first_kinds[c] if kinds[c] == "empty" else kinds[c] for c in columns}
        y = pd.to_numeric(df[outcome], errors="coerce").to_numpy()
        text_y = df[outcome].notna() & np.isnan(y)
        if text_y.any():
            examples = list(dict.fromkeys(str(v) for v in df[outcome][text_y]))[:3]
            raise ValidationError(f"{files[tid]}: outcome column {outcome!r} has non-numeric values, e.g. {examples}; "
                                  "outcomes must be 0/1")
        desc_text = row["description"] if isinstance(row["description"], str) else ""
        tasks.append(Task(tid, desc_text, X, y, meta))
    if not tasks:
        raise ValidationError(f"{desc_file} lists no tasks")
    schema_file = root / "schema.json"
    if schema_file.is_file():
        try:
            schema = FeatureSchema.from_dict(json.loads(schema_file.read_bytes()))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ValidationError(f"{schema_file} is not valid JSON: {exc}") from exc
        except ValidationError as exc:
            raise ValidationError(f"{schema_file}: {exc}") from exc
    else:
        schema = FeatureSchema.infer(pd.concat([t.X for t in tasks], ignore_index=True))
    return TaskCollection(tasks, schema=schema, name=name or root.name)


def _kind(s: pd.Series) -> str:
    """'empty', 'numeric' or 'text': what a column holds, to catch type drift between files."""
    if s.notna().sum() == 0:
        return "empty"
    return "numeric" if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) else "text"
