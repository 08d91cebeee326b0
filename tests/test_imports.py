"""The import graph of forkspawn/ and analysis/ has no cycles, and the harness does not import
the analysis (the floors: vocabulary/config/record below, harness, analysis on top)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("forkspawn", "analysis")
# `python -m forkspawn.quality precision` runs the analysis of a records file: the one way up.
UPWARD_OK = {"forkspawn.quality", "forkspawn.quality.cli"}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports anywhere in it (function bodies too)."""
    mods = modules()
    out = {}
    for name, f in mods.items():
        here = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                deps.add(target)
                deps.update(f"{target}.{a.name}" for a in node.names)
        out[name] = {d for d in deps if d in mods and d != name}
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_cycle_check_sees_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_harness_does_not_import_the_analysis() -> None:
    up = {m: sorted(d for d in deps if d.split(".")[0] == "analysis")
          for m, deps in graph().items() if m.split(".")[0] == "forkspawn" and m not in UPWARD_OK}
    assert {m: d for m, d in up.items() if d} == {}


def test_every_adapter_keeps_the_contract_and_no_private_names_cross() -> None:
    """forkspawn.engines.Adapter: each adapter module binds every member (defined or imported;
    read by ast, since an engine's own package may be absent here), and takes no `_private`
    name from another module of ours."""
    from forkspawn.engines import _MODULES, Adapter

    members = {n for n in vars(Adapter) if not n.startswith("_")}
    assert members == {"run_once", "unavailable", "engine_version", "ray_head"}
    for module in _MODULES.values():
        tree = ast.parse((ROOT / "forkspawn" / "engines" / f"{module}.py").read_text())
        bound = set()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                bound.add(node.name)
            elif isinstance(node, ast.Assign):
                bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.ImportFrom):
                bound.update(a.asname or a.name for a in node.names)
                assert not [a.name for a in node.names if a.name.startswith("_") and a.name != "__future__"
                            and node.module != "__future__"], (module, node.module)
        assert members <= bound, (module, members - bound)
