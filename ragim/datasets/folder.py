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
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise ValidationError(f"cannot read {path}: {exc}") from exc


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
        if columns is None:
            columns = list(X.columns)
        elif list(X.columns) != columns:
            raise ValidationError(
                f"{files[tid]} has columns {list(X.columns)}, but the first task file has {columns}; "
                "every task must share one schema"
            )
        y = pd.to_numeric(df[outcome], errors="coerce").to_numpy()
        desc_text = row["description"] if isinstance(row["description"], str) else ""
        tasks.append(Task(tid, desc_text, X, y, meta))
    if not tasks:
        raise ValidationError(f"{desc_file} lists no tasks")
    schema_file = root / "schema.json"
    if schema_file.is_file():
        try:
            schema = FeatureSchema.from_dict(json.loads(schema_file.read_text()))
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{schema_file} is not valid JSON: {exc}") from exc
    else:
        schema = FeatureSchema.infer(pd.concat([t.X for t in tasks], ignore_index=True))
    return TaskCollection(tasks, schema=schema, name=name or root.name)
