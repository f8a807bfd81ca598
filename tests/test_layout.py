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
    assert graph["e5v_qdrant.ingest.ray_data"] >= {"e5v_qdrant.pipeline"}  # the graph is real: known edges are seen
    assert _cycles(graph) == []
    assert private == []


def test_ingestion_arrows_point_down():
    graph, _ = _graph()
    ingest = {m for m in graph if m == "e5v_qdrant.ingest" or m.startswith("e5v_qdrant.ingest.")}
    for engine in (
        "e5v_qdrant.ingest.local",
        "e5v_qdrant.ingest.run",
        "e5v_qdrant.ingest.ray_data",
        "e5v_qdrant.reingest",
    ):
        assert "e5v_qdrant.pipeline" in graph[engine]
    # the two executors share the driver's run and nothing else of each other
    for executor in ("e5v_qdrant.ingest.local", "e5v_qdrant.ingest.ray_data"):
        assert "e5v_qdrant.ingest.run" in graph[executor]
    assert graph["e5v_qdrant.ingest.ray_data"] & ingest == {"e5v_qdrant.ingest.run"}
    assert not graph["e5v_qdrant.ingest.run"] & (ingest | {"e5v_qdrant.ingest.ray_data"})
    assert not graph["e5v_qdrant.pipeline"] & (ingest | {"e5v_qdrant.ingest.ray_data", "e5v_qdrant.reingest"})
    assert not graph["e5v_qdrant.sources"] & ({"e5v_qdrant.pipeline"} | ingest)


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


# ---------------------------------------------------------------- only the store package talks to Qdrant
def _qdrant_client_methods() -> set[str]:
    from qdrant_client import QdrantClient

    return {n for n in dir(QdrantClient) if not n.startswith("_") and callable(getattr(QdrantClient, n))}


def _client_reach_ins(source: str, methods: set[str]) -> list[str]:
    """Places in ``source`` that use a Qdrant client directly: ``X.client.<method>`` / ``client.<method>`` (called or
    passed on, e.g. to ``store.call``) and imports of ``qdrant_edge``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in methods:
            receiver = node.value
            name = receiver.attr if isinstance(receiver, ast.Attribute) else getattr(receiver, "id", "")
            if name.lstrip("_").endswith("client"):
                found.append(f"line {node.lineno}: {name}.{node.attr}")
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "qdrant_edge" for a in node.names):
            found.append(f"line {node.lineno}: import qdrant_edge")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "qdrant_edge" and not node.level:
            found.append(f"line {node.lineno}: from qdrant_edge import")
    return sorted(found, key=lambda f: int(f.split(":")[0].split()[1]))


def test_client_checker_finds_planted_reach_ins():
    methods = _qdrant_client_methods()
    planted = (
        "def f(store):\n"
        "    store.call('x', store.client.set_payload, collection_name='c')\n"
        "    client.upsert('c', [])\n"
        "    import qdrant_edge\n"
        "    store.set_payload('c', [], {})\n"  # the store's own method: fine
    )
    assert _client_reach_ins(planted, methods) == [
        "line 2: client.set_payload",
        "line 3: client.upsert",
        "line 4: import qdrant_edge",
    ]


def test_no_module_outside_the_store_package_calls_the_qdrant_client():
    methods = _qdrant_client_methods()
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if name == "e5v_qdrant.store" or name.startswith("e5v_qdrant.store."):
            continue
        found = _client_reach_ins(path.read_text(encoding="utf-8"), methods)
        if found:
            offenders[name] = found
    assert offenders == {}, f"call QdrantStore instead of the client: {offenders}"
