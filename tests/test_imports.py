"""The package's import structure: a plugin that costs nothing to import, no import cycles.

The plugin is a ``pytest11`` entry point, loaded by every pytest run of the environment,
so what it imports slows every test suite there, audit or not (issue 13). Views are
imported on first use through the lazy registry (``views/_base.py: BUILTIN_VIEWS``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import unlearn_audit

#: What the plugin must not pull in at import: each costs from 0.1 s (numpy) to seconds.
HEAVY = ("torch", "transformers", "numpy", "scipy", "matplotlib", "sklearn")
SRC = Path(unlearn_audit.__file__).resolve().parent


def _loaded_after(code: str) -> list[str]:
    """Top-level module names present in ``sys.modules`` after ``code`` ran in a fresh
    interpreter (a fresh one, since this test process has imported everything already)."""
    probe = code + "\nimport sys; print(' '.join(sorted({m.partition('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_importing_the_plugin_imports_no_heavy_library():
    loaded = _loaded_after("import unlearn_audit.plugin")
    assert not set(HEAVY) & set(loaded), f"import unlearn_audit.plugin loaded {set(HEAVY) & set(loaded)}"


def test_importing_the_plugin_imports_no_view_module():
    code = "import unlearn_audit.plugin, sys; print(*[m for m in sys.modules if m.startswith('unlearn_audit.views.')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(out.stdout.split()) <= {"unlearn_audit.views._base"}, out.stdout


def test_the_registry_lists_every_view_without_importing_one():
    code = textwrap.dedent("""
        import sys
        from unlearn_audit.views import available_views, BUILTIN_VIEWS
        assert set(BUILTIN_VIEWS) <= set(available_views()), available_views()
        loaded = [m for m in sys.modules if m.startswith("unlearn_audit.views.") and m != "unlearn_audit.views._base"]
        assert not loaded, loaded
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_get_view_imports_the_view_module_on_first_use():
    from unlearn_audit.views import BUILTIN_VIEWS, get_view

    for name, spec in BUILTIN_VIEWS.items():
        view = get_view(name)
        assert view.name == name
        assert f"{type(view).__module__}:{type(view).__qualname__}" == spec


def test_a_pytest_run_without_audit_tests_imports_no_heavy_library(pytester: pytest.Pytester):
    # The plugin's hooks run in every pytest session too (pytest_configure included).
    pytester.makepyfile(test_plain=f"""
        import sys

        def test_nothing_heavy():
            heavy = set({HEAVY!r}) & {{m.partition(".")[0] for m in sys.modules}}
            assert not heavy, heavy
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_view_registered_twice_under_one_name_is_refused():
    from unlearn_audit.views import View, register_view

    class Tofu2(View):
        name = "tofu"

    with pytest.raises(ValueError, match="registered twice"):
        register_view(Tofu2)


# --- import cycles ---------------------------------------------------------------------------------
def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = list(f.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, module: str, is_pkg: bool, *, deferred: bool) -> list[str]:
    """Absolute names ``module`` imports at run time: never under ``if TYPE_CHECKING:``;
    inside functions only when ``deferred`` (module level means run when imported)."""
    package = module if is_pkg else module.rpartition(".")[0]
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit_stmt(sub)
                continue
            visit_stmt(child)

    def visit_stmt(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not deferred:
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from pkg import name` may import the submodule pkg.name
            found.extend([base] + [f"{base}.{a.name}" for a in node.names])
        visit(node)

    visit(tree)
    return found


def _graph(*, deferred: bool) -> dict[str, set[str]]:
    """module -> the package modules it imports. Importing ``a.b.c`` runs ``a/__init__``
    and ``a/b/__init__`` too, so those count, except a module's own enclosing packages
    (already imported before the module itself runs)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for target in _imports(tree, m, path.name == "__init__.py", deferred=deferred):
            while target:
                if target in mods and target != m and not m.startswith(target + "."):
                    graph[m].add(target)
                target = target.rpartition(".")[0]
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path, or None (depth-first search, colours)."""
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def dfs(v: str) -> list[str] | None:
        colour[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if colour[w] == 1:
                return stack[stack.index(w):] + [w]
            if colour[w] == 0 and (found := dfs(w)):
                return found
        stack.pop()
        colour[v] = 2
        return None

    for v in sorted(graph):
        if colour[v] == 0 and (found := dfs(v)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    # A check that could not fail would prove nothing: the finder must see a planted cycle.
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_real_imports():
    graph = _graph(deferred=False)
    assert "unlearn_audit.report._writer" in graph["unlearn_audit.report._session"]
    assert "unlearn_audit.views" in graph["unlearn_audit.report._reference"]  # via the package
    assert "unlearn_audit.context" not in graph["unlearn_audit.views._base"]  # TYPE_CHECKING only


def test_no_import_cycle_at_module_level():
    cycle = _cycle(_graph(deferred=False))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_even_counting_imports_inside_functions():
    cycle = _cycle(_graph(deferred=True))
    assert cycle is None, "import cycle (deferred imports included): " + " -> ".join(cycle or [])


# --- views reach models only through the backend contract -------------------------------------------
#: Model libraries no module under views/ may import, even inside a function (issue 13: views
#: ask a ``unlearn_audit.model.Backend``; the engine alone runs the model).
MODEL_LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")


def _model_library_imports(tree: ast.Module) -> list[str]:
    """Every model library ``tree`` names in an import, anywhere (function-local, under
    ``TYPE_CHECKING``, or as a string given to ``importlib.import_module``/``__import__``)."""
    named = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            named.append((node.module or "", node.lineno))
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("import_module", "__import__") and node.args:
                # A computed name is the registry importing a view module (views/_base.py).
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    named.append((arg.value, node.lineno))
    return [f"{mod} (line {line})" for mod, line in named if mod.partition(".")[0] in MODEL_LIBRARIES]


def test_no_view_module_imports_a_model_library():
    views = sorted((SRC / "views").rglob("*.py"))
    assert len(views) > 10  # the walk sees the views
    found = {str(f.relative_to(SRC)): hits for f in views
             if (hits := _model_library_imports(ast.parse(f.read_text(encoding="utf-8"))))}
    assert not found, f"views must ask the Backend, never import a model library: {found}"


def test_the_model_library_finder_sees_every_form():
    code = textwrap.dedent("""
        import numpy as np
        from unlearn_audit.model import Backend

        def f():
            import torch.nn.functional as F
            from transformers import AutoModel
            import importlib
            importlib.import_module("peft")
            __import__("bitsandbytes")
            importlib.import_module(name)

        if TYPE_CHECKING:
            import accelerate
    """)
    hits = _model_library_imports(ast.parse(code))
    assert sorted(h.split()[0] for h in hits) == ["accelerate", "bitsandbytes", "peft", "torch.nn.functional",
                                                 "transformers"]
