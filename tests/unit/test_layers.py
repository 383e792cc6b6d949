"""The package's layers point one way (core -> llamacpp -> sources -> measure -> report -> workflow) and no module
imports itself round a cycle: an AST walk over every import in src/ggufbench, the local ones inside functions too.
Building the DAG (rules/common.smk) imports no plotting library."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO

PKG = REPO / "src" / "ggufbench"
LAYERS = ["core", "llamacpp", "sources", "measure", "report", "workflow"]


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The ggufbench modules a file imports (relative imports resolved; `from X import name` counts X.name when
    that is a module)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("ggufbench"):
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in MODULES else mod)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ggufbench")}
    return out - {me}


FILES = sorted(PKG.rglob("*.py"))
MODULES = {module_name(p) for p in FILES}
GRAPH = {module_name(p): imports(p) for p in FILES}


def layer(mod: str) -> int | None:
    parts = mod.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_sits_in_a_layer():
    # the package itself and the two command-line entry points (python -m ggufbench.synth / .lockfile) aside
    loose = sorted(m for m in MODULES if layer(m) is None)
    assert loose == ["ggufbench", "ggufbench.lockfile", "ggufbench.synth"]


def test_layers_import_only_those_below_them():
    wrong = [(m, dep) for m, deps in GRAPH.items() for dep in deps
             if layer(m) is not None and layer(dep) is not None and layer(dep) > layer(m)]
    assert wrong == []


def test_no_import_cycles():
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for dep in sorted(GRAPH.get(m, ())):
            if dep in GRAPH:
                visit(dep)
        stack.pop()

    for m in sorted(GRAPH):
        visit(m)
    assert cycles == []


def test_every_module_has_its_tests_where_a_newcomer_looks():
    """src/ggufbench/<layer>/<mod>.py is tested in tests/unit/<layer>/test_<mod>.py (the two command-line shims are
    tested as command lines in tests/unit/test_entry_points.py)."""
    shims = {"lockfile.py", "synth.py"}
    missing = [str(p.relative_to(PKG)) for p in FILES if p.name != "__init__.py" and p.relative_to(PKG).as_posix()
               not in shims and not (REPO / "tests/unit" / p.relative_to(PKG).parent / f"test_{p.name}").is_file()]
    assert missing == []


def test_building_the_dag_imports_no_plotting_library():
    """What rules/common.smk imports, in a fresh interpreter: matplotlib is for the figures job alone (a dry run
    of the study should not pay for it, nor a cluster's login node need it)."""
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'src'); import ggufbench.core.paths, ggufbench.core.config, "
            "ggufbench.sources.registry, ggufbench.workflow.deps; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'PIL')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
