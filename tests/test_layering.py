"""The package's import structure: layers import only below themselves, no cycles, no imports
hidden inside functions (except the command line, which imports late to start fast), no
"module:function" strings and no private names taken from another module."""
import ast
import re
from pathlib import Path

import pytest

import fxquant

ROOT = Path(fxquant.__file__).parent
# Lowest first; a module may import its own layer or any below it.
LAYERS = [
    {"errors", "roles", "target", "cpu", "data", "float32", "value_tracer", "options", "allocator"},
    {"config"},
    {"observers"},
    {"quantizers"},
    {"annotation", "attention_mask", "patterns", "blocks", "padding", "calibrate", "multihead_attention"},
    {"ignored_scope"},
    {"passes"},
    {"tracing", "quantized_model", "pipeline", "methods"},
    {"lowering"},
    {"api"},
    {"plots", "sqnr", "zoo", "workload", "evaluate", "report_command", "quantize_command"},
    {"bench", "sweep"},
    {"cli", "__init__"},
]
LATE_IMPORTS_ALLOWED = {"fxquant.cli"}
ENTRY_STRING = re.compile(r"^fxquant(\.\w+)+:\w+$")


def _modules() -> dict[str, ast.Module]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(("fxquant", *parts[:-1])) if parts[-1] == "__init__" else ".".join(("fxquant", *parts))
        modules[name] = ast.parse(path.read_text(), str(path))
    return modules


MODULES = _modules()


def _layer(module: str) -> int:
    top = module.split(".")[1] if module != "fxquant" else "__init__"
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer of tests/test_layering.py: add it")


def _imported(module: str, node: ast.AST) -> list[str]:
    """fxquant modules an import statement names (submodules for `from package import name`)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("fxquant")]
    if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("fxquant"):
        return []
    return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
            for a in node.names]


def _imports(module: str) -> set[str]:
    return {name for node in ast.walk(MODULES[module]) for name in _imported(module, node)}


def test_every_module_imports_only_its_layer_or_below():
    upward = [f"{m} -> {i}" for m in MODULES for i in _imports(m)
              if i != "fxquant" and _layer(i) > _layer(m)]
    assert not upward


def test_there_is_no_import_cycle():
    graph = {m: _imports(m) - {"fxquant"} for m in MODULES}
    state: dict[str, int] = {}

    def visit(module, path):
        state[module] = 1
        for nxt in graph.get(module, ()):
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*path, module, nxt]))
            if nxt not in state:
                visit(nxt, [*path, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


@pytest.mark.parametrize("module", sorted(set(MODULES) - LATE_IMPORTS_ALLOWED))
def test_no_import_inside_a_function(module):
    late = [f"line {inner.lineno}" for node in ast.walk(MODULES[module])
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for inner in ast.walk(node) if isinstance(inner, (ast.Import, ast.ImportFrom))]
    assert not late


def test_no_module_function_strings():
    found = [f"{m}: {n.value}" for m, tree in MODULES.items() for n in ast.walk(tree)
             if isinstance(n, ast.Constant) and isinstance(n.value, str) and ENTRY_STRING.match(n.value)]
    assert not found


def test_no_private_name_from_another_module():
    found = []
    for module, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                path = (node.module or "").split(".")
                names = [a.name for a in node.names]
                if any(p.startswith("_") for p in path) or any(n.startswith("_") for n in names):
                    found.append(f"{module}: from {node.module} import {', '.join(names)}")
            elif isinstance(node, ast.Import):
                found += [f"{module}: import {a.name}" for a in node.names
                          if any(p.startswith("_") for p in a.name.split("."))]
    assert not found
