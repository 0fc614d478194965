"""Concurrency: parallel searches agree with sequential ones; concurrent saves never corrupt.

* 8 threads search one loaded :class:`TaskIndex` at once (single queries, batches, id lists
  and predicates such as :func:`leak_free`) and must get exactly the sequential results.
* Two processes save different versions to the same path, repeatedly and at the same time,
  while this process keeps loading it. The last writer wins whole, or a writer fails with a
  clear :class:`ArtifactError`; every load sees one whole version or an ``ArtifactError``;
  afterwards the artifact equals one of the two versions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ragim import TaskIndex, datasets
from ragim.errors import ArtifactError
from ragim.index import leak_free, same_group

THREADS = 8


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("conc")
    tasks = datasets.synthetic_family(n_tasks=60, n_features=4, seed=2)
    TaskIndex.build(tasks, embedder="hashing", progress=False).save(root / "idx")
    return TaskIndex.load(root / "idx")


def _queries(index) -> list[tuple]:
    """(query, k, exclude) triples covering every exclusion form."""
    recs = index.records
    out = []
    for i, rec in enumerate(recs):
        q = rec["description"]
        out.append((q, 5, None))
        out.append((q, 3, [rec["task_id"]]))
        out.append((q, 4, leak_free(rec)))
        group_key = next((k for k in ("group", "site", "disease", "family") if k in rec["metadata"]), None)
        if group_key is not None:
            out.append((q, 4, same_group(rec, group_key)))
        out.append((q[: max(5, len(q) // 2)], 7, lambda r, i=i: r["task_id"] in {recs[(i + 1) % len(recs)]["task_id"]}))
    batch = [r["description"] for r in recs[:10]]
    out.append((batch, 3, None))
    out.append((batch, 3, [[r["task_id"]] for r in recs[:10]]))
    out.append((batch, 3, [leak_free(r) for r in recs[:10]]))
    return out


def _run(index, query) -> list:
    q, k, exclude = query
    hits = index.search(q, k, exclude=exclude)
    flat = hits if isinstance(q, str) else [h for hs in hits for h in hs]
    return [(h.task_id, round(h.score, 6), tuple(h.params.vector)) for h in flat]


def test_parallel_searches_match_sequential(index):
    queries = _queries(index) * 3
    expected = [_run(index, q) for q in queries]
    assert any(expected) and len(queries) >= 300
    with ThreadPoolExecutor(THREADS) as pool:
        got = list(pool.map(lambda q: _run(index, q), queries))
    assert got == expected
    excluded = [r for q, r in zip(queries, got, strict=True) if isinstance(q[0], str) and isinstance(q[2], list)]
    assert all(r for r in excluded)


def test_parallel_searches_interleaved_with_vector_reads(index):
    """Readers of stored vectors and params run beside searches without changing results."""
    queries = _queries(index)[:60]
    expected = [_run(index, q) for q in queries]
    vec, par = index.vectors(), index.params_matrix()

    def work(i):
        if i % 3 == 0:
            return index.vectors().tobytes() == vec.tobytes() and index.params_matrix().tobytes() == par.tobytes()
        return _run(index, queries[i % len(queries)]) == expected[i % len(queries)]

    with ThreadPoolExecutor(THREADS) as pool:
        assert all(pool.map(work, range(240)))


WRITER = r"""
import os, sys, time, traceback
from ragim.errors import ArtifactError
from ragim.index import TaskIndex
source, target, go, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
index = TaskIndex.load(source)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
failed = 0
for _ in range(rounds):
    try:
        index.save(target)
    except ArtifactError as exc:
        failed += 1
        print("artifact-error:", exc, flush=True)
    except BaseException:
        traceback.print_exc()
        sys.exit(3)
print("failed", failed, flush=True)
"""


def test_two_processes_saving_to_one_path(tmp_path, record_property):
    tasks = datasets.synthetic_family(n_tasks=30, n_features=4, seed=4)
    a = TaskIndex.build(tasks, embedder="hashing", progress=False)
    a.save(tmp_path / "a")
    b = TaskIndex.load(tmp_path / "a")
    b.remove(b.ids[:7])
    b.save(tmp_path / "b")
    versions = {tuple(TaskIndex.load(tmp_path / v).ids): v for v in ("a", "b")}
    target, go = tmp_path / "shared", tmp_path / "go"
    a.save(target)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rounds = int(os.environ.get("RAGIM_CONCURRENT_SAVES", "12"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / v), str(target), str(go), str(rounds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for v in ("a", "b")]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        go.touch()
        loads, load_errors = 0, []
        while any(p.poll() is None for p in procs):  # read while they write
            try:
                got = TaskIndex.load(target)
            except ArtifactError as exc:
                load_errors.append(str(exc))
                time.sleep(0.005)
                continue
            loads += 1
            assert tuple(got.ids) in versions, "a load saw a mix of two versions"
            assert got.tasks is None or got.tasks.ids == got.ids
            time.sleep(0.005)
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, f"a writer failed with something other than ArtifactError:\n{err[-3000:]}"
        assert "failed" in out
    failures = sum(int(line.split()[1]) for out, _ in outputs for line in out.splitlines() if line.startswith("failed"))
    final = TaskIndex.load(target)
    assert tuple(final.ids) in versions
    assert final.params_matrix().tobytes() == TaskIndex.load(tmp_path / versions[tuple(final.ids)]).params_matrix().tobytes()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".ragim-old-")], "a moved-aside copy was left"
    # a load that overlaps a save is refused, never served a mix: the file changed or vanished
    # under it, or its index.faiss header disagrees with records from the other version
    said = ("chang", "vanished", "cannot be read", "assembled from different")
    assert all(any(s in e for s in said) for e in load_errors), load_errors[:3]
    record_property("writer_failures", failures)
    print(f"\n2 writers x {rounds} saves: {failures} failed with ArtifactError; {loads} concurrent loads succeeded, "
          f"{len(load_errors)} raised ArtifactError; final version {versions[tuple(final.ids)]}")
    assert failures < 2 * rounds


def test_swap_race_is_retried_not_lost(tmp_path, monkeypatch):
    """Simulate the race inside one process: another writer puts its artifact in place between
    our two renames. The save retries (last writer wins) and the path is never missing."""
    import ragim.io as rio

    rio.write_artifact(tmp_path / "art", "ragim.example", {"config.json": b'{"v": 0}'})
    real_rename, calls = os.rename, []

    def racing_rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # after we moved the old one aside, a rival lands its artifact first
            rival = tmp_path / ".rival"
            rival.mkdir()
            (rival / "manifest.json").write_text("{}")
            real_rename(rival, dst)
        return real_rename(src, dst)

    monkeypatch.setattr(rio.os, "rename", racing_rename)
    rio.write_artifact(tmp_path / "art", "ragim.example", {"config.json": b'{"v": 1}'})
    monkeypatch.setattr(rio.os, "rename", real_rename)
    assert rio.read_artifact(tmp_path / "art", "ragim.example").read_json("config.json") == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_swap_gives_up_with_artifact_error_and_keeps_the_path(tmp_path, monkeypatch):
    import errno

    import ragim.io as rio

    rio.write_artifact(tmp_path / "art", "ragim.example", {"config.json": b'{"v": 0}'})
    real_rename = os.rename

    def always_busy(src, dst):
        if Path(src).name.startswith(".ragim-tmp-"):
            raise OSError(errno.ENOTEMPTY, "Directory not empty", str(dst))
        return real_rename(src, dst)

    monkeypatch.setattr(rio.os, "rename", always_busy)
    monkeypatch.setattr(rio.time, "sleep", lambda s: None)
    with pytest.raises(ArtifactError, match="could not move the new artifact into place"):
        rio.write_artifact(tmp_path / "art", "ragim.example", {"config.json": b'{"v": 1}'})
    monkeypatch.setattr(rio.os, "rename", real_rename)
    assert rio.read_artifact(tmp_path / "art", "ragim.example").read_json("config.json") == {"v": 0}
    assert (tmp_path / "art").is_dir()


def test_file_replaced_after_verification_is_an_artifact_error(tmp_path):
    """A reader that verified version 1 never parses a file of version 2."""
    from ragim.io import read_artifact, write_artifact

    p = write_artifact(tmp_path / "art", "ragim.example", {"config.json": b'{"v": 1}'})
    art = read_artifact(p, "ragim.example")
    write_artifact(p, "ragim.example", {"config.json": b'{"v": 2}'})  # a concurrent save
    with pytest.raises(ArtifactError, match="changed after its checksum was verified"):
        art.read_json("config.json")


def test_a_load_between_a_live_saves_two_renames_is_a_change_not_damage(tmp_path):
    """Between a live save's two renames (its moved-aside copy is locked) a load waits for the new
    artifact and, if it does not come, is told a concurrent save is replacing the artifact
    (ArtifactChanged: load again), never that it is damaged or absent."""
    import fcntl

    import ragim.io as rio

    path = tmp_path / "art"
    aside = tmp_path / ".ragim-old-art-5678"
    aside.mkdir()  # moved aside, incomplete, and nothing in place yet
    fd = os.open(aside, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(rio.ArtifactChanged, match="concurrent save was replacing it"):
            rio._locate(path)
    finally:
        os.close(fd)
    aside.rmdir()
    with pytest.raises(ArtifactError, match="the directory does not exist"):
        rio._locate(path)
