"""The import structure of ragim, read from the source with ``ast``.

* No import cycle among the modules of ``ragim/`` (module-level imports: the ones that run
  when a module is imported).
* The LM wing has four layers that only point down: answer format -> backbone -> inference
  -> training. Every import counts here, also one inside a function, except an upward one
  inside a function whose line carries a comment saying why (``LMGenerator.fit``).
* Inference (``ragim.generate``, ``ragim.lm``) never imports training (``ragim.train``) by the
  same rule, and the core modules below the generators never import the LM wing.
* No private (underscore) name crosses a module boundary in the LM wing and the CLI: not by
  ``from m import _name`` and not by ``obj._name`` on anything but ``self``/``cls``.
* Anywhere in ``ragim/``, no private name crosses a module boundary: ``from m import _name``,
  or ``obj._name`` where the module does not define ``_name`` itself (generators use
  ``TaskIndex``'s public row view: ``row``, ``row_params``, ``row_records``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import ragim

ROOT = Path(ragim.__file__).resolve().parent
PKG = ROOT.name

#: the LM wing, by layer (lower numbers are lower layers)
LAYERS = {
    "answer format": ["ragim.lm.answer", "ragim.lm.prompts", "ragim.lm.pairs"],
    "backbone": ["ragim.lm.base_models", "ragim.lm.adapters"],
    "inference": [
        "ragim.lm",
        "ragim.lm.builtin_decoder",
        "ragim.lm.constrained",
        "ragim.lm.reward_model",
        "ragim.generate.lm",
    ],
    "training": [
        "ragim.train",
        "ragim.train.trainer",
        "ragim.train.rewards",
        "ragim.train.sft",
        "ragim.train.preferences",
        "ragim.train.reward",
        "ragim.train.rl",
        "ragim.rewards",
    ],
}
RANK = {m: i for i, mods in enumerate(LAYERS.values()) for m in mods}
#: modules above the generators that may use the LM wing (evaluation, CLI, benchmarks, lazy facades)
CONSUMERS = {
    "ragim",
    "ragim.generate",
    "ragim.evaluate",
    "ragim.bench",
    "ragim.cli",
    "ragim.cli_common",
    "ragim.cli_workflow",
}
#: where no private name may cross a module boundary
SEALED = [m for m in RANK] + ["ragim.cli", "ragim.cli_common", "ragim.cli_workflow"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


@dataclass(frozen=True)
class Import:
    source: str
    target: str  # a module of the package
    names: tuple[str, ...]  # names imported from it (empty for ``import x``)
    line: int
    top_level: bool
    commented: bool  # the import's line carries a comment


def _base(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def imports_of(module: str) -> list[Import]:
    src = MODULES[module].read_text(encoding="utf-8")
    lines = src.splitlines()
    tree = ast.parse(src)
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            pairs = [(a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, node)
            pairs = [(base, tuple(a.name for a in node.names))]
            pairs += [(f"{base}.{a.name}", ()) for a in node.names if f"{base}.{a.name}" in MODULES]
        else:
            continue
        for target, names in pairs:
            if target in MODULES and target != module:
                out.append(
                    Import(
                        module,
                        target,
                        names,
                        node.lineno,
                        id(node) in top,
                        "#" in lines[node.lineno - 1],
                    )
                )
    return out


IMPORTS = {m: imports_of(m) for m in MODULES}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _allowed_upward(imp: Import) -> bool:
    """An upward import is tolerated only at call time, with a comment on its line."""
    return not imp.top_level and imp.commented


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    edges: dict[str, set[str]] = {}
    for m, imps in IMPORTS.items():
        for imp in imps:
            # a package importing its own children (re-exports) is not a cycle
            if imp.top_level and not imp.target.startswith(m + "."):
                edges.setdefault(m, set()).add(imp.target)
    assert _cycles(edges) == []


def test_no_import_cycle_in_the_lm_wing_even_at_call_time():
    edges: dict[str, set[str]] = {}
    for m in RANK:
        for imp in IMPORTS[m]:
            if (
                imp.target in RANK
                and not imp.target.startswith(m + ".")
                and not _allowed_upward(imp)
            ):
                edges.setdefault(m, set()).add(imp.target)
    assert _cycles(edges) == []


def test_every_lm_wing_module_has_a_layer():
    wing = {m for m in MODULES if m.startswith(("ragim.lm", "ragim.train"))} | {"ragim.generate.lm"}
    assert wing - set(RANK) == set(), "place new LM-wing modules in LAYERS"
    assert set(RANK) <= set(MODULES), "LAYERS names a module that does not exist"


def test_lm_wing_layers_only_point_down():
    upward = [
        f"{imp.source} -> {imp.target} (line {imp.line})"
        for m in RANK
        for imp in IMPORTS[m]
        if imp.target in RANK
        and RANK[imp.target] > RANK[m]
        and not imp.target.startswith(m + ".")
        and not _allowed_upward(imp)
    ]
    assert upward == []


def test_inference_never_imports_training():
    bad = [
        f"{imp.source} -> {imp.target} (line {imp.line})"
        for m in MODULES
        if m.startswith(("ragim.generate", "ragim.lm"))
        for imp in IMPORTS[m]
        if imp.target.startswith("ragim.train") and not _allowed_upward(imp)
    ]
    assert bad == []


def test_the_one_call_time_upward_import_is_lmgenerator_fit():
    lazy_up = [
        (imp.source, imp.target)
        for m in RANK
        for imp in IMPORTS[m]
        if imp.target in RANK and RANK[imp.target] > RANK[m] and not imp.target.startswith(m + ".")
    ]
    assert lazy_up == [("ragim.generate.lm", "ragim.train.sft")]


def test_core_modules_do_not_import_the_lm_wing():
    core = [m for m in MODULES if m not in RANK and m not in CONSUMERS]
    bad = [
        f"{imp.source} -> {imp.target} (line {imp.line})"
        for m in core
        for imp in IMPORTS[m]
        if imp.target in RANK
    ]
    assert bad == []


@pytest.mark.parametrize("module", SEALED)
def test_no_private_name_crosses_a_module_boundary(module):
    imported = [
        f"line {imp.line}: {n} from {imp.target}"
        for imp in IMPORTS[module]
        for n in imp.names
        if n.startswith("_") and not n.startswith("__")
    ]
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    reached = [
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert imported + reached == []


def _own_private_names(tree: ast.AST) -> set[str]:
    """Underscore names a module defines itself: functions, classes, assignments, attributes."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
    return {n for n in own if n.startswith("_")}


def private_crossings(module: str) -> list[str]:
    """Private names ``module`` takes from another module: ``from m import _x``, or ``obj._x``
    where ``_x`` is not defined in ``module`` itself. ``self._x`` and ``cls._x`` (a subclass
    using its base class) and IPython's ``_repr_*_`` hooks are not crossings."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    own = _own_private_names(tree)
    imported = [
        f"line {imp.line}: {n} from {imp.target}"
        for imp in IMPORTS[module]
        for n in imp.names
        if n.startswith("_") and not n.startswith("__")
    ]
    reached = [
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (node.attr.startswith("_repr_") and node.attr.endswith("_"))
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        and node.attr not in own
    ]
    return imported + reached


def test_the_crossing_finder_tells_own_names_from_foreign_ones():
    tree = ast.parse("class A:\n    def f(self, o):\n        self._x = 1\n        return o._x, o._y\n")
    assert _own_private_names(tree) == {"_x"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_a_module_boundary_anywhere(module):
    assert private_crossings(module) == []
