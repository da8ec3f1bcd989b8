"""The joints the architecture promises (docs/architecture.md), checked on the source itself:
which modules may import Flask, that the transport knows nothing of the routes above it, that
the exception hierarchy stays pure, and that no function grows past a complexity of 15."""
from __future__ import annotations

import ast
import pathlib

import pytest
from radon.complexity import cc_visit

ROOT = pathlib.Path(__file__).resolve().parent.parent
GATEWAY = ROOT / "gateway"
MODULES = sorted(GATEWAY.rglob("*.py"))
MAX_COMPLEXITY = 15


def imported(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved within gateway)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def rel(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


def test_only_the_views_and_the_app_factory_import_flask():
    allowed = {"gateway/__init__.py"}
    users = {rel(p) for p in MODULES
             if any(n == "flask" or n.startswith(("flask.", "werkzeug")) for n in imported(p))}
    assert {u for u in users if not u.startswith("gateway/views/")} <= allowed


def test_the_transport_imports_nothing_from_the_routes_or_the_errors():
    names = imported(GATEWAY / "transport.py")
    assert not {n for n in names if n.startswith(("gateway.upstream", "gateway.errors"))}


def test_the_exception_hierarchy_imports_nothing():
    assert imported(GATEWAY / "errors.py") <= {"__future__", "__future__.annotations"}


def functions(blocks):
    """radon's blocks, classes opened up: every function and method (closures included)."""
    for block in blocks:
        if hasattr(block, "methods"):                   # a class
            yield from functions(block.methods)
            yield from functions(block.inner_classes)
        else:
            yield block
            yield from functions(block.closures)


def test_the_complexity_check_sees_methods_and_closures():
    source = "class A:\n    def m(self, x):\n" + "".join(
        f"        if x == {i}:\n            return {i}\n" for i in range(20))
    assert max(b.complexity for b in functions(cc_visit(source))) == 21


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_no_function_is_more_complex_than_15(path):
    over = [f"{b.name} ({b.complexity})" for b in functions(cc_visit(path.read_text("utf-8")))
            if b.complexity > MAX_COMPLEXITY]
    assert not over, f"{rel(path)}: {', '.join(over)}"
