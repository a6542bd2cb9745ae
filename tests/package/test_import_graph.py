"""No import cycle among the SDK's modules, except between experiments and what holds them.

The graph is built from the source with :mod:`ast` (nothing is imported), one node per
module of ``syvain_metrics`` (a package is its ``__init__``), one edge per import of another
``syvain_metrics`` module. ``from package import name`` is an edge to ``package.name`` when
that is a module, else to ``package``. Every import statement counts, wherever it is:

- *runtime*: at module level (class bodies and ``try`` blocks included), run on import;
- *typing*: under ``if TYPE_CHECKING:``. It never runs, but the module's signatures name
  the other module: a cycle through it is still two modules that must be read and changed
  together (the session and the ``log()`` pipeline were such a pair);
- *deferred*: inside a function. It runs later, once both modules are loaded, so it cannot
  fail the import; it is a dependency all the same.

What is not seen: ``importlib.import_module`` with a string (the package's lazy attributes
in ``syvain_metrics/__init__.py``), and the implicit import of parent packages (every
module would then depend on the root package).

Each level is checked on its own, from the strictest (runtime imports alone) to all of
them, so that a failure says which kind of import closes the cycle. The exception is an
experiment and what holds experiments: ``resources.folder`` <-> ``resources.experiment``
(the package and its modules), where a folder lists its experiments and an experiment
names its folder, and ``resources.experiment_list`` <-> ``resources.experiment``, where
``Experiment.list()`` returns the runs table and the table's items are typed as
experiments. The edges between those pairs are left out of the graph, so any other cycle
through them still fails.
"""

from __future__ import annotations

import ast
import itertools
from collections import deque
from pathlib import Path

import pytest

import syvain_metrics

PACKAGE = Path(syvain_metrics.__file__).parent
ROOT_NAME = "syvain_metrics"

FOLDER = "syvain_metrics.resources.folder"
EXPERIMENT_LIST = "syvain_metrics.resources.experiment_list"
EXPERIMENT = "syvain_metrics.resources.experiment"
HOLDERS_OF_EXPERIMENTS = frozenset({FOLDER, EXPERIMENT_LIST})

Edges = dict[tuple[str, str], set[str]]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _known(name: str) -> str | None:
    """The module ``name`` is, or the nearest package above it that is one of ours."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Collects one module's imports of ``syvain_metrics`` modules, with their kind."""

    def __init__(self, module: str, package: str, edges: Edges) -> None:
        self.module = module
        self.package = package
        self.edges = edges
        self.functions = 0
        self.type_checking = 0

    def _add(self, target: str) -> None:
        known = _known(target)
        if known is None or known == self.module:
            return
        kind = "deferred" if self.functions else "typing" if self.type_checking else "runtime"
        self.edges.setdefault((self.module, known), set()).add(kind)

    def _in_function(self, node: ast.AST) -> None:
        self.functions += 1
        self.generic_visit(node)
        self.functions -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._in_function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._in_function(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._in_function(node)

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.type_checking += 1
        for child in node.body:
            self.visit(child)
        self.type_checking -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == ROOT_NAME:
                self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            base = parts[: len(parts) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source.split(".")[0] != ROOT_NAME:
            return
        for alias in node.names:
            full = f"{source}.{alias.name}"
            self._add(full if full in MODULES else source)


def import_edges() -> Edges:
    """Every import between the package's modules, with the kinds it is imported as."""
    edges: Edges = {}
    for module, path in MODULES.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        _Imports(module, package, edges).visit(ast.parse(path.read_text(), str(path)))
    return edges


def _in_experiment(module: str) -> bool:
    return module == EXPERIMENT or module.startswith(EXPERIMENT + ".")


def _allowed(source: str, target: str) -> bool:
    """The edges between an experiment and what holds experiments (a folder, the runs
    table): the pairs allowed to import each other."""
    return (source in HOLDERS_OF_EXPERIMENTS and _in_experiment(target)) or (
        target in HOLDERS_OF_EXPERIMENTS and _in_experiment(source)
    )


def _graph(edges: Edges, kinds: frozenset[str]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for (source, target), seen in edges.items():
        if seen & kinds and not _allowed(source, target):
            graph[source].add(target)
    return graph


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            advanced = False
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One shortest cycle through the first module of ``component`` (breadth first)."""
    start = component[0]
    members = set(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node] & members):
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if target not in came_from:
                came_from[target] = node
                queue.append(target)
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


def cycles(kinds: frozenset[str]) -> list[str]:
    """Each cycle of the graph of ``kinds`` imports, described for people: one shortest
    cycle with the kind of each import, then every module caught in the same knot."""
    edges = import_edges()
    graph = _graph(edges, kinds)
    described = []
    for component in _components(graph):
        cycle = _shortest_cycle(graph, component)
        steps = " -> ".join(
            f"{target} ({'/'.join(sorted(edges[(source, target)] & kinds))})"
            for source, target in itertools.pairwise(cycle)
        )
        described.append(
            f"{cycle[0]} -> {steps}; the knot holds {len(component)} modules: "
            + ", ".join(component)
        )
    return described


RUNTIME = frozenset({"runtime"})
WITH_TYPING = frozenset({"runtime", "typing"})
EVERY_IMPORT = frozenset({"runtime", "typing", "deferred"})


@pytest.mark.parametrize(
    "kinds",
    [RUNTIME, WITH_TYPING, EVERY_IMPORT],
    ids=["runtime", "runtime+typing", "runtime+typing+deferred"],
)
def test_the_import_graph_has_no_cycle(kinds: frozenset[str]) -> None:
    found = cycles(kinds)
    assert not found, f"{len(found)} import cycle(s):\n" + "\n".join(found)


def test_the_graph_sees_every_kind_of_import() -> None:
    edges = import_edges()
    # Known imports of each kind, so that a parser that missed a kind would not pass as
    # "no cycle".
    assert "runtime" in edges[("syvain_metrics.client.session", "syvain_metrics.pipeline.logs")]
    assert "deferred" in edges[("syvain_metrics.cli", "syvain_metrics.client.sync")]
    typing = [pair for pair, kinds in edges.items() if "typing" in kinds]
    assert ("syvain_metrics", "syvain_metrics.client.session") in typing


def test_a_cycle_is_named_with_its_imports() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    (component,) = _components(graph)
    assert component == ["a", "b", "c"]
    assert _shortest_cycle(graph, component) == ["a", "b", "c", "a"]


def test_the_session_and_the_pipeline_do_not_import_each_other() -> None:
    edges = import_edges()
    into_the_session = [
        source
        for source, target in edges
        if source.startswith("syvain_metrics.pipeline.")
        and target.startswith("syvain_metrics.client.")
        and target != "syvain_metrics.client.auth"
    ]
    assert into_the_session == []
