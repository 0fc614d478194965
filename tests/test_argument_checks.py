"""Scalar argument checks go through ragim.checks, not hand-written isinstance-and-compare code.

A hand check (``if isinstance(v, bool) or not isinstance(v, int) or v < 1: raise ...``) drifts:
one accepts numpy integers and another not, one rejects booleans and another not, each words
its error its own way. ``ragim.checks.check_int`` / ``check_number`` do it once.
"""

from __future__ import annotations

import re
from pathlib import Path

import ragim

ROOT = Path(ragim.__file__).resolve().parent

#: ``not isinstance(x, int ...) or x < ...``: a type test and a range test written by hand
HAND_CHECK = re.compile(r"not isinstance\(\s*([\w.]+),\s*(?:int|float|numbers\.\w+|Integral|Real)\b[^)]*\)"
                        r"\s*or\s*\1\s*[<>]")

#: modules whose checks are still to move (none: the test covers all of ragim/)
PENDING: set[str] = set()


def hand_checks() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        text = " ".join(path.read_text(encoding="utf-8").split())  # a check split over lines too
        found += [f"{rel}: {m.group(0)}" for m in HAND_CHECK.finditer(text) if rel not in PENDING]
    return found


def test_the_pattern_finds_a_hand_check():
    text = "if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:"
    assert HAND_CHECK.search(text) and not HAND_CHECK.search("k = check_int(k, 'k', ge=1)")
    assert HAND_CHECK.search("not isinstance(\n    v, int)\n    or v >= 3".replace("\n", " "))


def test_no_hand_written_scalar_argument_checks_in_ragim():
    assert hand_checks() == [], "use ragim.checks.check_int / check_number instead"
