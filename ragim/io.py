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

import hashlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragim.errors import ArtifactError

MANIFEST = "manifest.json"
_ASIDE = ".ragim-old-"
_TMP = ".ragim-tmp-"


def ragim_version() -> str:
    from ragim import __version__

    return __version__


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_bytes(obj: Any) -> bytes:
    """Deterministic, human-readable JSON encoding used for every JSON file."""
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n").encode()


def jsonl_bytes(records: list[Mapping[str, Any]]) -> bytes:
    return "".join(
        json.dumps(r, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n" for r in records
    ).encode()


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


FileSource = bytes | Callable[[Path], None]


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
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise ArtifactError(f"{path} already exists; pass overwrite=True to replace it")
    if path.exists() and not (path / MANIFEST).is_file():
        raise ArtifactError(
            f"refusing to overwrite {path}: it exists but is not a ragim artifact (no {MANIFEST})"
        )
    tmp = parent / f"{_TMP}{path.name}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        for name, source in files.items():
            if name == MANIFEST or ".." in Path(name).parts or Path(name).is_absolute():
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
            entries[rel] = {"sha256": _sha256_file(f), "bytes": f.stat().st_size}
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


def _swap_into_place(tmp: Path, path: Path) -> None:
    aside = None
    if path.exists():
        aside = path.parent / f"{_ASIDE}{path.name}-{uuid.uuid4().hex[:12]}"
        os.rename(path, aside)
    try:
        os.rename(tmp, path)
    except OSError:
        if aside is not None and not path.exists():
            os.rename(aside, path)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    _fsync_dir(path.parent)


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


def _recover(path: Path) -> Path:
    """If a save crashed after moving the old artifact aside, return the moved-aside copy."""
    if path.exists():
        return path
    candidates = sorted(
        path.parent.glob(f"{_ASIDE}{path.name}-*"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for c in candidates:
        if (c / MANIFEST).is_file():
            return c
    raise ArtifactError(f"no artifact at {path}: the directory does not exist")


@dataclass
class Artifact:
    """A verified artifact directory opened for reading."""

    path: Path
    manifest: dict

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
        return self.file(name).read_bytes()

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.read_bytes(name))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{self.path / name}: not valid JSON ({exc})") from exc

    def read_jsonl(self, name: str) -> list[dict]:
        out = []
        for i, line in enumerate(self.read_bytes(name).decode("utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ArtifactError(f"{self.path / name}: line {i + 1} is not valid JSON ({exc})") from exc
        return out

    def read_npz(self, name: str) -> dict[str, np.ndarray]:
        try:
            with np.load(io.BytesIO(self.read_bytes(name)), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except ValueError as exc:
            raise ArtifactError(f"{self.path / name}: not a valid array file ({exc})") from exc


def read_artifact(
    path: str | os.PathLike,
    kind: str,
    *,
    supported_versions: tuple[int, ...] = (1,),
    verify: bool = True,
) -> Artifact:
    """Open an artifact directory after checking its kind, version and checksums.

    Raises
    ------
    ArtifactError
        Naming the file that is missing, damaged or foreign, and what was expected.
    """
    path = _recover(Path(path))
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{path} is not a ragim artifact: {MANIFEST} is missing")
    try:
        manifest = json.loads(mpath.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{mpath}: the manifest is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ArtifactError(f"{mpath}: the manifest has no 'files' table; the artifact is damaged")
    found = manifest.get("format")
    if found != kind:
        raise ArtifactError(f"{path} holds a {found!r} artifact, but a {kind!r} artifact was expected")
    version = manifest.get("format_version")
    if version not in supported_versions:
        raise ArtifactError(
            f"{path}: {kind} format_version {version!r} is not supported by ragim "
            f"{ragim_version()} (supported: {list(supported_versions)}); upgrade ragim or re-save the artifact"
        )
    if verify:
        for name, entry in manifest["files"].items():
            f = path / name
            if ".." in Path(name).parts:
                raise ArtifactError(f"{mpath}: invalid file name {name!r}")
            if not f.is_file():
                raise ArtifactError(f"{path}: file {name!r} listed in the manifest is missing")
            if f.stat().st_size != entry.get("bytes") or _sha256_file(f) != entry.get("sha256"):
                raise ArtifactError(
                    f"{path}: checksum mismatch for {name!r}; the file is truncated, damaged or was "
                    "replaced. Re-create or re-download the artifact."
                )
    return Artifact(path=path, manifest=manifest)
