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


def test_recovers_artifact_moved_aside_by_a_crash(tmp_path):
    p = _write(tmp_path / "art")
    p.rename(tmp_path / ".ragim-old-art-123")  # a crash between the two renames
    assert read_artifact(p, "ragim.example").read_json("config.json") == {"a": 1}


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
