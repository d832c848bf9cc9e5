"""The package's shape stays true: no import circle, no private name crossing modules,
lower rooms never importing higher ones (docs/architecture.md)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("keras_sns", "serving", "experiments")

# Rooms from the bottom up: a module may import its own room and the rooms below it.
LAYERS = [
    {"keras_sns", "keras_sns.config", "keras_sns.files", "keras_sns.precision"},
    {"keras_sns.data", "keras_sns.models"},
    {"keras_sns.attacks", "keras_sns.neurons"},
    {"keras_sns.evaluation"},
    {"keras_sns.training", "keras_sns.studies", "keras_sns.export"},
    {"serving"},
    {"keras_sns.cli"},
    {"experiments"},  # the reproduction runner and its report: nothing imports them
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]):
    """(imported module, imported names, line) for every import in the file, lazy ones too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [a.name for a in node.names]
            # `from pkg import submodule` imports the submodule.
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in known]
            if subs:
                for sub in subs:
                    yield sub, [], node.lineno
                rest = [n for n in names if f"{module}.{n}" not in known]
                if rest:
                    yield module, rest, node.lineno
            else:
                yield module, names, node.lineno


def _graph():
    modules = _modules()
    known = set(modules)
    edges = {m: set() for m in modules}
    private, lines = [], {}
    for name, path in modules.items():
        for target, names, line in _imports(path, name, known):
            if target in known and target != name:
                edges[name].add(target)
                lines[(name, target)] = line
                private += [f"{name}:{line} imports {n} from {target}"
                            for n in names if n.startswith("_")]
    return edges, private, lines


def _room(module: str) -> int:
    best = None
    for level, rooms in enumerate(LAYERS):
        for room in rooms:
            if (module == room or module.startswith(room + ".")) and (
                    best is None or len(room) > len(best[1])):
                best = (level, room)
    assert best is not None, f"{module} belongs to no room of docs/architecture.md"
    return best[0]


def test_no_import_cycles():
    edges, _, _ = _graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_name_imported_across_modules():
    _, private, _ = _graph()
    assert not private, "\n".join(private)


def test_lower_rooms_never_import_higher_ones():
    edges, _, lines = _graph()
    bad = [f"{a}:{lines[(a, b)]} imports {b}" for a, targets in edges.items() for b in targets
           if _room(b) > _room(a)]
    assert not bad, "\n".join(bad)


def test_checker_sees_a_cycle_and_a_private_import(tmp_path, monkeypatch):
    # The checks themselves can fail: a fake package with a circle and a private import.
    pkg = tmp_path / "keras_sns"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from keras_sns.b import _helper\n")
    (pkg / "b.py").write_text("def f():\n    from keras_sns import a\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__), "PACKAGES", ("keras_sns",))
    edges, private, _ = _graph()
    assert edges["keras_sns.a"] == {"keras_sns.b"} and edges["keras_sns.b"] == {"keras_sns.a"}
    assert private == ["keras_sns.a:1 imports _helper from keras_sns.b"]
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()
