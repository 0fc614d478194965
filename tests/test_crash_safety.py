"""Crash safety: SIGKILL a process in the middle of ``save`` and the artifact survives whole.

A child process loads two versions of a task index (with its nested task rows, so a save
writes a nested artifact too) and saves them alternately to one path, writing ``S`` before
and ``E`` after each save (a forked copy per kill, from one process that loaded them once).
The first saver times one whole save; every later one is killed with SIGKILL after a
random delay of 0 to 1.1 times that, so kills land in every phase of a save,
``RAGIM_CRASH_KILLS`` times (default 20). After every kill the path must load as one
complete version (same ids, same parameters, same task rows), never a mix and never a
partial artifact. Leftover ``.ragim-tmp-*`` folders are allowed but must never be taken for
the artifact.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ragim import TaskIndex, datasets
from ragim.errors import ArtifactError
from ragim.io import read_artifact

KILLS = int(os.environ.get("RAGIM_CRASH_KILLS", "20"))

# A fork server: it imports ragim and loads both versions once, then forks one saver per
# kill, so each kill costs a fork instead of a fresh interpreter (about 3 s of imports).
# The saver (starting with version a or b in turn) writes R, then S and E around every save,
# unbuffered into its own log file, so what it wrote before the kill is on disk.
# OMP_NUM_THREADS=1 in its environment keeps BLAS single-threaded: no thread pool exists that
# a fork could leave half-copied.
CHILD = r"""
import os, sys
from ragim.index import TaskIndex
versions = [TaskIndex.load(sys.argv[1]), TaskIndex.load(sys.argv[2])]
target = sys.argv[3]
print("ready", flush=True)
for line in sys.stdin:
    log, first = line.split()
    pid = os.fork()
    if pid == 0:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, b"R")
        i = int(first)
        while True:
            os.write(fd, b"S")
            versions[i % 2].save(target)
            os.write(fd, b"E")
            i += 1
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    tasks = datasets.synthetic_family(n_tasks=120, n_features=5, seed=3, rows=(40, 80))
    a = TaskIndex.build(tasks, embedder="hashing", progress=False)
    a.save(root / "a")
    b = TaskIndex.load(root / "a")
    b.remove(b.ids[:15])
    b.save(root / "b")
    return root


def _fingerprint(index: TaskIndex) -> tuple:
    return tuple(index.ids), index.params_matrix().tobytes(), tuple(index.tasks.ids) if index.tasks is not None else None


RESTORED: list[str] = []  # moved-aside copies renamed back by hand, as the error says


def _check_whole(target: Path, expected: dict[tuple, str]) -> str:
    """The artifact at ``target`` loads as exactly one of the versions; returns which. A save
    killed between its two renames leaves no artifact at ``target``: the load names the moved-aside
    old version, which is renamed back as the message (and docs/artifacts.md) says."""
    try:
        loaded = TaskIndex.load(target)
    except ArtifactError as exc:
        found = re.search(r"previous version at (.+): rename it to (\S+) to restore it$", str(exc))
        assert found and found.group(2) == target.name, exc
        Path(found.group(1)).rename(target)
        RESTORED.append(found.group(1))
        loaded = TaskIndex.load(target)
    fp = _fingerprint(loaded)
    assert fp in expected, "the loaded index matches neither version: a mixed or partial artifact"
    assert read_artifact(target, "ragim.task-index").path == target
    return expected[fp]


def _wait_for(log_path: Path, mark: bytes, timeout: float = 120.0) -> float:
    """Poll a saver's log until it holds ``mark``; the time it was seen (time.monotonic)."""
    deadline = time.monotonic() + timeout
    while not (log_path.is_file() and mark in log_path.read_bytes()):
        assert time.monotonic() < deadline, f"the saver never wrote {mark!r}"
        time.sleep(0.002)
    return time.monotonic()


def test_sigkill_during_save_leaves_old_or_new_artifact(versions, tmp_path, record_property):
    a, b = TaskIndex.load(versions / "a"), TaskIndex.load(versions / "b")
    expected = {_fingerprint(a): "a", _fingerprint(b): "b"}
    assert len(expected) == 2
    target = tmp_path / "index"
    shutil.copytree(versions / "a", target)
    script = tmp_path / "saver.py"
    script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
    rng = random.Random(int(os.environ.get("RAGIM_CRASH_SEED", "0")))
    mid_save, saves_done, seen, save_seconds = 0, 0, set(), None
    server = subprocess.Popen([sys.executable, str(script), str(versions / "a"), str(versions / "b"), str(target)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              text=True)
    try:
        assert server.stdout.readline().strip() == "ready", server.stderr.read()[-2000:]
        for kill in range(KILLS):
            log_path = tmp_path / f"saver-{kill}.log"
            server.stdin.write(f"{log_path} {kill % 2}\n")  # savers start with a, then b, ...
            server.stdin.flush()
            pid = int(server.stdout.readline())
            started = _wait_for(log_path, b"R")
            if save_seconds is None:  # the first saver times one whole save, then is killed
                save_seconds = _wait_for(log_path, b"E") - started
            else:  # anywhere in a save, its final renames included, or between two saves
                time.sleep(rng.uniform(0.0, 1.1 * save_seconds))
            os.kill(pid, signal.SIGKILL)
            status = int(server.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"the saver died on its own (wait status {status}): {server.stderr.read()[-2000:]}")
            log = log_path.read_bytes()
            log_path.unlink()
            mid_save += log.endswith(b"S")
            saves_done += log.count(b"E")
            seen.add(_check_whole(target, expected))
    finally:
        server.kill()
        server.communicate()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ragim-"))
    for name in leftovers:
        if name.startswith(".ragim-tmp-"):  # a temporary folder is either incomplete or fully verified
            try:
                read_artifact(tmp_path / name, "ragim.task-index")
            except ArtifactError:
                pass
    record_property("kills", KILLS)
    record_property("kills_mid_save", mid_save)
    print(f"\n{KILLS} kills (one save took {save_seconds:.2f} s), {mid_save} landed mid-save, {saves_done} saves completed, versions seen: {sorted(seen)}, "
          f"leftover folders: {sum(n.startswith('.ragim-tmp-') for n in leftovers)} temporary, "
          f"{sum(n.startswith('.ragim-old-') for n in leftovers)} moved aside, "
          f"{sum(n.startswith('.ragim-trash-') for n in leftovers)} half-deleted; "
          f"{len(RESTORED)} kills between the two renames restored by renaming the old version back")
    assert mid_save >= min(KILLS, 1)
    # a later save in the same place works and cleans up after itself
    b.save(target)
    assert _check_whole(target, expected) == "b"
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ragim-"))
    assert left == [], left


def test_kill_between_the_two_renames_names_the_old_version(versions, tmp_path):
    """The window where the old artifact is moved aside and the new one not yet in place: a load
    names the moved-aside copy (it is never loaded in the path's place), renaming it back restores
    it, and the next save deletes what the killed save left."""
    target = tmp_path / "index"
    shutil.copytree(versions / "a", target)
    aside = tmp_path / ".ragim-old-index-deadbeef0000"
    target.rename(aside)
    (tmp_path / ".ragim-tmp-index-cafe00000000").mkdir()  # a half-written new artifact
    a = TaskIndex.load(versions / "a")
    assert _check_whole(target, {_fingerprint(a): "a"}) == "a"
    target.rename(aside)
    TaskIndex.load(versions / "b").save(target)  # the next save puts a whole artifact at the path
    assert target.is_dir() and np.array_equal(TaskIndex.load(target).params_matrix(),
                                              TaskIndex.load(versions / "b").params_matrix())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_the_error_names_the_newest_whole_moved_aside_copy(versions, tmp_path):
    """A half-deleted moved-aside copy (newer) and the copy of another artifact ("index-2") are
    never named as the artifact; the complete older copy is."""
    target = tmp_path / "index"
    good = tmp_path / ".ragim-old-index-000000000001"
    shutil.copytree(versions / "a", good)
    time.sleep(0.02)
    partial = tmp_path / ".ragim-old-index-000000000002"
    shutil.copytree(versions / "b", partial)
    (partial / "params.safetensors").unlink()
    foreign = tmp_path / ".ragim-old-index-2-000000000003"
    shutil.copytree(versions / "b", foreign)
    with pytest.raises(ArtifactError, match=f"previous version at {re.escape(str(good))} \\(1 older "):
        TaskIndex.load(target)
