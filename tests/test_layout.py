"""The package's import graph: no cycles, no module importing another module's private names (read with ``ast``)."""

from __future__ import annotations

import ast
from pathlib import Path

import e5v_qdrant

PACKAGE = Path(e5v_qdrant.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["e5v_qdrant", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names) of every import in ``path``, function-local ones included, relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
    return found


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for name, path in modules.items():
        for module, names in _imports(path):
            targets = {module} | {f"{module}.{n}" for n in names}
            for target in targets & modules.keys():
                if target != name and not name.startswith(target + "."):  # a package's own __init__ is not an edge
                    graph[name].add(target)
            if module in modules and module != name:
                private += [
                    f"{name} imports {module}.{n}" for n in names if n.startswith("_") and not n.startswith("__")
                ]
    return graph, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_checker_finds_a_planted_cycle_and_private_import(tmp_path, monkeypatch):
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text("def f():\n    from .b import _secret\n")  # function-local, as the old cycle was
    (tmp_path / "b.py").write_text("from . import a\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    graph, private = _graph()
    assert _cycles(graph) == [["e5v_qdrant.a", "e5v_qdrant.b", "e5v_qdrant.a"]]
    assert private == ["e5v_qdrant.a imports e5v_qdrant.b._secret"]


def test_no_import_cycles_and_no_private_imports_across_modules():
    graph, private = _graph()
    assert graph["e5v_qdrant.ray_engine"] >= {"e5v_qdrant.pipeline"}  # the graph is real: known edges are seen
    assert _cycles(graph) == []
    assert private == []


def test_ingestion_arrows_point_down():
    graph, _ = _graph()
    for engine in ("e5v_qdrant.ingest", "e5v_qdrant.ray_engine", "e5v_qdrant.reingest"):
        assert "e5v_qdrant.pipeline" in graph[engine]
    assert "e5v_qdrant.ingest" not in graph["e5v_qdrant.ray_engine"]
    assert not graph["e5v_qdrant.pipeline"] & {"e5v_qdrant.ingest", "e5v_qdrant.ray_engine", "e5v_qdrant.reingest"}
    assert not graph["e5v_qdrant.sources"] & {"e5v_qdrant.pipeline", "e5v_qdrant.ingest"}


def test_readme_layout_section_names_every_module_and_only_existing_ones():
    """The README's "Layout" table is the map a newcomer reads: every module and sub-package is in it, and
    everything it names exists."""
    import re

    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("| `"))
    named = set(re.findall(r"`([a-z_]+\.py|[a-z_]+/)`", table))
    actual = {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    actual |= {p.name + "/" for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert named == actual, {"missing from README": sorted(actual - named), "not in the tree": sorted(named - actual)}
