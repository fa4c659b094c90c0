"""The package's import graph has no circles, lazy imports inside functions included, and lower
layers never import higher ones (components never reach recipes, the CLI or the run directory)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "firekd"
# Layers from the bottom: a module may import its own layer and the ones below, never above.
# Components (layer 2) take plain arguments; configuration records sit above them and name their
# choices; recipes alone combine stores, run folders, components and reports.
LAYERS = [
    {"errors", "options", "diskspace", "locks", "normalization"},
    {"io", "logs"},
    {"data", "kd", "metrics", "compress", "engine", "models"},
    {"checkpoints", "config", "deploy"},
    {"keys", "rundir"},
    {"store", "reporting"},
    {"recipes"},
    {"cli", "__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every firekd module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package up
                name = module_name(path)
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base]).strip(".")
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def owning_module(name: str, modules: dict) -> str:
    """The module of ``modules`` that an imported name lives in (`from pkg import function`)."""
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> nx.DiGraph:
    modules = {module_name(p): p for p in (SRC / PACKAGE).rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for target in (owning_module(n, modules) for n in imports_of(path)):
            if target in modules and target != name and not name.startswith(target + "."):
                graph.add_edge(name, target)
    return graph


def layer(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else None
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def test_every_module_belongs_to_a_layer():
    unplaced = sorted(m for m in import_graph() if m != PACKAGE and layer(m) is None)
    assert not unplaced, f"add these to a layer in LAYERS: {unplaced}"


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    graph.remove_nodes_from([n for n in list(graph) if n == PACKAGE or n.endswith(".__init__")])
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, f"import circles: {cycles}"


def test_no_module_imports_a_higher_layer():
    upward = [(a, b) for a, b in import_graph().edges
              if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)]
    assert not upward, f"imports from a higher layer: {sorted(upward)}"


@pytest.mark.parametrize("source,expected", [
    ("from firekd.io import Writer\n", {"firekd.io", "firekd.io.Writer"}),
    ("def f():\n    import firekd.checkpoints\n", {"firekd.checkpoints"}),
])
def test_lazy_and_from_imports_are_seen(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert imports_of(path) == expected


def module_level_imports(path: Path) -> set[str]:
    """Every module ``path`` imports when it is imported (not inside a function), any package."""
    found, todo = set(), list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, (ast.If, ast.Try, ast.With)):  # still run at import time
            todo += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                     *(s for h in getattr(node, "handlers", []) for s in h.body)]
    return found


def imported_at_import_time(roots: list[str]) -> dict[str, set[str]]:
    """{firekd module: what it imports at import time} for every firekd module that importing
    ``roots`` loads (each root: a module name, or a package's name ending in ".*")."""
    modules = {module_name(p): p for p in (SRC / PACKAGE).rglob("*.py")}
    todo = [m for root in roots for m in ([n for n in modules if n.startswith(root[:-1])] if root.endswith(".*")
                                          else [root])]
    reached: dict[str, set[str]] = {}
    while todo:
        name = todo.pop()
        if name in reached or name not in modules:
            continue
        reached[name] = module_level_imports(modules[name])
        todo += [owning_module(target, modules) for target in reached[name]]
    return reached


def test_a_training_process_imports_no_plotting_library():
    """matplotlib and UMAP load only where figures are drawn: a --no_figures run, a killed one or
    a bad input starts about half a second sooner (each of the suite's ~40 processes too)."""
    reached = imported_at_import_time(["firekd.cli", "firekd.cli.*", "firekd.recipes.ablation",
                                       "firekd.recipes.jobs", "firekd.recipes.grid"])
    for name, imported in reached.items():
        plotting = sorted(m for m in imported if m.split(".")[0] in ("matplotlib", "umap"))
        assert not plotting, f"{name} imports {plotting} at import time"
        assert "firekd.reporting.plots" not in imported and "firekd.recipes.figures" not in imported, name
    assert "firekd.recipes.jobs" in reached and "firekd.recipes.outputs" in reached  # the walk reached them


def test_the_command_line_parses_without_torch():
    """Every command's parser (the spec scripts' too) is built without torch, timm or
    scikit-learn: --help and a bad flag answer in well under a second; a command imports them when
    it runs (and a torchrun rank when it joins its group)."""
    reached = imported_at_import_time(["firekd.cli", "firekd.cli.*"])
    for name, imported in reached.items():
        heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "timm", "sklearn", "torchvision"))
        assert not heavy, f"{name} imports {heavy} at import time"
    assert {"firekd.cli.train_cmds", "firekd.config"} <= set(reached)  # the walk reached them
