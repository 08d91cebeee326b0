"""The import graph of forkspawn/, benchmarks/ and analysis/ has no cycles, the harness imports
neither the analysis nor the asv suite (the floors: vocabulary/config/record below, harness, then
the suite and the analysis on top), nothing imports the build tools (forkspawn.tools), which stand
beside the harness, and every module of the harness imports whatever the FORKSPAWN_* variables say."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("forkspawn", "benchmarks", "analysis")
# `forkspawn quality precision` runs the analysis of a records file, and the command line serves
# the suite's own commands (prefill, spent, profile): the ways up.
UPWARD_OK = {"forkspawn.quality", "forkspawn.quality.cli", "forkspawn.cli"}
TOOLS = "forkspawn.tools"  # the bundle, asv's offline HTML, asv's plugin: run as programs or by asv


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports anywhere in it (function bodies too), by an
    import statement or by `importlib.import_module` (see `dynamic_imports`)."""
    mods = modules()
    out = {}
    for name, f in mods.items():
        here = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
        tree = ast.parse(f.read_text())
        deps = dynamic_imports(name, tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                names = {f"{target}.{a.name}" for a in node.names}
                deps.update(names)
                # `from pkg import submodule` imports the submodule, as `import pkg.submodule`
                # does; only a name taken from the package's own namespace ties to the package
                if not names <= set(mods):
                    deps.add(target)
        out[name] = {d for d in deps if d in mods and d != name}
    return out


def dynamic_imports(name: str, tree: ast.Module) -> set[str]:
    """What a module's `importlib.import_module` calls load: a literal name, or else, for a
    module with a table of its submodules (`_MODULES = {...: "submodule"}`, engines.adapter),
    every submodule in it. Calls of neither kind (benchmarks.common's benchmark modules) load nothing of
    forkspawn or analysis."""
    table = next((node.value for node in tree.body if isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "_MODULES" for t in node.targets)), None)
    found = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _is_import_module(node.func) and node.args):
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            found.add(arg.value)
        elif isinstance(table, ast.Dict):
            found.update(f"{name}.{v.value}" for v in table.values if isinstance(v, ast.Constant))
    return found


def _is_import_module(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "import_module"
            and isinstance(func.value, ast.Name) and func.value.id == "importlib") or (
        isinstance(func, ast.Name) and func.id == "import_module")


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


def test_the_graph_sees_imports_made_by_importlib() -> None:
    """engines.adapter imports its adapters through importlib: the graph has those arrows, so a
    module that imported the engines from below an adapter (ray_cluster did) is a cycle."""
    g = graph()
    assert {"forkspawn.engines.torch_tp", "forkspawn.engines.vllm"} <= g["forkspawn.engines"]
    tree = ast.parse("import importlib\nimportlib.import_module('forkspawn.ray_cluster')")
    assert dynamic_imports("forkspawn.x", tree) == {"forkspawn.ray_cluster"}
    assert cycles({**g, "forkspawn.ray_cluster": g["forkspawn.ray_cluster"] | {"forkspawn.engines"}})


def test_the_harness_imports_neither_the_analysis_nor_the_suite() -> None:
    up = {m: sorted(d for d in deps if d.split(".")[0] in ("analysis", "benchmarks"))
          for m, deps in graph().items() if m.split(".")[0] == "forkspawn" and m not in UPWARD_OK}
    assert {m: d for m, d in up.items() if d} == {}
    assert "benchmarks.common" in graph()["forkspawn.cli"], "the graph sees the command line's way to the suite"


def test_every_harness_module_imports_with_nonsense_in_every_forkspawn_variable() -> None:
    """The harness reads its FORKSPAWN_* variables when it measures, not when it is imported (the
    suite resolves its own once, in benchmarks/common.py): any value, however wrong, imports."""
    names = set()
    for f in (f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py")):  # the suite's variables too
        names.update(re.findall(r"FORKSPAWN_[A-Z_]+[A-Z]", f.read_text()))
    mods = sorted(m for m in modules() if m.split(".")[0] == "forkspawn" and "vllm_cpu_ray" not in m
                  and not m.endswith("__main__"))  # a package's __main__ runs its command line
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    env = {**os.environ, **{n: "nonsense\n|=,-1" for n in names}}
    out = subprocess.run([sys.executable, "-c", code, *mods], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(names) > 15 and len(mods) > 40


def test_nothing_imports_the_build_tools() -> None:
    """The tools import the harness (bundle writes what bundled reads), never the other way: a
    measurement, the command line and the analysis load none of them."""
    g = graph()
    assert "forkspawn.bundled" in g[f"{TOOLS}.bundle"]  # the tools are in the graph, arrows and all
    into = {m: sorted(d for d in deps if _within(d, TOOLS)) for m, deps in g.items() if not _within(m, TOOLS)}
    assert {m: d for m, d in into.items() if d} == {}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_every_adapter_keeps_the_contract_and_no_private_names_cross() -> None:
    """forkspawn.engines.Adapter: each adapter module binds every member (defined or imported;
    read by ast, since an engine's own package may be absent here), and takes no `_private`
    name from another module of ours."""
    from forkspawn.engines import _MODULES, Adapter

    members = {n for n in [*vars(Adapter), *Adapter.__annotations__] if not n.startswith("_")}
    assert members == {"METHODS", "run_once", "unavailable", "engine_version", "ray_head"}
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


def test_no_private_name_of_one_harness_module_is_used_by_another() -> None:
    """No module of forkspawn/ or analysis/ takes a `_private` name from another of ours: neither imported
    (`from .x import _y`) nor read off an imported module (`x._y`)."""
    mods = modules()
    crossing = []
    for name, f in mods.items():
        if name.split(".")[0] not in ("forkspawn", "analysis"):
            continue
        tree = ast.parse(f.read_text())
        ours = set()  # the names this module binds to modules of ours
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in PACKAGES):
                crossing += [f"{name}: {a.name}" for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                ours.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.Import):
                ours.update(a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] in PACKAGES)
        crossing += [f"{name}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ours
                     and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert crossing == []


def test_the_methods_an_engine_starts_with_are_its_adapters() -> None:
    """One place says which start methods an engine supports (its adapter's METHODS): measure
    refuses the others as skipped, and every asv grid lists no other."""
    import sys

    from forkspawn import engines
    from forkspawn.config import Config
    from forkspawn.measure import not_applicable

    assert "not 'forkserver'" in not_applicable(Config(engine="vllm-serve", method="forkserver", device="cpu"))
    assert "no Ray launch path" in not_applicable(Config(engine="xinference", method="ray", device="cpu"))
    sys.path.insert(0, str(ROOT))
    from benchmarks import engines as engine_grids
    from benchmarks import torch_tp as torch_grids

    for mod in (engine_grids, torch_grids):
        for cls in vars(mod).values():
            if isinstance(cls, type) and getattr(cls, "params", None) and cls.engine:
                assert set(cls.methods) <= set(engines.adapter(cls.engine).METHODS), cls
    assert list(torch_grids.TorchTPStartup.methods) == list(engines.adapter("torch-tp").METHODS)
