"""The library's modules import each other without a cycle, and the task registry is a leaf.

The graph is read from the source with ``ast``, not by importing: every ``import hecktor.x``, ``from hecktor.x import
y``, ``from hecktor import x`` and relative import, wherever it stands in the file (inside a function, under ``if
TYPE_CHECKING:``), is an edge. An import inside a function is how a cycle hides at run time; counting those keeps the
layers honest: the registry and the errors at the bottom, readers and writers above them, the predictors above those,
the containers and ``hecktor-predict`` on top.

Importing ``hecktor.a.b`` also runs ``hecktor/a/__init__.py``, so that is an edge too, except for the importer's own
packages (a package's ``__init__`` that gathers its submodules is not a cycle).
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from pathlib import Path

from helpers.paths import REPO

LIBRARY = REPO / "shared"
PACKAGE = "hecktor"
REGISTRY = "hecktor.tasks"
REGISTRY_MAY_IMPORT = {"hecktor.plan", "hecktor.labels", "hecktor.errors"}
"""The bottom of the library: data and the error classes; nothing that reaches a predictor, a reader or a writer."""


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``root`` (subpackages included), by dotted name."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The modules of the library that ``node`` (in ``module``) imports."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        # "from p import x": x is a module when the library has one by that name, else a name defined in p.
        names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names]
    found = []
    for name in names:
        while name and name not in modules:  # "import hecktor.a.b" of a name the library lacks: its nearest module
            name = name.rpartition(".")[0]
        if name:
            found.append(name)
    return found


def import_graph(root: Path = LIBRARY, package: str = PACKAGE) -> dict[str, dict[str, int]]:
    """For every module of ``package``, the library modules it imports, each with the line of its first import."""
    modules = module_files(root, package)
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        own_packages = {".".join(module.split(".")[:n]) for n in range(1, module.count(".") + 1 + is_package)}
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, module, is_package, modules):
                parents = {".".join(target.split(".")[:n]) for n in range(1, target.count(".") + 1)}
                for reached in {target} | (parents & set(modules)) - own_packages:
                    if reached != module and (reached not in edges or node.lineno < edges[reached]):
                        edges[reached] = node.lineno
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return components


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component, from its first module back to it."""
    cycles = []
    for component in strongly_connected(graph):
        start = min(component)
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if start in graph[node]:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                cycles.append([*reversed(path), start])
                break
            for successor in sorted(graph[node]):
                if successor in component and successor not in came_from and successor != start:
                    came_from[successor] = node
                    queue.append(successor)
    return sorted(cycles)


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    """``hecktor.a (line 3) -> hecktor.b (line 7) -> hecktor.a``: each module with the line that imports the next."""
    return " -> ".join([f"{here} (line {graph[here][there]})" for here, there in zip(cycle, cycle[1:])] + [cycle[-1]])


def closure(graph: dict[str, dict[str, int]], start: str) -> set[str]:
    """Every module that importing ``start`` may import, directly or not."""
    seen, todo = set(), [start]
    while todo:
        for successor in graph[todo.pop()]:
            if successor not in seen:
                seen.add(successor)
                todo.append(successor)
    return seen - {start}


def test_the_library_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "hecktor.training.segmentation" in graph and "hecktor.synthetic.cohort" in graph
    cycles = [describe(cycle, graph) for cycle in find_cycles(graph)]
    tangled = sorted(set().union(*strongly_connected(graph)))
    assert not cycles, ("import cycle(s) among the library's modules (each with the line that imports the next):\n  "
                        + "\n  ".join(cycles) + f"\nmodules on a cycle: {', '.join(tangled)}")


def test_the_registry_is_a_leaf():
    """hecktor.tasks imports only the bottom of the library (not a predictor, reader or writer, not even inside a
    function), and with it nothing outside Python's standard library: shell scripts run ``python3 -m hecktor.tasks``
    on a machine without the toolkit's requirements."""
    graph = import_graph()
    assert set(graph[REGISTRY]) <= REGISTRY_MAY_IMPORT, sorted(set(graph[REGISTRY]) - REGISTRY_MAY_IMPORT)
    reached = closure(graph, REGISTRY)
    assert reached <= REGISTRY_MAY_IMPORT, sorted(reached - REGISTRY_MAY_IMPORT)
    modules = module_files(LIBRARY, PACKAGE)
    for module in {REGISTRY} | reached:
        for node in ast.walk(ast.parse(modules[module].read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            outside = [n for n in names if n.split(".")[0] not in sys.stdlib_module_names | {PACKAGE, "__future__"}]
            assert not outside, f"{module} line {node.lineno} imports {outside}: the registry must run on bare Python"


# ----------------------------------------------------------------------------------------------- the checker itself


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_reads_every_form_of_import(tmp_path):
    root = _package(tmp_path, {
        "pkg/__init__.py": "from pkg.leaf import VALUE\n",
        "pkg/leaf.py": "VALUE = 1\n",
        "pkg/absolute.py": "import pkg.leaf\nimport os\n",
        "pkg/from_module.py": "from pkg.leaf import VALUE\n",
        "pkg/from_package.py": "from pkg import leaf, absolute\n",
        "pkg/name_of_package.py": "from pkg import VALUE\n",
        "pkg/in_function.py": "def f():\n    if True:\n        from pkg.leaf import VALUE\n    return VALUE\n",
        "pkg/typing_only.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.leaf import VALUE\n",
        "pkg/sub/__init__.py": "from . import inner\n",
        "pkg/sub/inner.py": "from ..leaf import VALUE\nfrom .. import absolute\nfrom . import sibling\n",
        "pkg/sub/sibling.py": "",
        "pkg/outside.py": "import pkg.sub.sibling\nimport pkg.leaf.missing_name\n",
    })
    graph = import_graph(root, "pkg")
    assert graph["pkg"] == {"pkg.leaf": 1}
    assert graph["pkg.absolute"] == {"pkg.leaf": 1}
    assert graph["pkg.from_module"] == {"pkg.leaf": 1}
    assert graph["pkg.from_package"] == {"pkg.leaf": 1, "pkg.absolute": 1}
    assert graph["pkg.name_of_package"] == {"pkg": 1}
    assert graph["pkg.in_function"] == {"pkg.leaf": 3}
    assert graph["pkg.typing_only"] == {"pkg.leaf": 3}
    assert graph["pkg.sub"] == {"pkg.sub.inner": 1}
    assert graph["pkg.sub.inner"] == {"pkg.leaf": 1, "pkg.absolute": 2, "pkg.sub.sibling": 3}
    # Importing pkg.sub.sibling runs pkg/sub/__init__.py first; the importer's own package is never an edge.
    assert graph["pkg.outside"] == {"pkg.sub.sibling": 1, "pkg.sub": 1, "pkg.leaf": 2}
    assert find_cycles(graph) == []


def test_the_checker_names_a_planted_cycle(tmp_path):
    root = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/registry.py": "def predictor():\n    from pkg.predictor import Predictor\n    return Predictor\n",
        "pkg/reader.py": "from pkg.registry import predictor\n",
        "pkg/predictor.py": "import pkg.reader\n\nclass Predictor: ...\n",
        "pkg/a.py": "from . import b\n",
        "pkg/b.py": "from .a import *\n",
        "pkg/clean.py": "from pkg import reader\n",
    })
    graph = import_graph(root, "pkg")
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.predictor", "pkg.reader", "pkg.registry",
                                                                 "pkg.predictor"]]
    assert describe(find_cycles(graph)[1], graph) == ("pkg.predictor (line 1) -> pkg.reader (line 1) -> "
                                                      "pkg.registry (line 2) -> pkg.predictor")
    # A package's __init__ that imports a module which imports the package from outside it is a cycle too.
    _package(tmp_path, {"pkg/sub/__init__.py": "from pkg.user import X\n", "pkg/sub/leaf.py": "",
                        "pkg/user.py": "from pkg.sub.leaf import *\nX = 1\n"})
    assert ["pkg.sub", "pkg.user", "pkg.sub"] in find_cycles(import_graph(root, "pkg"))
