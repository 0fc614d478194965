import json

import pytest

from ragim.errors import ArtifactError
from ragim.io import MANIFEST, read_artifact, write_artifact


def _write(path, payload=b'{"a": 1}', kind="ragim.example"):
    return write_artifact(path, kind, {"config.json": payload, "sub/data.bin": b"\x00\x01\x02"})


def test_round_trip_and_manifest(tmp_path):
    p = _write(tmp_path / "art")
    art = read_artifact(p, "ragim.example")
    assert art.read_json("config.json") == {"a": 1}
    manifest = json.loads((p / MANIFEST).read_text())
    assert manifest["format"] == "ragim.example" and manifest["format_version"] == 1
    assert set(manifest["files"]) == {"config.json", "sub/data.bin"}
    assert len(manifest["files"]["config.json"]["sha256"]) == 64


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path):
    p = _write(tmp_path / "art")
    _write(p, b'{"a": 2}')
    assert read_artifact(p, "ragim.example").read_json("config.json") == {"a": 2}
    assert [x.name for x in tmp_path.iterdir()] == ["art"]


def test_failed_write_keeps_old_artifact(tmp_path):
    p = _write(tmp_path / "art")

    def boom(path):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_artifact(p, "ragim.example", {"config.json": b"{}", "x": boom})
    assert read_artifact(p, "ragim.example").read_json("config.json") == {"a": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["art"]


def test_a_crash_between_the_renames_is_named_never_loaded_in_place(tmp_path):
    """A save killed between its two renames leaves the old version at .ragim-old-art-<hex>; a load
    of the missing path names it (rename it back to restore it) instead of loading it silently,
    which once answered with a model two versions old after the user deleted it on purpose."""
    p = _write(tmp_path / "art")
    p.rename(tmp_path / ".ragim-old-art-123")  # a crash between the two renames
    with pytest.raises(ArtifactError, match=r"no artifact at .*art; an interrupted save left its "
                       r"previous version at .*\.ragim-old-art-123: rename it to art to restore it"):
        read_artifact(p, "ragim.example")
    (tmp_path / ".ragim-old-art-123").rename(p)  # what the message says
    assert read_artifact(p, "ragim.example").read_json("config.json") == {"a": 1}


def test_a_received_folder_with_only_a_moved_aside_copy_does_not_load(tmp_path):
    _write(tmp_path / ".ragim-old-model-1234")
    with pytest.raises(ArtifactError, match="no artifact at .*model; an interrupted save"):
        read_artifact(tmp_path / "model", "ragim.example")


def test_a_successful_save_deletes_what_interrupted_saves_left(tmp_path):
    p = _write(tmp_path / "art")
    _write(tmp_path / ".ragim-old-art-0123456789ab")
    (tmp_path / ".ragim-tmp-art-0123456789ab").mkdir()
    (tmp_path / ".ragim-tmp-art-0123456789ab" / "half.bin").write_bytes(b"x")
    (tmp_path / ".ragim-trash-art-0123456789ab").mkdir()
    _write(tmp_path / ".ragim-old-art-2-0123456789ab")  # another artifact's ("art-2"): kept
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    (tmp_path / ".ragim-old-art-link").symlink_to(outside)  # a link: removed, never followed
    _write(p, b'{"a": 2}')
    assert sorted(x.name for x in tmp_path.iterdir()) == [".ragim-old-art-2-0123456789ab", "art", "outside"]
    assert (outside / "keep.txt").read_text() == "x"
    p.rename(tmp_path / "gone")
    with pytest.raises(ArtifactError, match="does not exist"):
        read_artifact(p, "ragim.example")


def test_a_save_in_progress_keeps_its_folders_from_another_saves_clean_up(tmp_path):
    """The temporary folder (or moved-aside copy) of a save still running holds a lock: another
    save of the same path leaves it alone, and a load waits for the save instead of naming it."""
    import fcntl
    import os
    import threading

    p = _write(tmp_path / "art")
    busy = tmp_path / ".ragim-tmp-art-0123456789ab"
    busy.mkdir()
    fd = os.open(busy, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        _write(p, b'{"a": 2}')
        assert busy.is_dir()
        p.rename(tmp_path / ".ragim-old-art-0123456789ac")
        aside = os.open(tmp_path / ".ragim-old-art-0123456789ac", os.O_RDONLY)
        fcntl.flock(aside, fcntl.LOCK_EX)  # a live save, between its two renames
        threading.Timer(0.2, lambda: (tmp_path / ".ragim-old-art-0123456789ac").rename(p)).start()
        assert read_artifact(p, "ragim.example").read_json("config.json") == {"a": 2}
        os.close(aside)
    finally:
        os.close(fd)
    _write(p, b'{"a": 3}')
    assert not busy.exists()


@pytest.mark.parametrize("where", ["config.json", "sub"])
def test_symbolic_links_inside_an_artifact_are_refused(tmp_path, where):
    """A received artifact's file (or folder) that links outside it is never followed, although
    the bytes it leads to match the checksum."""
    import shutil

    p = _write(tmp_path / "art")
    outside = tmp_path / "outside"
    shutil.move(p / where, outside)
    (p / where).symlink_to(outside)
    with pytest.raises(ArtifactError, match=f"'{where}' is a symbolic link; an artifact holds only "
                       "regular files and folders inside its own folder"):
        read_artifact(p, "ragim.example")


def test_the_artifact_folder_itself_may_be_a_link(tmp_path):
    p = _write(tmp_path / "v3")
    (tmp_path / "current").symlink_to(p)
    assert read_artifact(tmp_path / "current", "ragim.example").read_json("config.json") == {"a": 1}


def _list_extra(p, name="extra.bin", size=0):
    m = json.loads((p / MANIFEST).read_text())
    m["files"][name] = {"sha256": "0" * 64, "bytes": size}
    (p / MANIFEST).write_text(json.dumps(m))


def test_a_fifo_or_a_device_in_the_manifest_is_refused_without_opening_it(tmp_path):
    """Opening a FIFO blocks forever and /dev/zero never ends: both are refused by lstat."""
    import os

    p = _write(tmp_path / "art")
    _list_extra(p)
    os.mkfifo(p / "extra.bin")
    with pytest.raises(ArtifactError, match="'extra.bin' is a FIFO, not a regular file"):
        read_artifact(p, "ragim.example")
    (p / "extra.bin").unlink()
    (p / "extra.bin").symlink_to("/dev/zero")
    with pytest.raises(ArtifactError, match="'extra.bin' is a symbolic link"):
        read_artifact(p, "ragim.example")
    (p / MANIFEST).unlink()
    (p / MANIFEST).symlink_to("/dev/zero")
    with pytest.raises(ArtifactError, match="'manifest.json' is a symbolic link"):
        read_artifact(p, "ragim.example")


def test_a_folder_where_a_file_is_listed_is_not_called_missing(tmp_path):
    p = _write(tmp_path / "art")
    (p / "config.json").unlink()
    (p / "config.json").mkdir()
    with pytest.raises(ArtifactError, match="'config.json' is a folder, not a regular file"):
        read_artifact(p, "ragim.example")


def test_reads_stop_at_the_declared_size(tmp_path):
    """A file that grows after verification is read up to one byte past its declared size."""
    p = _write(tmp_path / "art")
    art = read_artifact(p, "ragim.example", verify=False)
    (p / "config.json").write_bytes(b'{"a": 1}' + b" " * 10_000)
    with pytest.raises(ArtifactError, match="longer than the 8 bytes the manifest declares"):
        art.read_bytes("config.json")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_json_with_a_bare_nan_or_infinity_is_refused_naming_the_file(tmp_path, token):
    """ragim never writes these tokens; Python's parser accepts them, so a file holding one was
    accepted and only the next save failed ("a value is not JSON-safe")."""
    p = write_artifact(tmp_path / "art", "ragim.example", {
        "config.json": f'{{"margin": {token}}}'.encode(), "rows.jsonl": f'{{"x": {token}}}\n'.encode()})
    art = read_artifact(p, "ragim.example")
    with pytest.raises(ArtifactError, match=f"config.json: not valid JSON \\(a bare {token}, which JSON does not allow"):
        art.read_json("config.json")
    with pytest.raises(ArtifactError, match=f"rows.jsonl: line 1 is not valid JSON \\(a bare {token}"):
        art.read_jsonl("rows.jsonl")
    m = json.loads((p / MANIFEST).read_text())
    raw = json.dumps(m).replace('"ragim_version": "', f'"x": {token}, "ragim_version": "')
    (p / MANIFEST).write_text(raw)
    with pytest.raises(ArtifactError, match=f"manifest is not valid JSON \\(a bare {token}"):
        read_artifact(p, "ragim.example")


def _npz(arrays, compressed=False):
    import io

    import numpy as np

    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def test_npz_members_are_checked_before_they_are_expanded(tmp_path):
    """A small deflated .npz with an extra member (a zip bomb) is refused unread; so is a member
    whose zip entry is larger than its header's shape, and one that expands implausibly."""
    import numpy as np

    ok = {"vector": np.arange(3.0)}
    p = write_artifact(tmp_path / "a", "ragim.example", {"p.npz": _npz(ok)})
    got = read_artifact(p, "ragim.example").read_npz("p.npz", members=("vector", "std"))
    assert list(got) == ["vector"] and np.array_equal(got["vector"], ok["vector"])
    bomb = _npz({**ok, "junk": np.zeros(2**22)}, compressed=True)
    p = write_artifact(tmp_path / "b", "ragim.example", {"p.npz": bomb})
    with pytest.raises(ArtifactError, match="p.npz: holds an array 'junk' that this file never has; refused unread"):
        read_artifact(p, "ragim.example").read_npz("p.npz", members=("vector", "std"))
    with pytest.raises(ArtifactError, match="'junk' expands from .* to 33554560 bytes, far more"):
        read_artifact(p, "ragim.example").read_npz("p.npz")


def test_npz_member_larger_than_its_declared_shape_is_refused(tmp_path):
    import io
    import zipfile

    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array(header, np.zeros(2))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("vector.npy", header.getvalue() + b"\x00" * 4096)
    p = write_artifact(tmp_path / "a", "ragim.example", {"p.npz": buf.getvalue()})
    with pytest.raises(ArtifactError, match=r"'vector' declares shape \(2,\) of float64 \(144 bytes\) but its zip "
                       "entry expands to 4240 bytes"):
        read_artifact(p, "ragim.example").read_npz("p.npz")


def test_parquet_metadata_is_checked_before_rows_are_decoded(tmp_path):
    import io

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pd.DataFrame({"__task__": ["a"] * 5, "__y__": [0, 1, 0, 1, 0]}).to_parquet(buf, index=False)
    dup = io.BytesIO()
    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["age", "age"]), dup)
    p = write_artifact(tmp_path / "a", "ragim.example", {"d.parquet": buf.getvalue(), "e.parquet": dup.getvalue()})
    art = read_artifact(p, "ragim.example")
    assert len(art.read_parquet("d.parquet", rows=5, columns=("__task__",))) == 5
    with pytest.raises(ArtifactError, match=r"d.parquet: holds 5 rows, but tasks.jsonl declares 3; "):
        art.read_parquet("d.parquet", rows=3, declared_in="tasks.jsonl")
    with pytest.raises(ArtifactError, match=r"d.parquet: lacks the columns \['age'\]"):
        art.read_parquet("d.parquet", columns=("age",))
    with pytest.raises(ArtifactError, match=r"e.parquet: the column 'age' appears 2 times$"):
        art.read_parquet("e.parquet")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "config.json").write_bytes(b'{"a": 9}'), "checksum mismatch for 'config.json'"),
        (lambda p: (p / "sub/data.bin").write_bytes(b"\x00"), "checksum mismatch for 'sub/data.bin'"),
        (lambda p: (p / "config.json").unlink(), "'config.json' listed in the manifest is missing"),
        (lambda p: (p / MANIFEST).unlink(), "manifest.json is missing"),
        (lambda p: (p / MANIFEST).write_text("{not json"), "manifest is not valid JSON"),
    ],
)
def test_damage_is_reported_with_the_file(tmp_path, damage, message):
    p = _write(tmp_path / "art")
    damage(p)
    with pytest.raises(ArtifactError, match=message.replace("(", r"\(")):
        read_artifact(p, "ragim.example")


def test_foreign_kind_and_unknown_version(tmp_path):
    p = _write(tmp_path / "art")
    with pytest.raises(ArtifactError, match=r"holds a 'ragim.example' artifact, but a task index \('ragim.task-index'\)"):
        read_artifact(p, "ragim.task-index")
    m = json.loads((p / MANIFEST).read_text())
    m["format_version"] = 99
    (p / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="format_version 99 is not supported"):
        read_artifact(p, "ragim.example")


def test_refuses_to_overwrite_a_non_artifact(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    with pytest.raises(ArtifactError, match="not a ragim artifact"):
        _write(tmp_path / "mine")
    assert (tmp_path / "mine" / "precious.txt").exists()


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        read_artifact(tmp_path / "nope", "ragim.example")


def test_an_artifact_of_another_kind_is_never_overwritten(tmp_path):
    """``ragim adapt MODEL --save INDEX_DIR`` replaced a whole index with a 3-file model (an
    outside user): overwrite=True replaces an artifact of the same kind only."""
    p = tmp_path / "idx"
    write_artifact(p, "ragim.task-index", {"config.json": b"{}"})
    with pytest.raises(ArtifactError, match=r"another kind of ragim artifact \(ragim.task-index\)"):
        write_artifact(p, "ragim.model-params", {"config.json": b"{}"}, overwrite=True)
    assert read_artifact(p, "ragim.task-index").manifest["format"] == "ragim.task-index"
    write_artifact(p, "ragim.task-index", {"config.json": b'{"a": 1}'}, overwrite=True)


def test_saving_over_a_link_replaces_the_link_and_leaves_its_target_alone(tmp_path):
    real = _write(tmp_path / "real")
    (tmp_path / "m").symlink_to(real)
    _write(tmp_path / "m", b'{"a": 2}')
    assert not (tmp_path / "m").is_symlink()
    assert read_artifact(tmp_path / "m", "ragim.example").read_json("config.json") == {"a": 2}
    assert read_artifact(real, "ragim.example").read_json("config.json") == {"a": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m", "real"]  # no link left aside


def test_write_file_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    from ragim.io import write_file

    p = tmp_path / "sub" / "out.json"
    assert write_file(p, b"first") == p
    assert write_file(p, b"second\n") == p
    assert p.read_bytes() == b"second\n"
    assert sorted(x.name for x in p.parent.iterdir()) == ["out.json"]


def test_write_file_that_fails_keeps_the_old_file(tmp_path, monkeypatch):
    import os

    from ragim import io

    p = tmp_path / "out.csv"
    io.write_file(p, b"old")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        io.write_file(p, b"new")
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["out.csv"]


def test_write_file_refuses_text_a_folder_and_no_name_in_one_line(tmp_path):
    from ragim.errors import ValidationError
    from ragim.io import write_file

    with pytest.raises(ValidationError, match="needs bytes, got str"):
        write_file(tmp_path / "a.txt", "text")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ArtifactError, match="is a file, not a folder"):
        write_file(tmp_path / "notes.txt" / "a.csv", b"x")
    with pytest.raises(ArtifactError, match="it is a folder"):
        write_file(tmp_path, b"x")
    for nameless in ("", ".", tmp_path / ".."):
        with pytest.raises(ValidationError, match="needs a file name"):
            write_file(nameless, b"x")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["notes.txt"]


def test_write_file_keeps_permissions_long_names_and_link_targets(tmp_path):
    import os
    import stat

    from ragim.io import write_file

    private = tmp_path / "export.csv"
    private.write_bytes(b"old")
    private.chmod(0o600)
    write_file(private, bytearray(b"new"))
    assert private.read_bytes() == b"new" and stat.S_IMODE(private.stat().st_mode) == 0o600
    long = tmp_path / ("n" * 250)  # a name near the file system's 255-byte limit
    assert write_file(long, memoryview(b"x")).read_bytes() == b"x"
    target, link = tmp_path / "target", tmp_path / "link"
    target.write_bytes(b"kept")
    os.symlink(target, link)
    write_file(link, b"file")
    assert not link.is_symlink() and link.read_bytes() == b"file" and target.read_bytes() == b"kept"
