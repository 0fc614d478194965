"""Artifact directories: manifest, checksums and atomic writes.

Every saved ragim object is a directory that holds its files plus a
``manifest.json``::

    {"format": "ragim.task-index", "format_version": 1, "ragim_version": "0.1.0",
     "files": {"index.faiss": {"sha256": "...", "bytes": 1234}, ...}}

Saves are atomic: the files are written to a temporary directory in the same
parent, then renamed into place. An existing artifact at the path is moved
aside first and deleted only after the new one is in place, so a crash at any
point leaves either the old or the new artifact on disk: a save killed between
its two renames leaves the old one at ``.ragim-old-<name>-<hex>``, which a load
of the missing path names (rename it back to restore it) and the next
successful save of that path deletes. Loads verify the format, the version and
every checksum before a single byte is parsed, and read only regular files
inside the folder (no symbolic links, FIFOs or devices), never more bytes than
the manifest declares. Nothing is ever unpickled.

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
import glob
import hashlib
import io
import json
import math
import os
import re
import shutil
import stat
import time
import uuid
import zipfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragim.errors import ArtifactError, ValidationError

try:  # advisory locks mark the folders of saves in progress (POSIX; elsewhere none are taken)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
_ASIDE = ".ragim-old-"
_TMP = ".ragim-tmp-"
_TRASH = ".ragim-trash-"
#: the most bytes a manifest may have (a few thousand file entries need far less)
_MANIFEST_MAX = 64 * 2**20


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


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"a bare {token}, which JSON does not allow and ragim never writes")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's ``(key, value)`` pairs as a dict; a ValueError naming a key given twice."""
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(
                    f"the key {key!r} appears twice in one object, which ragim never writes (a "
                    "reader would keep one of the two values)"
                )
            seen.add(key)
    return out


def strict_json(data: str | bytes) -> Any:
    """``json.loads(data)`` that refuses what Python's parser accepts by default but ragim never
    writes (a file holding one was made or edited elsewhere): the bare ``NaN``, ``Infinity``
    and ``-Infinity`` tokens, and a key twice in one object (``{"age": 6.5, "age": 65.1}``,
    where Python keeps the last value and other readers may keep the first).

    Raises
    ------
    ValueError
        (``json.JSONDecodeError`` among them) for text that is not strict JSON.

    >>> strict_json('{"a": 1}')
    {'a': 1}
    >>> strict_json('{"a": NaN}')
    Traceback (most recent call last):
    ...
    ValueError: a bare NaN, which JSON does not allow and ragim never writes
    >>> strict_json('{"a": {"b": 1, "b": 2}}')
    Traceback (most recent call last):
    ...
    ValueError: the key 'b' appears twice in one object, which ragim never writes (a reader \
would keep one of the two values)
    """
    return json.loads(data, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _what(mode: int) -> str:
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


class _Missing(ArtifactError):
    """A file the manifest lists is not there."""


def _open_regular(root: Path, name: str) -> tuple[int, os.stat_result]:
    """An open descriptor of the regular file ``root/name`` and its stat.

    Every part of ``name`` below ``root`` is checked with ``lstat`` before anything is opened: a
    symbolic link (which could lead outside the artifact), a FIFO (whose ``open`` blocks) or a
    device (``/dev/zero`` never ends) is refused in one line naming the path; the file is opened
    with ``O_NOFOLLOW | O_NONBLOCK`` so one swapped in meanwhile is refused too. ``root`` itself
    may be a link (``models/current -> models/v3``).
    """
    cur = root
    parts = Path(name).parts
    for i, part in enumerate(parts):
        cur = cur / part
        try:
            st = os.lstat(cur)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise _Missing(f"{root}: file {name!r} listed in the manifest is missing") from exc
        rel = "/".join(parts[: i + 1])
        if stat.S_ISLNK(st.st_mode):
            raise ArtifactError(
                f"{root}: {rel!r} is a symbolic link; an artifact holds only regular files and "
                "folders inside its own folder, never links"
            )
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            raise ArtifactError(f"{root}: {rel!r} is {_what(st.st_mode)}, not a folder")
        if i == len(parts) - 1 and not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{root}: {rel!r} is {_what(st.st_mode)}, not a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(cur, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise _Missing(f"{root}: file {name!r} listed in the manifest is missing") from exc
    except OSError as exc:
        raise ArtifactError(f"{root}: {name!r} cannot be opened ({exc.strerror})") from exc
    fst = os.fstat(fd)
    if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise ArtifactChanged(f"{root}: {name!r} was replaced while it was opened")
    return fd, fst


def _read_fd(fd: int, limit: int, digest: Any = None) -> tuple[bytes, int]:
    """Up to ``limit + 1`` bytes from ``fd`` (one more than expected tells a longer file); with
    ``digest`` (a hashlib object) the bytes are hashed instead of kept. Returns (bytes, count)."""
    chunks, n = [], 0
    while n <= limit:
        block = os.read(fd, min(1 << 20, limit + 1 - n))
        if not block:
            break
        n += len(block)
        if digest is None:
            chunks.append(block)
        else:
            digest.update(block)
    return b"".join(chunks), n


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


def write_file(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to the file ``path`` atomically and return ``path``.

    The bytes go to a temporary file beside ``path`` (same folder, so the rename stays on one
    file system), are flushed to disk, and the temporary file is renamed over ``path``: a
    reader sees the old file or the whole new one, never a part, and a failed write leaves
    the old file as it was and no temporary file behind. A file that is replaced keeps its
    permission bits (an export readable by its owner only stays so); a symbolic link at
    ``path`` is replaced by the file, and its target is left alone. For single-file outputs
    (CSV, JSONL, benchmark results); an artifact folder is :func:`write_artifact`'s.

    Parameters
    ----------
    path : the file to write; its folders are made (:func:`make_parent`).
    data : the whole content, bytes-like (``str`` must be encoded first).

    Raises
    ------
    ValidationError
        When ``data`` is not bytes-like, or ``path`` has no file name (``""``, ``"."``).
    ArtifactError
        One line, when ``path`` is a folder, or a file stands where a folder of ``path``
        must be.
    OSError
        When the disk refuses the write (full, read-only); ``path`` is unchanged.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "out" / "result.json"
    >>> write_file(p, b'{"auroc": 0.8}').read_bytes()
    b'{"auroc": 0.8}'
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValidationError(
            f"write_file needs bytes, got {type(data).__name__}; encode text first"
        )
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise ValidationError(f"write_file needs a file name, got the path {str(path)!r}")
    if path.is_dir() and not path.is_symlink():
        raise ArtifactError(f"cannot write the file {path}: it is a folder")
    make_parent(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:  # a new file (or a dangling link): the umask decides, as for open()
        mode = None
    # the temporary name is at most 100 + 18 bytes of the target's, so long names still fit
    tmp = path.with_name(f".{path.name[:100]}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            if mode is not None:
                os.chmod(tmp, mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)  # the rename itself survives a power cut
    return path


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
    other = artifact_format(path)
    if other is not None and other != kind:
        raise ArtifactError(
            f"refusing to overwrite {path}: it holds another kind of ragim artifact ({other}), "
            f"not a {kind}; save elsewhere or remove it first"
        )
    tmp = parent / f"{_TMP}{path.name}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    held = [_lock(tmp)]  # marks the folder as a save in progress for other saves' clean-up
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
        _swap_into_place(tmp, path, held)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _unlock(held.pop())
        raise
    _unlock(held.pop())
    return path


def _lock(d: Path, wait: float = 0.0) -> int | None:
    """A descriptor holding an exclusive advisory lock on folder ``d`` (None: a link, gone,
    locked by another process for longer than ``wait`` seconds, or no locks here). A save holds
    one on its temporary folder until it is renamed into place, and on each artifact it moves
    aside until that is deleted; the kernel drops them when the process dies, so an unlocked
    leftover belongs to no save in progress."""
    if fcntl is None:
        return None
    try:
        fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.001)
        except OSError:
            break
    os.close(fd)
    return None


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _in_use(d: Path) -> bool:
    """Whether a live save holds folder ``d`` (see :func:`_lock`). A folder that vanished counts
    as in use (a save is deleting it); where locks cannot be taken, a folder is in use while it
    is younger than a minute."""
    if not os.path.lexists(d):
        return True
    if os.path.islink(d):
        return False
    if fcntl is not None:
        try:
            fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_NOFOLLOW)
        except FileNotFoundError:
            return True
        except OSError:
            fd = None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return False
            except BlockingIOError:
                return True
            except OSError:
                pass
            finally:
                os.close(fd)
    return time.time() - _mtime(d) < 60


def _leftovers(path: Path, prefix: str) -> list[Path]:
    """The ``prefix<name>-<suffix>`` siblings of ``path`` (not those of ``<name>-2``), newest
    first."""
    own = re.compile(re.escape(f"{prefix}{path.name}-") + r"[^-]+")
    try:
        found = list(path.parent.glob(f"{glob.escape(prefix + path.name)}-*"))
    except OSError:
        return []
    return sorted((c for c in found if own.fullmatch(c.name)), key=_mtime, reverse=True)


def _remove_stale(path: Path) -> None:
    """Delete what interrupted saves of ``path`` left beside it (moved-aside old versions,
    half-written temporary folders, half-deleted copies), except those a live save holds."""
    for prefix in (_ASIDE, _TMP, _TRASH):
        for d in _leftovers(path, prefix):
            if os.path.islink(d):
                _remove_dir(d, path.name)
                continue
            fd = _lock(d)
            if fd is None:  # a save in progress holds it (or it is gone, or no locks here)
                continue
            try:
                _remove_dir(d, path.name)
            finally:
                _unlock(fd)


def artifact_format(path: str | os.PathLike) -> str | None:
    """The ``format`` in the manifest of the artifact folder ``path`` (``"ragim.task-index"``),
    read as a load reads it (a regular file, at most 64 MiB, strict JSON); None when nothing is
    there or the manifest cannot be read, which a load then reports in full."""
    path = Path(path)
    try:
        return str(strict_json(_read_signed(path, MANIFEST, _MANIFEST_MAX)[0])["format"])
    except (ArtifactError, OSError, ValueError, KeyError, TypeError, RecursionError):
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


def _swap_into_place(tmp: Path, path: Path, held: list[int | None]) -> None:
    """Rename ``tmp`` to ``path``, moving an existing artifact aside first.

    Another process may save to the same path at the same time: it can move ``path``
    away, or put its own artifact there, between our two renames. Each such race is
    retried, so the last writer wins whole; ``path`` is never left missing by a failure
    here (the moved-aside artifact is put back). ``held``: the lock on ``tmp``, released (set to
    None) as soon as ``tmp`` is in place, where another save must be able to lock it.
    """
    asides: list[Path] = []
    locks: list[int | None] = []
    last: OSError | None = None
    try:
        for attempt in range(_SWAP_ATTEMPTS):
            if path.exists() or path.is_symlink():
                aside = path.parent / f"{_ASIDE}{path.name}-{uuid.uuid4().hex[:12]}"
                # the old artifact, locked while it is moved aside (a save that just put it in
                # place holds its lock until its rename is done)
                old_lock = _lock(path, wait=0.05)
                try:
                    os.rename(path, aside)
                except FileNotFoundError as exc:  # a concurrent writer moved it first
                    _unlock(old_lock)
                    last = exc
                    continue
                asides.append(aside)
                locks.append(old_lock)
            try:
                os.rename(tmp, path)
                _unlock(held[0])
                held[0] = None
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
        for fd in locks:
            _unlock(fd)
        if isinstance(exc, OSError) and not isinstance(exc, ArtifactError):
            raise ArtifactError(
                f"could not move the new artifact into place at {path}: {exc}"
            ) from exc
        raise
    for aside in asides:
        _remove_dir(aside, path.name)
    for fd in locks:
        _unlock(fd)
    _remove_stale(path)
    _fsync_dir(path.parent)


def _remove_dir(d: Path, name: str) -> None:
    """Delete a directory so that a crash midway never leaves a partial copy under its name:
    rename it to a trash name first (atomic; ``.ragim-trash-<name>-<hex>``, which the next save
    of ``name`` deletes), then delete that. A link is removed, never followed."""
    trash = d if d.name.startswith(_TRASH) else d.parent / f"{_TRASH}{name}-{uuid.uuid4().hex[:12]}"
    try:
        os.rename(d, trash)
    except OSError:
        trash = d
    if os.path.islink(trash):
        try:
            os.unlink(trash)
        except OSError:
            pass
        return
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
        return os.lstat(p).st_mtime
    except OSError:  # removed by a concurrent save in the meantime
        return -1.0


def _locate(path: Path) -> Path:
    """``path``, if something is there. A missing path whose save is between its two renames
    (a moved-aside copy that a live save holds) is waited for; one left by an interrupted save
    is never loaded in its place: the error names it, to be renamed back by hand."""
    deadline = time.monotonic() + 2.0
    while True:
        if os.path.lexists(path):
            return path
        asides = _leftovers(path, _ASIDE)
        busy = any(_in_use(a) for a in asides)
        if not busy and os.path.lexists(path):  # a save finished between the looks
            return path
        if not asides:
            raise ArtifactError(f"no artifact at {path}: the directory does not exist")
        if not busy:
            whole = [a for a in asides if _looks_complete(a)]
            left = (whole or asides)[0]
            more = f" ({len(asides) - 1} older copies beside it)" if len(asides) > 1 else ""
            raise ArtifactError(
                f"no artifact at {path}; an interrupted save left its previous version at "
                f"{left}{more}: rename it to {path.name} to restore it"
            )
        if time.monotonic() > deadline:
            raise ArtifactChanged(f"{path} vanished while a concurrent save was replacing it")
        time.sleep(0.002)


class ArtifactChanged(ArtifactError):
    """The artifact was replaced by a concurrent save while it was being read; loading
    it again reads the new version."""


def _looks_complete(d: Path) -> bool:
    """A moved-aside copy is whole if its manifest parses and lists only files that exist."""
    try:
        raw, _ = _read_signed(d, MANIFEST, _MANIFEST_MAX)
        files = strict_json(raw)["files"]
        return all(os.path.isfile(d / name) for name in files)
    except (ArtifactError, OSError, ValueError, TypeError, KeyError, RecursionError):
        return False


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_signed(
    root: Path, name: str, limit: int, hint: str = ""
) -> tuple[bytes, tuple[int, int, int, int]]:
    """The bytes of the regular file ``root/name`` (at most ``limit + 1`` of them) and the
    :func:`_signature` of the file they were read from. A file that is not there or cannot be
    read is an ArtifactChanged error (``hint`` ends its message); a link, FIFO or device an
    ArtifactError."""
    try:
        fd, st = _open_regular(root, name)
    except _Missing as exc:
        raise ArtifactChanged(f"{root / name}: cannot be read (it is missing){hint}") from exc
    try:
        return _read_fd(fd, limit)[0], _signature(st)
    except OSError as exc:
        raise ArtifactChanged(f"{root / name}: cannot be read ({exc}){hint}") from exc
    finally:
        os.close(fd)


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
        """The bytes of file ``name``: a regular file inside the folder, read up to the size the
        manifest declares (one more byte tells a longer file)."""
        f = self.file(name)
        entry = self.files[name]
        expected = self.verified.get(name)
        try:
            data, sig = _read_signed(
                self.path, name, entry["bytes"], "; was the artifact moved or replaced meanwhile?"
            )
        except ArtifactChanged:
            raise
        except ArtifactError as exc:
            if expected is not None:  # a regular file when it was verified
                raise ArtifactChanged(str(exc)) from exc
            raise
        if expected is not None and sig != expected:
            if len(data) != entry.get("bytes") or sha256_bytes(data) != entry.get("sha256"):
                raise ArtifactChanged(
                    f"{f}: the file changed after its checksum was verified (a concurrent save to "
                    f"{self.path}?); load the artifact again"
                )
        elif len(data) > entry["bytes"]:
            raise ArtifactError(
                f"{f}: longer than the {entry['bytes']} bytes the manifest declares; the file "
                "was replaced or the artifact is damaged"
            )
        return data

    def check_unchanged(self, name: str) -> None:
        """Raise if ``name`` was replaced since verification (for files read by path)."""
        expected = self.verified.get(name)
        if expected is None:
            return
        try:
            sig = _signature(os.lstat(self.path / name))
        except OSError as exc:
            raise ArtifactChanged(f"{self.path / name}: vanished while loading ({exc})") from exc
        if sig != expected:
            raise ArtifactChanged(
                f"{self.path / name}: the file changed while loading (a "
                f"concurrent save to {self.path}?); load the artifact again"
            )

    def read_json(self, name: str) -> Any:
        """File ``name`` parsed as strict JSON (a bare NaN or Infinity is refused)."""
        try:
            return strict_json(self.read_bytes(name))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
            raise ArtifactError(f"{self.path / name}: not valid JSON ({exc})") from exc

    def read_jsonl(self, name: str) -> list[dict]:
        """File ``name`` as JSON lines, each a strict JSON object."""
        try:
            text = self.read_bytes(name).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ArtifactError(f"{self.path / name}: not valid UTF-8 text ({exc})") from exc
        out = []
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                rec = strict_json(line)
            except (json.JSONDecodeError, RecursionError, ValueError) as exc:
                raise ArtifactError(
                    f"{self.path / name}: line {i + 1} is not valid JSON ({exc})"
                ) from exc
            if not isinstance(rec, dict):
                raise ArtifactError(f"{self.path / name}: line {i + 1} is not a JSON object")
            out.append(rec)
        return out

    def read_npz(
        self, name: str, members: Collection[str] | re.Pattern | None = None
    ) -> dict[str, np.ndarray]:
        """The arrays of ``.npz`` file ``name``, by member name (without ``.npy``).

        Only the members the format defines are read: ``members`` (names, or a pattern they
        fully match) refuses any other. Before a member is expanded, its size in the archive's
        directory must be that of the shape and dtype its header declares, and a compressed
        member may expand at most 64-fold (ragim writes stored ones): a zip bomb is refused
        unread. Arrays of Python objects are refused, never unpickled.
        """
        where = self.path / name
        data = self.read_bytes(name)
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                infos = zf.infolist()
                seen: set[str] = set()
                for info in infos:
                    _check_npz_member(zf, info, members, seen)
                out = {}
                for info in infos:
                    with zf.open(info) as fh:
                        out[info.filename[:-4]] = np.lib.format.read_array(fh, allow_pickle=False)
                return out
        except _BadMember as exc:
            raise ArtifactError(f"{where}: {exc}") from exc
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
            raise ArtifactError(f"{where}: not a valid array file ({reason})") from exc

    def read_parquet(
        self,
        name: str,
        *,
        rows: int | None = None,
        columns: Collection[str] = (),
        declared_in: str = "the artifact",
    ) -> Any:
        """Parquet file ``name`` as a pandas DataFrame, after its metadata is checked against
        what the artifact declares (in file ``declared_in``): ``rows`` rows (None: any number)
        and the ``columns`` named, each column once. A mismatch is refused before any row is
        decoded, so a small file that decodes to millions of rows never fills memory.
        """
        import pyarrow.parquet as pq

        where = self.path / name
        data = self.read_bytes(name)
        try:
            pf = pq.ParquetFile(io.BytesIO(data))
            names = list(pf.schema_arrow.names)
            n_rows = pf.metadata.num_rows
        except Exception as exc:  # pyarrow raises several types
            raise ArtifactError(f"{where}: cannot be read ({_first_line(exc)})") from exc
        twice = sorted({c for c in names if names.count(c) > 1})
        if twice:
            more = f" (and {len(twice) - 1} more columns twice or more)" if twice[1:] else ""
            raise ArtifactError(
                f"{where}: the column {twice[0]!r} appears {names.count(twice[0])} times{more}"
            )
        absent = [c for c in columns if c not in names]
        if absent:
            raise ArtifactError(f"{where}: lacks the columns {absent[:10]}")
        if rows is not None and n_rows != rows:
            raise ArtifactError(
                f"{where}: holds {n_rows} rows, but {declared_in} declares {rows}; "
                "the file was replaced or the artifact is damaged"
            )
        try:
            return pf.read().to_pandas()
        except Exception as exc:  # pyarrow raises several types
            raise ArtifactError(f"{where}: cannot be read ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _BadMember(ValueError):
    """An ``.npz`` member that is refused unread."""


#: how many times its stored size a compressed ``.npz`` member may expand to
_NPZ_MAX_RATIO = 64


def _check_npz_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    members: Collection[str] | re.Pattern | None,
    seen: set[str],
) -> None:
    """Raise _BadMember unless ``info`` is an expected, unique ``.npy`` member whose size in the
    zip directory is exactly what its header's shape and dtype make (read from its first bytes
    only) and, if compressed, plausibly compressed."""
    fname = info.filename
    key = fname[:-4] if fname.endswith(".npy") else None
    if key is None:
        raise _BadMember(f"holds a member {fname!r} that is not an array (.npy); refused unread")
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise _BadMember(f"the array {key!r} has .npy format version {version}")
        header = fh.tell()
    if dtype.hasobject:
        raise _BadMember(f"the array {key!r} holds Python objects, which are never unpickled")
    if members is not None and not (
        members.fullmatch(key) if isinstance(members, re.Pattern) else key in members
    ):
        raise _BadMember(f"holds an array {key!r} that this file never has; refused unread")
    if key in seen:
        raise _BadMember(f"holds the array {key!r} twice")
    seen.add(key)
    size = header + math.prod(shape) * dtype.itemsize
    if info.file_size != size:
        raise _BadMember(
            f"the array {key!r} declares shape {tuple(shape)} of {dtype} ({size} bytes) but "
            f"its zip entry expands to {info.file_size} bytes; refused unread"
        )
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > max(
        _NPZ_MAX_RATIO * info.compress_size, 2**20
    ):
        raise _BadMember(
            f"the array {key!r} expands from {info.compress_size} to {info.file_size} bytes, "
            "far more than array data compresses; refused unread"
        )


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
    path = _locate(path)
    if not path.is_dir():
        if not path.exists():
            raise ArtifactChanged(f"{path} vanished")
        raise ArtifactError(f"{path} is not a ragim artifact: it is a file, not a directory")
    mpath = path / MANIFEST
    if not os.path.lexists(mpath):
        if not path.exists():
            raise ArtifactChanged(f"{path} vanished while loading (a concurrent save)")
        raise ArtifactError(f"{path} is not a ragim artifact: {MANIFEST} is missing")
    raw, msig = _read_signed(path, MANIFEST, _MANIFEST_MAX)
    if len(raw) > _MANIFEST_MAX:
        raise ArtifactError(
            f"{mpath}: the manifest is larger than {_MANIFEST_MAX // 2**20} MiB; "
            "it is not one ragim wrote"
        )
    try:
        manifest = strict_json(raw)
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
            or entry["bytes"] < 0
        ):
            raise ArtifactError(
                f"{mpath}: the entry for {name!r} has no valid sha256/bytes; "
                "the manifest is damaged"
            )
    verified: dict[str, tuple] = {}
    if verify:
        for name, entry in manifest["files"].items():
            problem = None
            try:
                fd, st = _open_regular(path, name)
                try:
                    ok = st.st_size == entry["bytes"]
                    if ok:
                        digest = hashlib.sha256()
                        ok = _read_fd(fd, entry["bytes"], digest)[1] == entry["bytes"]
                        ok = ok and digest.hexdigest() == entry["sha256"]
                finally:
                    os.close(fd)
                if not ok:
                    problem = (
                        f"{path}: checksum mismatch for {name!r}; the file is truncated, "
                        "damaged or was replaced. Re-create or re-download the artifact."
                    )
            except ArtifactChanged:
                raise
            except ArtifactError as exc:  # missing, a link, a FIFO, a device, a folder
                problem = str(exc)
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
