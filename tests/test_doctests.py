"""Every docstring example in ``ragim`` runs and prints what it shows.

The examples are the first code a user copies, so they are tested like the rest. The few
modules whose examples train a model are marked ``slow`` (CI runs them).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import ragim

SLOW = {"ragim.train.rl", "ragim.train.preferences", "ragim.generate.attention"}
MODULES = sorted(m.name for m in pkgutil.walk_packages(ragim.__path__, "ragim."))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in MODULES])
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that save write here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (run pytest --doctest-modules {module.__file__})"


def test_the_examples_are_collected():
    counts = {n: len(doctest.DocTestFinder().find(importlib.import_module(n))) for n in MODULES}
    assert sum(counts.values()) > 100
