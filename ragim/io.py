"""Artifact directories: manifest, checksums and atomic writes.

Every saved ragim object is a directory that holds its files plus a
``manifest.json``::

    {"format": "ragim.task-index", "format_version": 1, "ragim_version": "0.1.0",
     "files": {"index.faiss": {"sha256": "...", "bytes": 1234}, ...}}

Saves are atomic: the files are written to a temporary directory in the same
parent, then renamed into place. An existing artifact at the path is moved
aside first and deleted only after the new one is in place, so a crash at any
point leaves either the old or the new artifact loadable (see
:func:`read_artifact`, which recovers a moved-aside artifact). Loads verify
the format, the version and every checksum before a single byte is parsed.
Nothing is ever unpickled.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()) / "demo"
>>> _ = write_artifact(d, "ragim.example", {"config.json": b'{"a": 1}'})
>>> art = read_artifact(d, "ragim.example")
>>> art.read_json("config.json")
{'a': 1}
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragim.errors import ArtifactError, ValidationError

MANIFEST = "manifest.json"
_ASIDE = ".ragim-old-"
_TMP = ".ragim-tmp-"
_TRASH = ".ragim-trash-"


#: what each kind of artifact is, in words (the manifest's ``format``)
ARTIFACT_KINDS = {
    "ragim.task-index": "a task index",
    "ragim.task-collection": "a task collection",
    "ragim.model-params": "a model's parameters",
    "ragim.statistical-generator": "a statistical generator",
    "ragim.attention-generator": "an attention generator",
    "ragim.lm-generator": "an LM generator",
    "ragim.rag-im-2024-generator": "a rag-im-2024 generator",
    "ragim.reward-model": "a reward model",
}


def describe_kind(kind: Any) -> str:
    """An artifact kind in words with its ``format``: ``"a reward model ('ragim.reward-model')"``.

    >>> describe_kind("ragim.reward-model"), describe_kind("other")
    ("a reward model ('ragim.reward-model')", "a 'other' artifact")
    """
    words = ARTIFACT_KINDS.get(kind) if isinstance(kind, str) else None
    return f"{words} ({kind!r})" if words else f"a {kind!r} artifact"


def ragim_version() -> str:
    from ragim import __version__

    return __version__


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes, read in blocks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def json_bytes(obj: Any) -> bytes:
    """Deterministic, human-readable JSON encoding used for every JSON file."""
    try:
        return (
            json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"
        ).encode()
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"cannot save: a value is not JSON-safe ({exc}); metadata must hold only "
            "strings, finite numbers, booleans, None, lists and dicts"
        ) from exc


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats (NaN grad norms, ...) replaced by None, tuples as lists and
    dict keys as text, so that it saves as strict JSON (training logs, CLI summaries).

    >>> json_safe({"loss": float("nan"), "steps": (1, 2)})
    {'loss': None, 'steps': [1, 2]}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def parse_json(text: str | bytes, problem: str) -> Any:
    """``json.loads(text)``; text that is not JSON (bad syntax, bad UTF-8, nested too deeply, not
    text at all) raises a one-line ``ValidationError`` ``"<problem>: <why>"``.

    >>> parse_json('{"a": 1}', "schema JSON is not valid JSON")
    {'a': 1}
    >>> parse_json("{", "schema JSON is not valid JSON")
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: schema JSON is not valid JSON: Expecting property name ...
    """
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(f"{problem}: {exc}") from exc


def jsonl_bytes(records: list[Mapping[str, Any]]) -> bytes:
    try:
        return "".join(
            json.dumps(r, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"
            for r in records
        ).encode()
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"cannot save: a record is not JSON-safe ({exc}); metadata must hold only "
            "strings, finite numbers, booleans, None, lists and dicts"
        ) from exc


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


FileSource = bytes | Callable[[Path], None]


def make_parent(path: str | os.PathLike) -> Path:
    """Make the folders ``path`` is to be saved in, and return its parent folder.

    Raises
    ------
    ArtifactError
        One line, when a file stands where a folder must be (``"notes.txt/model"``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        above = next((p for p in path.parents if p.exists()), path.parent)
        raise ArtifactError(
            f"cannot save to {path}: {above} is a file, not a folder; choose another path"
        ) from exc
    return path.parent


def write_artifact(
    path: str | os.PathLike,
    kind: str,
    files: Mapping[str, FileSource],
    *,
    format_version: int = 1,
    overwrite: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Atomically write an artifact directory.

    Parameters
    ----------
    path : path of the artifact directory.
    kind : the manifest's ``format``, for example ``"ragim.task-index"``.
    files : file name -> bytes, or a callable that writes the file to the path it is given
        (for writers such as ``faiss.write_index`` or peft's ``save_pretrained``). A name may
        contain ``/`` to write into a subdirectory; a callable may also create a directory,
        whose files are then all checksummed.
    overwrite : replace an existing artifact (atomically) instead of raising.
    extra : more JSON-safe fields for the manifest.
    """
    path = Path(path)
    parent = make_parent(path)
    if path.exists() and not overwrite:
        raise ArtifactError(f"{path} already exists; pass overwrite=True to replace it")
    if _is_foreign_dir(path):
        raise ArtifactError(
            f"refusing to overwrite {path}: it exists but is not a ragim artifact (no {MANIFEST})"
        )
    other = _existing_format(path)
    if other is not None and other != kind:
        raise ArtifactError(
            f"refusing to overwrite {path}: it holds another kind of ragim artifact ({other}), "
            f"not a {kind}; save elsewhere or remove it first"
        )
    tmp = parent / f"{_TMP}{path.name}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        for name, source in files.items():
            if (
                not isinstance(name, str)
                or name == MANIFEST
                or ".." in Path(name).parts
                or Path(name).is_absolute()
            ):
                raise ArtifactError(f"invalid artifact file name {name!r}")
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes | bytearray):
                with open(target, "wb") as fh:
                    fh.write(source)
                    fh.flush()
                    os.fsync(fh.fileno())
            else:
                source(target)
        entries = {}
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
            rel = f.relative_to(tmp).as_posix()
            entries[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        manifest = {
            "format": kind,
            "format_version": int(format_version),
            "ragim_version": ragim_version(),
            "files": entries,
            **dict(extra or {}),
        }
        with open(tmp / MANIFEST, "wb") as fh:
            fh.write(json_bytes(manifest))
            fh.flush()
            os.fsync(fh.fileno())
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _existing_format(path: Path) -> str | None:
    """The ``format`` of the artifact at ``path`` (None: nothing there, or a manifest that
    cannot be read, which the loader reports)."""
    try:
        return str(json.loads((path / MANIFEST).read_text(encoding="utf-8"))["format"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_foreign_dir(path: Path) -> bool:
    """``path`` exists but holds no manifest. Checked a few times: a concurrent save may move
    the artifact away between the two checks (a rename is atomic, a pair of checks is not)."""
    for _ in range(3):
        if (path / MANIFEST).is_file() or not path.exists():
            return False
        time.sleep(0.002)
    return True


_SWAP_ATTEMPTS = 50


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``, moving an existing artifact aside first.

    Another process may save to the same path at the same time: it can move ``path``
    away, or put its own artifact there, between our two renames. Each such race is
    retried, so the last writer wins whole; ``path`` is never left missing by a failure
    here (the moved-aside artifact is put back).
    """
    asides: list[Path] = []
    last: OSError | None = None
    try:
        for attempt in range(_SWAP_ATTEMPTS):
            if path.exists() or path.is_symlink():
                aside = path.parent / f"{_ASIDE}{path.name}-{uuid.uuid4().hex[:12]}"
                try:
                    os.rename(path, aside)
                except FileNotFoundError as exc:  # a concurrent writer moved it first
                    last = exc
                    continue
                asides.append(aside)
            try:
                os.rename(tmp, path)
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                last = exc  # a concurrent writer put its artifact in place between our renames
                time.sleep(0.001 * (attempt + 1))
        else:
            raise ArtifactError(
                f"could not move the new artifact into place at {path}: other "
                f"processes kept replacing it ({last}); try the save again"
            )
    except BaseException as exc:
        if asides and not path.exists():
            try:  # never leave the path missing: put the last moved-aside artifact back
                os.rename(asides.pop(), path)
            except OSError:
                pass
        if isinstance(exc, OSError) and not isinstance(exc, ArtifactError):
            raise ArtifactError(
                f"could not move the new artifact into place at {path}: {exc}"
            ) from exc
        raise
    for aside in asides:
        _remove_dir(aside)
    _fsync_dir(path.parent)


def _remove_dir(d: Path) -> None:
    """Delete a directory so that a crash midway never leaves a partial copy under its name:
    rename it to a trash name first (atomic), then delete that."""
    trash = d.parent / f"{_TRASH}{uuid.uuid4().hex[:12]}"
    try:
        os.rename(d, trash)
    except OSError:
        trash = d
    shutil.rmtree(trash, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:  # removed by a concurrent save in the meantime
        return -1.0


def _recover(path: Path) -> Path:
    """If a save crashed after moving the old artifact aside, return the moved-aside copy."""
    seen_aside = False
    for _ in range(3):  # a concurrent save may finish (and delete its moved-aside copy) meanwhile
        if path.exists():
            return path
        own = re.compile(re.escape(f"{_ASIDE}{path.name}-") + r"[^-]+")  # not those of "name-2"
        candidates = sorted(
            (c for c in path.parent.glob(f"{_ASIDE}{path.name}-*") if own.fullmatch(c.name)),
            key=_mtime,
            reverse=True,
        )
        for c in candidates:
            if _looks_complete(c):
                return c
        if not candidates and not path.exists():
            break
        seen_aside = seen_aside or bool(candidates)
    if seen_aside:  # moved aside and deleted by a save that has not put its own in place yet
        raise ArtifactChanged(f"{path} vanished while a concurrent save was replacing it")
    raise ArtifactError(f"no artifact at {path}: the directory does not exist")


class ArtifactChanged(ArtifactError):
    """The artifact was replaced by a concurrent save while it was being read; loading
    it again reads the new version."""


def _looks_complete(d: Path) -> bool:
    """A moved-aside copy is usable if its manifest parses and lists only files that exist."""
    try:
        files = json.loads((d / MANIFEST).read_bytes())["files"]
        return all((d / name).is_file() for name in files)
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return False


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_signed(path: Path, hint: str = "") -> tuple[bytes, tuple[int, int, int, int]]:
    """``path``'s bytes and the :func:`_signature` of the file they were read from; an unreadable
    file is an ArtifactChanged error (``hint`` ends its message)."""
    try:
        with open(path, "rb") as fh:
            sig = _signature(os.fstat(fh.fileno()))
            return fh.read(), sig
    except OSError as exc:
        raise ArtifactChanged(f"{path}: cannot be read ({exc}){hint}") from exc


@dataclass
class Artifact:
    """A verified artifact directory opened for reading.

    Every read goes through :meth:`read_bytes`, which returns exactly the bytes that
    were verified: if a file was replaced after verification (a concurrent save), the
    read fails with :class:`ArtifactError` instead of mixing two versions.
    """

    path: Path
    manifest: dict
    verified: dict = field(default_factory=dict, repr=False)

    @property
    def files(self) -> dict:
        return self.manifest["files"]

    def file(self, name: str) -> Path:
        if name not in self.files:
            raise ArtifactError(
                f"{self.path}: the manifest lists no file {name!r}; this is not a complete "
                f"{self.manifest.get('format')} artifact"
            )
        return self.path / name

    def read_bytes(self, name: str) -> bytes:
        f = self.file(name)
        data, sig = _read_signed(f, "; was the artifact moved or replaced meanwhile?")
        expected = self.verified.get(name)
        if expected is not None and sig != expected:
            entry = self.files[name]
            if len(data) != entry.get("bytes") or sha256_bytes(data) != entry.get("sha256"):
                raise ArtifactChanged(
                    f"{f}: the file changed after its checksum was verified (a concurrent save to "
                    f"{self.path}?); load the artifact again"
                )
        return data

    def check_unchanged(self, name: str) -> None:
        """Raise if ``name`` was replaced since verification (for files read by path)."""
        expected = self.verified.get(name)
        if expected is None:
            return
        try:
            sig = _signature(os.stat(self.path / name))
        except OSError as exc:
            raise ArtifactChanged(f"{self.path / name}: vanished while loading ({exc})") from exc
        if sig != expected:
            raise ArtifactChanged(
                f"{self.path / name}: the file changed while loading (a "
                f"concurrent save to {self.path}?); load the artifact again"
            )

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.read_bytes(name))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
            raise ArtifactError(f"{self.path / name}: not valid JSON ({exc})") from exc

    def read_jsonl(self, name: str) -> list[dict]:
        try:
            text = self.read_bytes(name).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ArtifactError(f"{self.path / name}: not valid UTF-8 text ({exc})") from exc
        out = []
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, RecursionError, ValueError) as exc:
                raise ArtifactError(
                    f"{self.path / name}: line {i + 1} is not valid JSON ({exc})"
                ) from exc
            if not isinstance(rec, dict):
                raise ArtifactError(f"{self.path / name}: line {i + 1} is not a JSON object")
            out.append(rec)
        return out

    def read_npz(self, name: str) -> dict[str, np.ndarray]:
        data = self.read_bytes(name)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                if not hasattr(z, "files"):
                    raise ValueError("not an .npz archive")
                return {k: z[k] for k in z.files}
        except ArtifactError:
            raise
        except (
            Exception
        ) as exc:  # zipfile, numpy and OS errors: never unpickle, never a bare traceback
            reason = (
                "it holds Python objects, which are never unpickled"
                if "pickle" in str(exc).lower()
                else str(exc)
            )
            raise ArtifactError(f"{self.path / name}: not a valid array file ({reason})") from exc


def read_artifact(
    path: str | os.PathLike,
    kind: str,
    *,
    supported_versions: tuple[int, ...] = (1,),
    verify: bool = True,
) -> Artifact:
    """Open an artifact directory after checking its kind, version and checksums.

    If a concurrent save replaces the artifact during verification, verification starts
    again on the new one (a few times) instead of reporting damage.

    Raises
    ------
    ArtifactError
        Naming the file that is missing, damaged or foreign, and what was expected.
    """
    last: ArtifactError | None = None
    for _ in range(5):
        try:
            return _read_artifact_once(Path(path), kind, supported_versions, verify)
        except ArtifactChanged as exc:
            last = exc
    raise ArtifactError(
        f"{path}: the artifact kept changing while it was read ({last}); other processes are "
        "saving to it, load it again later"
    ) from last


def _manifest_changed(mpath: Path, sig: tuple) -> bool:
    try:
        return _signature(os.stat(mpath)) != sig
    except OSError:
        return True


def _read_artifact_once(
    path: Path, kind: str, supported_versions: tuple[int, ...], verify: bool
) -> Artifact:
    asked = path
    path = _recover(path)
    if not path.is_dir():
        if not path.exists():
            raise ArtifactChanged(f"{path} vanished")
        raise ArtifactError(f"{path} is not a ragim artifact: it is a file, not a directory")
    mpath = path / MANIFEST
    if not mpath.is_file():
        if path != asked or not path.exists():
            # a moved-aside copy that the save which replaced it is deleting right now
            raise ArtifactChanged(f"{path} vanished while loading {asked} (a concurrent save)")
        raise ArtifactError(f"{path} is not a ragim artifact: {MANIFEST} is missing")
    raw, msig = _read_signed(mpath)
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise ArtifactError(f"{mpath}: the manifest is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ArtifactError(f"{mpath}: the manifest has no 'files' table; the artifact is damaged")
    found = manifest.get("format")
    if found != kind:
        raise ArtifactError(
            f"{path} holds {describe_kind(found)}, but {describe_kind(kind)} was expected; "
            "pass a path that holds one"
        )
    version = manifest.get("format_version")
    if (
        isinstance(version, bool)
        or not isinstance(version, int)
        or version not in supported_versions
    ):
        raise ArtifactError(
            f"{path}: {kind} format_version {version!r} is not supported by ragim "
            f"{ragim_version()} (supported: {list(supported_versions)}); "
            "upgrade ragim or re-save the artifact"
        )
    for name, entry in manifest["files"].items():
        if (
            not name
            or name == MANIFEST
            or ".." in Path(name).parts
            or Path(name).is_absolute()
            or "\x00" in name
        ):
            raise ArtifactError(f"{mpath}: invalid file name {name!r}")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or isinstance(entry.get("bytes"), bool)
            or not isinstance(entry.get("bytes"), int)
        ):
            raise ArtifactError(
                f"{mpath}: the entry for {name!r} has no valid sha256/bytes; "
                "the manifest is damaged"
            )
    verified: dict[str, tuple] = {}
    if verify:
        for name, entry in manifest["files"].items():
            f = path / name
            problem = None
            try:
                with open(f, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    ok = st.st_size == entry["bytes"]
                    if ok:
                        ok = hashlib.file_digest(fh, "sha256").hexdigest() == entry["sha256"]
                if not ok:
                    problem = (
                        f"{path}: checksum mismatch for {name!r}; the file is truncated, "
                        "damaged or was replaced. Re-create or re-download the artifact."
                    )
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                problem = f"{path}: file {name!r} listed in the manifest is missing"
            except OSError as exc:
                problem = f"{path}: file {name!r} cannot be read ({exc})"
            if problem is not None:
                if _manifest_changed(mpath, msig):
                    raise ArtifactChanged(problem)
                raise ArtifactError(problem)
            verified[name] = _signature(st)
    if _manifest_changed(mpath, msig):
        raise ArtifactChanged(f"{mpath} was replaced during verification")
    return Artifact(path=path, manifest=manifest, verified=verified)
