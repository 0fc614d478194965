"""What every ``ragim`` command shares: output (JSON, tables, one-line warnings and errors),
progress bars only on a terminal, argument checks and dataset loading.

Tables are drawn with rich: sorted, with headers, wrapped to the terminal's width (80
columns, or ``$COLUMNS``, when the output is not a terminal).
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import inspect
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from ragim.errors import ValidationError

DATASETS = ("heart-disease", "colon-cancer", "synthetic", "procedure")

#: set by ``ragim --quiet`` (and each command's own ``--quiet``)
QUIET = {"on": False}

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or stage messages")]
AsJson = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
OverwriteOut = Annotated[
    bool, typer.Option("--overwrite", help="let --out replace what is saved there")
]
OverwriteSave = Annotated[
    bool, typer.Option("--overwrite", help="let --save replace a model saved there")
]
OverwriteFile = Annotated[
    bool,
    typer.Option("--overwrite", help="let the files this command writes replace what is there"),
]
Outcome = Annotated[
    str | None,
    typer.Option("--outcome", help="the 0/1 outcome column of the CSV files (default: y)"),
]
PatientId = Annotated[
    str | None,
    typer.Option(
        "--patient-id",
        help="the patient-id column of the CSV files (default: patient_id, when present)",
    ),
]
PosLabel = Annotated[
    str | None,
    typer.Option(
        "--pos-label",
        help=(
            "the outcome value that marks the event, as the file writes it: needed when "
            "outcomes are not 0/1 or true/false (e.g. yes), or to make 0 / false the event "
            "(e.g. FALSE, in any case)"
        ),
    ),
]


def _separator(value: str) -> str:
    """``--sep`` as the character it names: a shell passes ``'\\t'`` as a backslash and a ``t``
    (the tab a file's error message suggests), which means a tab here."""
    return "\t" if value == "\\t" else value


Sep = Annotated[
    str,
    typer.Option(
        "--sep",
        help="the CSV field separator, e.g. ';' for European spreadsheets or '\\t' for tabs",
        callback=_separator,
    ),
]
FolderSep = Annotated[
    str,
    typer.Option(
        "--sep",
        help="the field separator of a task folder's CSV data files, e.g. ';' for European "
        "spreadsheets or '\\t' for tabs (descriptions.csv's own comma, semicolon or tab is "
        "detected)",
        callback=_separator,
    ),
]


def _na_values(values: list[str] | None) -> list[str] | None:
    """``--na-values`` given several times, each possibly comma-separated, as one list."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()] or None


NaValues = Annotated[
    list[str] | None,
    typer.Option(
        "--na-values",
        help=(
            "values that mean missing in every column of every data file, e.g. --na-values '.' "
            "--na-values -99 or --na-values .,unknown,-99 (as pandas' read_csv na_values; blank "
            "cells and NA, N/A, NaN, null always count as missing, the word None does not; for "
            "codes limited to one column, use load_task_folder(..., na_values={'sex': [9]}) in "
            "Python)"
        ),
        callback=_na_values,
    ),
]


def _thousands(value: str | None) -> str | None:
    """``--thousands`` as typed, with a Python escape read as the character it names: the
    messages write a no-break space as ``'\\xa0'``, which a shell passes as four characters."""
    if value is None or not value.startswith("\\"):
        return value
    try:
        return codecs.decode(value, "unicode_escape")
    except UnicodeDecodeError:
        raise typer.BadParameter(f"{value!r} is not an escape such as '\\xa0'") from None


Thousands = Annotated[
    str | None,
    typer.Option(
        "--thousands",
        help=(
            "the thousands separator of the CSV files' numbers: '.' for 1.718 (1718) as German "
            "spreadsheets write it (',' is then the decimal mark: 1.718,5), or ',' for 1,718 "
            "(as pandas' read_csv thousands); a no-break space as '\\xa0' (French exports), "
            "a narrow one as '\\u202f'"
        ),
        callback=_thousands,
    ),
]


@dataclass(frozen=True)
class FolderOptions:
    """How a task folder is read: a command's ``--outcome``, ``--patient-id``, ``--pos-label``,
    ``--sep``, ``--na-values`` and ``--thousands``, as :func:`load_dataset` takes them; an
    option group (:func:`option_groups`)."""

    outcome: Outcome = None
    patient_id: PatientId = None
    pos_label: PosLabel = None
    sep: FolderSep = ","
    na_values: NaValues = None
    thousands: Thousands = None

    @property
    def given(self) -> bool:
        """Whether any of them was given (differs from its default)."""
        return (
            self.outcome is not None
            or self.patient_id is not None
            or self.pos_label is not None
            or self.sep != ","
            or bool(self.na_values)
            or self.thousands is not None
        )


@dataclass(frozen=True)
class CsvOptions:
    """How a CSV file of patients is read: a command's ``--sep``, ``--na-values`` and
    ``--thousands``, as :func:`ragim.rows.read_rows` takes them; an option group
    (:func:`option_groups`)."""

    sep: Sep = ","
    na_values: NaValues = None
    thousands: Thousands = None


def option_groups(command: Callable) -> Callable:
    """Let a command take an option group, a dataclass whose fields are typer options (such as
    :class:`FolderOptions`), as one parameter: typer sees the group's options in its place, in
    the group's order, and the command is called with them as one instance of the group."""
    hints = get_type_hints(command, include_extras=True)
    params, groups = [], {}
    for p in inspect.signature(command).parameters.values():
        group = hints.get(p.name, p.annotation)
        if not (isinstance(group, type) and is_dataclass(group)):
            params.append(p.replace(annotation=group))
            continue
        options = get_type_hints(group, include_extras=True)
        groups[p.name] = group, [f.name for f in fields(group)]
        params += [
            p.replace(
                name=f.name,
                annotation=options[f.name],
                default=p.empty if f.default is MISSING else f.default,
            )
            for f in fields(group)
        ]
    signature = inspect.Signature(params)

    @functools.wraps(command)
    def run(*args, **kwargs):
        given = signature.bind(*args, **kwargs)
        given.apply_defaults()
        values = given.arguments
        for name, (group, names) in groups.items():
            values[name] = group(**{n: values.pop(n) for n in names})
        return command(**values)

    run.__signature__ = signature
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


# ---------------------------------------------------------------------- output
def json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot serialise {type(o).__name__}")


def _finite(obj):
    """NaN and infinities become null (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


#: the warning lines this command printed (:func:`warn`, in order, each once), so that
#: ``--json`` output carries them too; emptied when a command starts (the app's callback)
SHOWN_WARNINGS: list[str] = []


def echo_json(obj, *, with_warnings: bool = True) -> None:
    """Print ``obj`` as indented JSON on stdout (NaN becomes null).

    A dict gets a ``"warnings"`` list: the warnings the command printed (on stderr as well),
    empty when there were none, so that a script reading the JSON can rely on the key;
    ``with_warnings=False`` for a payload that places them itself.
    """
    if with_warnings and isinstance(obj, dict):
        obj = {**obj, "warnings": list(SHOWN_WARNINGS)}
    typer.echo(json.dumps(_finite(obj), indent=2, allow_nan=False, default=json_default))


def show_progress(as_json: bool = False, quiet: bool = False) -> bool:
    """Progress bars only when stderr is a terminal, and never with --json or --quiet."""
    return not (as_json or quiet or QUIET["on"]) and sys.stderr.isatty()


def say(text: str, *, as_json: bool = False, quiet: bool = False) -> None:
    """A stage message on stdout, unless --json or --quiet."""
    if not (as_json or quiet or QUIET["on"]):
        typer.echo(text)


def warn(text: str) -> None:
    """One short warning line on stderr (shown even with --quiet), kept in
    :data:`SHOWN_WARNINGS` for the command's ``--json`` output. A command prints each distinct
    warning once, however often (per fold, per method) it is raised."""
    line = short(text, WARNING_CHARS)
    if line in SHOWN_WARNINGS:
        return
    SHOWN_WARNINGS.append(line)
    typer.echo(f"warning: {line}", err=True)


#: a warning is one line, long enough to end with its fix (the shared-patient warning is ~330)
WARNING_CHARS = 500


def short(text: Any, n: int = 200) -> str:
    """One line of at most ``n`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def silence_library_progress() -> None:
    """No Hugging Face progress bars ("Loading weights", dataset maps): call when bars are off."""
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:  # pragma: no cover - a dependency of transformers
        return
    disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def setup(as_json: bool = False, quiet: bool = False) -> bool:
    """Per command: silence library bars unless they are wanted; returns ``show_progress``."""
    progress = show_progress(as_json, quiet)
    if not progress:
        silence_library_progress()
    return progress


@contextlib.contextmanager
def one_line_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record the warnings of a block; each is printed afterwards as one short line (no source
    path), the same message once. The caller may empty the list to print its own line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    seen = set()
    for w in caught:
        if issubclass(w.category, DeprecationWarning | FutureWarning | ResourceWarning):
            continue
        text = short(w.message, WARNING_CHARS)
        if text not in seen:
            seen.add(text)
            warn(text)


def one_line(exc: BaseException) -> str:
    """An error as one line: a multi-line message's items are joined with '; '."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    head, items = lines[0], [ln[2:] if ln.startswith("- ") else ln for ln in lines[1:]]
    return head + (" " + "; ".join(items) if items else "")


def console():
    """A rich console on stdout (the terminal's width, or $COLUMNS / 80 when piped)."""
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def print_table(
    rows: Sequence[Sequence[Any]],
    columns: Sequence[str | tuple[str, str]],
    *,
    title: str | None = None,
    caption: str | None = None,
    no_wrap: Sequence[str] = (),
) -> None:
    """A rich table; ``columns`` are names, or (name, "right"/"left") for the alignment; the
    columns named in ``no_wrap`` are never wrapped (the others wrap to fit the width). The
    title is a line above the table and the caption a line below, each whole. Cells are plain
    text: a term such as ``cp[asymptomatic]`` is printed as written, not read as rich markup."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for c in columns:
        name, justify = (c, "left") if isinstance(c, str) else c
        table.add_column(name, justify=justify, overflow="fold", no_wrap=name in no_wrap)
    for r in rows:
        table.add_row(*[Text(str(v)) for v in r])
    if title:
        typer.echo(title)
    console().print(table)
    if caption:
        typer.echo(caption)


def fmt(v: Any, spec: str = ".3g") -> str:
    """A number for a table cell ("" for NaN or None):
    :func:`ragim.models.family.format_number`, imported when first used (the CLI starts
    without pandas)."""
    from ragim.models.family import format_number

    return format_number(v, spec)


def print_provenance(
    records: Sequence[dict], *, title: str = "Neighbour tasks that shaped the model"
) -> None:
    """The neighbours as a table with headers, largest weight (in size) first."""
    if not records:
        typer.echo("provenance: none (a fitted or adapted model without retrieved neighbours)")
        return
    recs = sorted(
        records,
        key=lambda r: (
            -(
                abs(r.get("weight"))
                if isinstance(r.get("weight"), int | float) and math.isfinite(r.get("weight"))
                else -1.0
            )
        ),
    )
    print_table(
        [
            (
                fmt(r.get("weight"), ".3f"),
                fmt(r.get("similarity"), ".3f"),
                r.get("task_id", ""),
                short(r.get("description", ""), 90),
            )
            for r in recs
        ],
        [("weight", "right"), ("similarity", "right"), "task", "description"],
        title=title,
        caption="sorted by the size of the weight, the task's share in the generated "
        "baseline risk (negative: a contrast, the model moves away from that task)",
        no_wrap=("task",),
    )


def print_global(expl, *, top: int | None = None, missing: bool = False) -> None:
    """A global explanation as a sorted table (categorical levels against their reference)."""
    t = expl.table(top, missing=missing)
    hint = "" if missing or not t.attrs["n_hidden_missing"] else "; --all shows them"
    rows, cols = expl.family.text_table(t)
    print_table(
        rows,
        cols,
        title=f"{expl.family.heading} for {expl.outcome}; {expl.baseline()}",
        caption=t.attrs["note"] + hint,
    )


def print_local(expl, *, top: int | None = None) -> None:
    """One patient's explanation: the predicted risk, then contributions, largest first."""
    t = expl.table(top)
    rows = [
        (
            r.label,
            r.value_label,
            fmt(r.contribution, "+.3f"),
            "raises" if r.contribution > 0 else "lowers" if r.contribution < 0 else "",
        )
        for r in t.itertuples()
    ]
    print_table(
        rows,
        ["feature", "value", ("log-odds", "right"), "risk"],
        title=f"Predicted risk of {expl.outcome}: {expl.probability:.1%} "
        f"(log-odds {expl.logit:+.3f} = baseline {expl.baseline:+.3f}"
        + (" at the reference patient" if expl.baseline != expl.intercept else "")
        + " + the contributions below)",
        caption=t.attrs["note"],
    )


# ---------------------------------------------------------------------- checks
def check_k(k: int | None, option: str = "-k", *, allow_zero: bool = False) -> None:
    """Refuse a negative ``k``, and 0 unless ``allow_zero`` (an LM generator's prompt with no
    neighbours, as ``LMConfig(k=0)``)."""
    if k is not None and k < (0 if allow_zero else 1):
        what = "a non-negative integer (0: no neighbours)" if allow_zero else "a positive integer"
        raise typer.BadParameter(f"{option} must be {what}, got {k}")


def check_positive(**values) -> None:
    for name, v in values.items():
        if v is not None and v <= 0:
            raise typer.BadParameter(f"--{name.replace('_', '-')} must be positive, got {v}")


# ---------------------------------------------------------------------- data
def load_dataset(
    name: str, *, n_tasks: int | None = None, seed: int = 0, folder: FolderOptions | None = None
):
    """A TaskCollection from a dataset name, a saved task collection or a task folder (read as
    ``folder`` says: its outcome and patient-id columns, event value, CSV separator and
    missing-value codes, thousands separator)."""
    from ragim import datasets
    from ragim.tasks import TaskCollection

    folder = FolderOptions() if folder is None else folder
    check_dataset_options(name, n_tasks=n_tasks, folder=folder)
    if name == "heart-disease":
        return datasets.heart_disease()
    if name == "colon-cancer":
        return datasets.colon_cancer()
    if name == "synthetic":
        return datasets.synthetic_family(n_tasks=300 if n_tasks is None else n_tasks, seed=seed)
    if name == "procedure":
        return datasets.procedure_family(n_tasks=1000 if n_tasks is None else n_tasks, seed=seed)
    path = Path(name)
    if (path / "manifest.json").is_file():
        return TaskCollection.load(path)
    from ragim.datasets.folder import load_task_folder

    # an option not given keeps load_task_folder's default (outcome "y", ...)
    return load_task_folder(path, **{k: v for k, v in asdict(folder).items() if v is not None})


def check_dataset_options(
    name: str, *, n_tasks: int | None = None, folder: FolderOptions | None = None
) -> None:
    """The checks of :func:`load_dataset` that read no data (the options fit the kind of
    dataset, ``--n-tasks`` is positive, the dataset exists), so that a command can make them
    before its other checks and its work.

    Raises
    ------
    typer.BadParameter
        One line naming the option or the dataset.
    """
    folder = FolderOptions() if folder is None else folder
    if folder.given and name in DATASETS:
        raise typer.BadParameter(
            "--outcome, --patient-id, --pos-label, --sep, --na-values and --thousands apply to "
            f"a task folder, not to {name!r}"
        )
    if name in ("heart-disease", "colon-cancer"):
        return
    if n_tasks is not None and n_tasks < 1:
        raise typer.BadParameter(f"--n-tasks must be at least 1, got {n_tasks}")
    if name in ("synthetic", "procedure"):
        return
    path = Path(name)
    if (path / "manifest.json").is_file():
        if (
            folder.outcome is not None
            or folder.patient_id is not None
            or folder.na_values
            or folder.thousands is not None
        ):
            raise typer.BadParameter(
                f"--outcome, --patient-id, --na-values and --thousands apply to a task folder; "
                f"{name} is a saved task collection"
            )
        return
    if not path.is_dir():
        raise typer.BadParameter(
            f"unknown dataset {name!r}: use one of {list(DATASETS)}, a saved task collection "
            "or a task folder"
        )


def parse_exclusions(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["site=Switzerland", "site=Hungary"]`` -> ``{"site": ["Switzerland", "Hungary"]}``."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise typer.BadParameter(
                f"--exclude must look like KEY=VALUE (a metadata key of the tasks, e.g. "
                f"site=Switzerland), got {spec!r}"
            )
        out.setdefault(key.strip(), [])
        if value.strip() not in out[key.strip()]:
            out[key.strip()].append(value.strip())
    return out


def exclusion_text(exclusions: dict[str, list[str]]) -> str:
    """``{"sex": ["M"], "band": ["80+"]}`` -> ``"any of sex=M, band=80+"`` (repeated
    ``--exclude`` options are OR-ed: a task is left out when any of them matches);
    ``"site=Hungary"`` for one."""
    specs = [f"{k}={v}" for k, vals in exclusions.items() for v in vals]
    return specs[0] if len(specs) == 1 else "any of " + ", ".join(specs)


@dataclass
class Exclusion:
    """What :func:`exclude_tasks` left out of a collection, and what it kept."""

    tasks: Any  # the TaskCollection kept
    n_excluded: int  # tasks matching an exclusion
    sharing_patients: list[str]  # also left out: they share patients with a task named by id
    kept_sharing: list[str]  # kept, though they share patients with a task left out by key


def exclude_tasks(tasks, exclusions: dict[str, list[str]]) -> Exclusion:
    """``tasks`` without those whose metadata matches any exclusion (a task is left out when
    any ``KEY=VALUE`` matches); the key ``task_id`` names tasks by id.

    A task named by id is held out, so every task sharing a patient with it (a whole-period
    task holding a subgroup's patients, :meth:`~ragim.tasks.TaskCollection.overlapping`) is
    left out too (``sharing_patients``); tasks without patient ids share none ragim can see.
    Tasks sharing patients with those left out by another key are kept and listed
    (``kept_sharing``): leaving them out too could empty the index (every task of another
    outcome on the same patients).

    Values compare in canonical form, as :meth:`~ragim.tasks.TaskCollection.group_split` does:
    ``site=1`` matches a site written ``01`` or ``1.0``, and composed and decomposed accents
    are one letter. Task ids compare as written (``007`` is not ``7``).

    Raises a ValidationError when a key is no task's metadata, a value matches no task, or
    nothing is left to index.
    """
    from ragim.canonical import canonical_level, canonical_text

    metas, ids = tasks.metadata, [canonical_text(str(t)) for t in tasks.ids]
    for key, values in exclusions.items():
        if key == "task_id":
            unknown = [v for v in values if canonical_text(v) not in set(ids)]
            if unknown:
                raise ValidationError(
                    f"--exclude task_id={unknown[0]} matches no task; task ids: {ids[:20]}"
                    + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
                )
            continue
        known = sorted({str(m[key]) for m in metas if key in m and m[key] is not None})
        if not known:
            raise ValidationError(
                f"--exclude {key}=...: no task has the metadata key {key!r}; the tasks have "
                f"{tasks.metadata_keys()[:15]} (and task_id)"
            )
        tasks.group_codes(key)  # warns of codes spelt two ways ('01' and '1', 'North' and 'north')
        codes = {canonical_level(v) for v in known}
        unknown = [v for v in values if canonical_level(v) not in codes]
        if unknown:
            raise ValidationError(
                f"--exclude {key}={unknown[0]} matches no task; known values of {key!r}: "
                f"{known[:20]}"
            )
    dropped_ids = {canonical_text(v) for v in exclusions.get("task_id", [])}
    wanted = {
        key: {canonical_level(v) for v in values}
        for key, values in exclusions.items()
        if key != "task_id"
    }
    by_id = [i for i in range(len(metas)) if ids[i] in dropped_ids]
    by_key = [
        i
        for i, m in enumerate(metas)
        if ids[i] not in dropped_ids
        and any(key in m and canonical_level(m[key]) in codes for key, codes in wanted.items())
    ]
    left = set(by_id) | set(by_key)
    keep = [i for i in range(len(metas)) if i not in left]

    raw = tasks.ids

    def sharing(positions: list[int]) -> set[str]:  # tasks sharing a patient with these
        with_ids = [i for i in positions if metas[i].get("patient_ids")]
        return {o for i in with_ids for o in tasks.overlapping(raw[i])}

    near_id, near_key = sharing(by_id), sharing(by_key)
    shared = [i for i in keep if raw[i] in near_id]
    keep = [i for i in keep if i not in set(shared)]
    if not keep:
        raise ValidationError(
            f"--exclude {exclusion_text(exclusions)} leaves no task to index"
            + (f" ({len(shared)} more share patients with a task named by id)" if shared else "")
        )
    return Exclusion(
        tasks.take(keep),
        len(left),
        [raw[i] for i in shared],
        [raw[i] for i in keep if raw[i] in near_key],
    )


def refuse_to_replace(path: Path | None, overwrite: bool, option: str = "--out") -> None:
    """Refuse, before any work, to write over what is at ``path`` unless ``overwrite``
    (``--overwrite``): an index or a trained generator took minutes to hours to make; and a
    ``path`` that cannot be written (under a file, or in a folder this user cannot write).

    Raises
    ------
    typer.BadParameter
        One line naming the option and the path.
    """
    if path is None:
        return
    inside = _artifact_above(Path(path))
    if inside is not None:
        raise typer.BadParameter(
            f"cannot write {option} {path}: it is inside the saved ragim artifact {inside}, "
            "which writing there would damage; choose a path outside it"
        )
    if not overwrite and Path(path).exists():
        raise typer.BadParameter(
            f"{option} {path} already exists; choose another path, or add --overwrite to replace it"
        )
    parent = Path(path).absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the folders missing are made when it is written
    if not parent.is_dir():
        raise typer.BadParameter(
            f"cannot write {option} {path}: {parent} is a file, not a folder; choose another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise typer.BadParameter(
            f"cannot write {option} {path}: the folder {parent} is not writable; choose another "
            "path"
        )


def _artifact_above(path: Path) -> Path | None:
    """The saved ragim artifact folder (one holding a ``manifest.json``) that ``path`` lies
    inside, or None."""
    from ragim.io import MANIFEST

    for folder in path.absolute().parents:
        if (folder / MANIFEST).is_file():
            return folder
    return None
