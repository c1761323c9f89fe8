"""The import graph of tfos_lib keeps DESIGN.md's layers: arrows point one way and never form a cycle.

Every import counts, including those inside functions (they run on executors all the same):
the graph is read from the source with ``ast``, nothing is imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "tfos_lib"

# The launcher and what it runs on: small, closed, imports no dataset and no domain library.
CORE = {
    "tfos_lib.errors", "tfos_lib.launcher", "tfos_lib.process", "tfos_lib.context", "tfos_lib.feed",
    "tfos_lib.monitor", "tfos_lib.rendezvous", "tfos_lib.callbacks", "tfos_lib.tfenv", "tfos_lib.parallel",
}
CORE_PACKAGES = ("tfos_lib.backends",)
DOMAIN_PACKAGES = ("tfos_lib.gp", "tfos_lib.rl", "tfos_lib.recsys", "tfos_lib.lm")
DATASETS = "tfos_lib.datasets"


def _module_name(path: Path) -> str:
    parts = path.relative_to(LIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _is_core(module: str) -> bool:
    return module in CORE or _in(module, *CORE_PACKAGES)


def import_graph() -> dict[str, set[str]]:
    """module -> the tfos_lib modules (and ``jobs``) it imports, anywhere in its source."""
    modules = {_module_name(p): p for p in LIB.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    # `from pkg import submodule` imports the submodule; `from mod import name` the module
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {t for t in targets if t in modules or t == "jobs" or t.startswith("jobs.")} - {name}
    return graph


GRAPH = import_graph()


def _arrows(source, target):
    return sorted(f"{a} -> {b}" for a, deps in GRAPH.items() if source(a) for b in deps if target(b))


def test_graph_is_read():
    assert "tfos_lib.launcher" in GRAPH and len(GRAPH) > 20


def test_library_never_imports_jobs():
    assert _arrows(lambda a: True, lambda b: b == "jobs" or b.startswith("jobs.")) == []


def test_core_imports_no_dataset_domain_or_service():
    services = ("tfos_lib.ml", "tfos_lib.export")
    forbidden = (DATASETS, *DOMAIN_PACKAGES, *services)
    assert _arrows(_is_core, lambda b: _in(b, *forbidden) or b in ("tfos_lib.job", "tfos_lib.report")) == []


def test_errors_imports_nothing_from_tfos_lib():
    """Everyone imports the errors; so they import nobody (this is what keeps backends and launcher acyclic)."""
    assert GRAPH["tfos_lib.errors"] == set()


def test_no_backend_imports_the_launcher():
    assert _arrows(lambda a: _in(a, "tfos_lib.backends"), lambda b: b == "tfos_lib.launcher") == []


def test_importing_tfos_lib_leaves_the_process_runner_unimported():
    # Child processes run `python -m tfos_lib.process`; importing it earlier would run it twice.
    code = "import sys, tfos_lib; print('tfos_lib.process' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_datasets_import_no_launcher_job_or_domain():
    forbidden = lambda b: _is_core(b) and b not in ("tfos_lib.errors", "tfos_lib.feed") or b == "tfos_lib.job"  # noqa: E731
    assert _arrows(lambda a: _in(a, DATASETS), lambda b: forbidden(b) or _in(b, *DOMAIN_PACKAGES)) == []


def test_internal_modules_do_not_import_the_public_facade():
    """``tfos_lib/__init__`` re-exports the core; a module importing it back closes a cycle through it."""
    assert _arrows(lambda a: a != "tfos_lib", lambda b: b == "tfos_lib") == []


def test_no_import_cycle():
    state: dict[str, int] = {}
    cycles = []

    def visit(module, stack):
        state[module] = 1
        for dep in sorted(GRAPH.get(module, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep in GRAPH and state.get(dep) is None:
                visit(dep, [*stack, dep])
        state[module] = 2

    for module in sorted(GRAPH):
        if state.get(module) is None:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize(
    "module, extra, check",
    [
        ("tfos_lib.launcher", "tfos_lib.datasets.idx", test_core_imports_no_dataset_domain_or_service),
        ("tfos_lib.feed", "tfos_lib.report", test_core_imports_no_dataset_domain_or_service),
        ("tfos_lib.datasets.idx", "tfos_lib.launcher", test_datasets_import_no_launcher_job_or_domain),
        ("tfos_lib.backends.tfos", "tfos_lib.launcher", test_no_backend_imports_the_launcher),
        ("tfos_lib.errors", "tfos_lib.feed", test_errors_imports_nothing_from_tfos_lib),
        ("tfos_lib.tfenv", "tfos_lib.context", test_no_import_cycle),  # context imports tfenv
        ("tfos_lib.rl.dqn", "jobs.pacman_dqn", test_library_never_imports_jobs),
    ],
)
def test_each_rule_catches_a_forbidden_arrow(module, extra, check, monkeypatch):
    """The rules above are only worth something if a forbidden arrow added to today's graph is caught."""
    monkeypatch.setitem(GRAPH, module, GRAPH[module] | {extra})
    with pytest.raises(AssertionError):
        check()
