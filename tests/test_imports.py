"""The import graph of the project packages stays one that reads (issue 16 point 3), checked on the source's
syntax trees (nothing is imported):

1. **No private names across modules**: no ``from x import _y`` of another module's private name, no ``x._y``
   through an imported project module, and no private module (``serialise/_common.py``) imported from
   outside its own package. A helper two modules share gets a public name in a module both import.
2. **No import cycles** among project modules, counting module-level *and* function-local imports: an import
   inside a function only defers the cycle to the first call (the two modules still need each other), and
   every cycle issue 16 found hid that way (evaluation <-> boxes_eval, the Tokenizer base class <-> its
   subclasses, stage <-> fused). Imports under ``if TYPE_CHECKING:`` are left out of this check only: they
   never run, and they are how a module annotates with a type from a module that imports it
   (fourm_core.index names fourm_core.store.ArtifactStore).
3. **Layers follow the data flow**: fourm_core < ingest_stage < pseudolabel < tokenize_stage < train_stage
   < eval_stage < pipelines. A package imports its own layer or lower ones only (every import, TYPE_CHECKING
   ones too); so fourm_core imports no stage.

tests/, bench/ and scripts/ are not checked: a test may reach into a private helper to test it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("fourm_core", "ingest_stage", "pseudolabel", "tokenize_stage", "train_stage", "eval_stage", "pipelines")


@dataclass(frozen=True)
class Import:
    """One imported project module (or one name from it) at ``path:line`` of ``importer``."""

    importer: str  # dotted module name
    target: str  # the most specific project module the statement names
    name: str | None  # the name taken from ``target`` (None: the module itself)
    where: str  # "module" | "function" | "typing" (under ``if TYPE_CHECKING:``)
    path: str
    line: int

    def __str__(self) -> str:
        what = f"from {self.target} import {self.name}" if self.name else f"import {self.target}"
        return f"{self.path}:{self.line} {what} ({self.where})"


def project_modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every module of the project packages."""
    out = {}
    for package in LAYERS:
        for file in sorted((root / package).rglob("*.py")):
            parts = list(file.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_package else parts)] = (file, is_package)
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, file: Path, is_package: bool, modules: dict, root: Path = ROOT) -> list[Import]:
    """Every import of a project module in ``file``, wherever it sits (module level, functions, TYPE_CHECKING)."""
    package = module if is_package else module.rpartition(".")[0]
    rel = str(file.relative_to(root))

    def longest(name: str) -> str | None:  # the most specific project module a dotted name starts with
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    out: list[Import] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            here = "function" if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else where
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, "typing")
                for stmt in child.orelse:
                    visit_stmt(stmt, where)
                continue
            visit_stmt(child, here)

    def visit_stmt(stmt: ast.AST, where: str) -> None:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                target = longest(alias.name)
                if target:
                    out.append(Import(module, target, None, where, rel, stmt.lineno))
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level:
                base = package.split(".")[: len(package.split(".")) - (stmt.level - 1)]
                source = ".".join(base + ([stmt.module] if stmt.module else []))
            else:
                source = stmt.module or ""
            for alias in stmt.names:
                if f"{source}.{alias.name}" in modules:  # a submodule
                    out.append(Import(module, f"{source}.{alias.name}", None, where, rel, stmt.lineno))
                elif (target := longest(source)) is not None:
                    out.append(Import(module, target, alias.name, where, rel, stmt.lineno))
        visit(stmt, where)

    visit(ast.parse(file.read_text()), "module")
    return out


def private_attribute_uses(module: str, file: Path, is_package: bool, modules: dict,
                           root: Path = ROOT) -> list[str]:
    """``alias._name`` where ``alias`` is bound by an import of another project module."""
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(file.read_text())
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in modules:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            source = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
            for a in node.names:
                if f"{source}.{a.name}" in modules:
                    aliases[a.asname or a.name] = f"{source}.{a.name}"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                target = ".".join([aliases[value.id], *reversed(chain)])
                if target in modules and target != module:
                    out.append(f"{file.relative_to(root)}:{node.lineno} {target}.{node.attr}")
    return out


@lru_cache(maxsize=4)
def all_imports(root: Path = ROOT) -> tuple[dict, list[Import]]:
    """(project_modules, every import of a project module), parsed once per root."""
    modules = project_modules(root)
    return modules, [i for m, (f, pkg) in modules.items() for i in imports_of(m, f, pkg, modules, root)]


def private_violations(root: Path = ROOT) -> list[str]:
    modules, imports = all_imports(root)
    out = [f"{i}: a private name of another module" for i in imports
           if i.name is not None and _is_private(i.name) and i.target != i.importer]
    for i in imports:
        parts = i.target.split(".")
        for k, part in enumerate(parts):
            owner = ".".join(parts[:k])  # the package the private module belongs to
            if _is_private(part) and not (i.importer == owner or i.importer.startswith(owner + ".")):
                out.append(f"{i}: a private module of {owner}, from outside it")
    for m, (f, pkg) in modules.items():
        out += [f"{use}: a private name of another module" for use in private_attribute_uses(m, f, pkg, modules, root)]
    return out


def cycles(root: Path = ROOT) -> list[list[Import]]:
    """The strongly connected components (> 1 module) of the graph of module-level and function-local
    imports, each as the imports between its modules."""
    modules, imports = all_imports(root)
    edges = [i for i in imports if i.where != "typing" and i.target != i.importer]
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for i in edges:
        graph[i.importer].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [[i for i in edges if i.importer in c and i.target in c] for c in components]


def layer_violations(root: Path = ROOT) -> list[str]:
    _, imports = all_imports(root)
    rank = {p: k for k, p in enumerate(LAYERS)}
    return [f"{i}: {i.importer.split('.')[0]} may import only {', '.join(LAYERS[: rank[i.importer.split('.')[0]] + 1])}"
            for i in imports if rank[i.target.split(".")[0]] > rank[i.importer.split(".")[0]]]


# ------------------------------------------------------------------------------------------------- the tests


def test_no_module_imports_another_modules_private_names():
    found = private_violations()
    assert not found, "give the shared helper a public name (in a module both import):\n" + "\n".join(found)


def test_no_import_cycles_among_project_modules():
    found = cycles()
    assert not found, "import cycles (move what both need into a module both import):\n" + "\n\n".join(
        "\n".join(map(str, c)) for c in found)


def test_each_package_imports_only_its_own_layer_or_lower_ones():
    found = layer_violations()
    assert not found, ("a stage imports one further down the data flow (move the shared code up, e.g. into "
                       "fourm_core):\n" + "\n".join(found))


def test_the_checks_catch_what_they_are_for(tmp_path):
    """A small tree with one of each problem (hidden the ways the real ones were) is caught; what is allowed
    (a TYPE_CHECKING-only cycle, a package's own private module, importing upstream) is not."""
    files = {
        "fourm_core/__init__.py": "",
        "fourm_core/store.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .index import Index\n",
        "fourm_core/index.py": "from .store import *\n",  # a cycle only through TYPE_CHECKING: allowed
        "fourm_core/reads_stage.py": "def f():\n    from eval_stage.plan import Plan\n",  # layer, function-local
        "pseudolabel/__init__.py": "",
        "pseudolabel/labeler.py": "from tokenize_stage.types import Box\nfrom fourm_core import store\n",  # layer
        "tokenize_stage/__init__.py": "",
        "pseudolabel/spec.py": "",
        "tokenize_stage/types.py": "from pseudolabel import spec\nBox = 1\n",  # upstream: allowed
        "tokenize_stage/text/__init__.py": "",
        "tokenize_stage/text/_common.py": "X = 1\n",
        "tokenize_stage/text/det.py": "from ._common import X\n",  # its own package's private module: allowed
        "eval_stage/__init__.py": "",
        "eval_stage/plan.py": "from tokenize_stage.text._common import X\n",  # a private module, from outside
        "eval_stage/evaluation.py": "from .boxes import rows\nclass _Plan: pass\n",
        "eval_stage/boxes.py": "def rows():\n    from .evaluation import _Plan\n",  # cycle + private, in a function
        "eval_stage/knn.py": "from . import evaluation\nP = evaluation._Plan\n",  # private through the module
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    for package in ("ingest_stage", "train_stage", "pipelines"):
        (tmp_path / package).mkdir()

    assert sorted(private_violations(tmp_path)) == [
        "eval_stage/boxes.py:2 from eval_stage.evaluation import _Plan (function): a private name of another module",
        "eval_stage/knn.py:2 eval_stage.evaluation._Plan: a private name of another module",
        "eval_stage/plan.py:1 from tokenize_stage.text._common import X (module): a private module of "
        "tokenize_stage.text, from outside it",
    ]
    assert [sorted({i.importer for i in c}) for c in cycles(tmp_path)] == [["eval_stage.boxes", "eval_stage.evaluation"]]
    assert sorted(v.split(":")[0] for v in layer_violations(tmp_path)) == ["fourm_core/reads_stage.py",
                                                                          "pseudolabel/labeler.py"]
