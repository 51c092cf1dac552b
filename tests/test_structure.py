"""Structure of the four packages: no import cycle (imports inside functions count) and no
function over ``MAX_FUNCTION_LINES`` lines (docs/design.md, "What may import what").

Both are read from the sources with ``ast`` (nothing is imported). The allow-lists below hold
today's offenders; they may only shrink: a listed offender that is gone fails the test too, so
whoever removes one deletes its entry in the same change.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lavida_envs", "agents", "baselines", "evaluation")
MAX_FUNCTION_LINES = 70

# Strongly connected import groups that still exist (each a cycle to break). Only shrink this.
ALLOWED_CYCLES: list[frozenset[str]] = []

# "module:qualname" of functions still over MAX_FUNCTION_LINES lines. Only shrink this.
ALLOWED_LONG_FUNCTIONS: set[str] = set()


def module_files() -> dict[str, Path]:
    """Every module of the four packages, by dotted name."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module name an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, source: str, is_package: bool, modules) -> set[str]:
    """Package modules that ``module`` imports anywhere in its source (functions included)."""
    tree = ast.parse(source)
    found: set[str] = set()

    def add(name: str) -> None:
        # `import a.b.c` runs a.b.c; a name not a module is looked up in its parent package.
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, is_package)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                add(sub if sub in modules else target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> package modules it imports."""
    modules = module_files()
    return {
        name: imports_of(name, path.read_text(), path.name == "__init__.py", modules)
        for name, path in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected groups of more than one module (Tarjan), plus self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(frozenset(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def long_functions(limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """``module:qualname`` -> line count (``def`` through last line) of functions over ``limit``."""
    found = {}
    for module, path in module_files().items():
        tree = ast.parse(path.read_text(), filename=str(path))

        def walk(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                        lines = child.end_lineno - start + 1
                        if lines > limit:
                            found[f"{module}:{name}"] = lines
                    walk(child, name + ".")
                else:
                    walk(child, prefix)

        walk(tree, "")
    return found


def test_imports_inside_functions_and_relative_imports_count():
    modules = dict.fromkeys(["p", "p.a", "p.b", "p.c", "p.sub", "p.sub.d"])
    source = (
        "import os\nfrom . import a\nfrom .b import name\n"
        "def f():\n    import p.sub.d as d\n    from p.c import g\n")
    assert imports_of("p.sub.e", source, False, modules) == {"p.sub", "p.sub.d", "p.c"}
    assert imports_of("p.a", source, False, modules) == {"p.b", "p.sub.d", "p.c"}  # not itself
    assert imports_of("p", source, True, modules) == {"p.a", "p.b", "p.sub.d", "p.c"}


def test_cycles_are_strongly_connected_groups():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        frozenset({"a", "b", "c"})]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_new_import_cycle():
    cycles = import_cycles(import_graph())
    new = [sorted(c) for c in cycles if c not in ALLOWED_CYCLES]
    assert not new, (
        f"import cycles {new} (a new one, or a listed one that changed): move the shared piece "
        "into a leaf module both can import (docs/design.md, 'What may import what'), or, if "
        f"a listed cycle shrank, write the smaller group into ALLOWED_CYCLES in {__file__}")
    stale = [sorted(a) for a in ALLOWED_CYCLES if a not in cycles]
    assert not stale, f"cycles {stale} are gone: delete them from ALLOWED_CYCLES in {__file__}"


def test_no_new_long_function():
    found = long_functions()
    new = {name: n for name, n in found.items() if name not in ALLOWED_LONG_FUNCTIONS}
    assert not new, (
        f"functions over {MAX_FUNCTION_LINES} lines: {new}: split them into named steps")
    stale = sorted(ALLOWED_LONG_FUNCTIONS - set(found))
    assert not stale, f"{stale} are short now: delete them from ALLOWED_LONG_FUNCTIONS in {__file__}"
