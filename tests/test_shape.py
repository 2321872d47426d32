"""The package's shape: no import cycle, no framework imported by ``import autoprof``, and
modules and classes small enough to read (issue 10)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import autoprof

PACKAGE = Path(autoprof.__file__).parent
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_only(tree: ast.Module) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module"):
            found.update(a.value for a in node.args if isinstance(a, ast.Constant))
    return {m for m in found if m in modules and m != name}


def test_no_import_cycle_even_through_function_level_imports():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # importlib.import_module by name (the integrations' registry) counts only when the name
    # is a constant: the registry names its adapters through a helper, on purpose.
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend([*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt])
                return True
            if nxt not in state and visit(nxt, [*trail, nxt]):
                return True
        state[node] = 2
        return False

    for name in sorted(graph):
        if name not in state and visit(name, [name]):
            break
    assert not cycle, " -> ".join(cycle)


def test_import_autoprof_imports_no_web_framework():
    code = (
        "import sys, autoprof\n"
        "from autoprof import AutoProf, AutoProfWSGIMiddleware, Rule, Settings\n"
        "AutoProf(dump_dir='/nonexistent/unused')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'starlette', 'anyio', 'flask', 'werkzeug', 'fastapi', 'django', 'fsspec', 's3fs',"
        " 'prometheus_client', 'opentelemetry', 'google'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_the_asgi_adapter_is_loaded_on_first_use():
    code = (
        "import sys, autoprof\n"
        "assert 'starlette' not in sys.modules\n"
        "print(autoprof.AutoProfMiddleware.__module__, 'starlette' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["autoprof.asgi", "True"]


def test_modules_and_classes_are_small_enough_to_read():
    too_long = []
    for name, path in sorted(_modules().items()):
        lines = path.read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"module {name}: {lines} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    too_long.append(f"class {name}.{node.name}: {size} lines")
    assert not too_long, "; ".join(too_long)
