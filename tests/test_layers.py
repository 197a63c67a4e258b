"""The layers of the code point one way (docs/architecture.md, "Layers").

Each module of ``api/`` belongs to one layer, and imports only from its own layer's package and
from the layers below it; ``domain/`` imports nothing of ``api/``. Siblings (two feeds, a feed and
the transports) do not import each other. No module imports a project module inside a function:
an import there would hide a cycle. Imports under ``TYPE_CHECKING`` follow the same rules, with
one exception: :class:`api.runtime.services.Services`, the container every resolver and worker
receives, may be named in annotations anywhere.

The tests keep one rule of their own: no module under ``tests/`` imports a test module
(``test_*``); what several tests share lives in a support module (``tests/support.py``,
``tests/e2e/support.py``, ``tests/domain/fakes.py``, ``tests/domain/factories.py``) or a
``conftest.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYERS: list[list[str]] = [
    ["api.settings"],
    ["api.ops.logs", "api.ops.metrics"],
    ["api.auth"],
    ["api.venues"],
    ["api.storage"],
    ["api.streaming"],
    ["api.graphql"],
    ["api.sources"],
    ["api.feeds.prices"],
    [
        "api.feeds.marathons",
        "api.feeds.martingale",
        "api.feeds.orderbook",
        "api.feeds.paper_exchange",
        "api.feeds.perps",
        "api.feeds.portfolio",
        "api.transport",
    ],
    ["api.schema", "api.runtime", "api.ops.health", "api.ops.exposition"],
    ["api.app"],
    ["api.cli"],
]
"""Lowest first. A module imports from its own unit (the package or module named here) and from
units of lower layers; units of one layer are siblings."""

TYPE_ONLY_ANYWHERE = frozenset({"api.runtime.services"})


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted([*ROOT.glob("api/**/*.py"), *ROOT.glob("domain/**/*.py")]):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


MODULES = _modules()


def _unit(module: str) -> tuple[str, int] | None:
    for rank, units in enumerate(LAYERS):
        for unit in units:
            if module == unit or module.startswith(unit + "."):
                return unit, rank
    return None


def _resolve(name: str) -> str | None:
    """The project module an imported name lives in (``api.hub.Hub`` -> ``api.hub``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> list[tuple[str, int, bool, bool]]:
    """(imported module, line, inside a function, under TYPE_CHECKING) for every project import."""
    found: list[tuple[str, int, bool, bool]] = []

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, in_function, True)
                continue
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names = [f"{child.module}.{alias.name}" for alias in child.names]
            if isinstance(child, ast.Import | ast.ImportFrom):
                for name in names:
                    module = _resolve(name)
                    if module is not None:
                        found.append((module, child.lineno, in_function, type_only))
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, True, type_only)
            elif not names:
                visit(child, in_function, type_only)

    visit(ast.parse(path.read_text()), False, False)
    return found


def _violations(module: str) -> list[str]:
    path = MODULES[module]
    own = _unit(module)
    problems = []
    for target, line, in_function, type_only in _imports(path):
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        where = f"{shown}:{line} imports {target}"
        if target == module:
            continue
        if in_function:
            problems.append(f"{where} inside a function")
        if module.startswith("domain"):
            if target.startswith("api"):
                problems.append(f"{where}: the domain knows nothing of api/")
            continue
        theirs = _unit(target)
        if own is None or theirs is None or own[0] == theirs[0]:
            continue
        if type_only and target in TYPE_ONLY_ANYWHERE:
            continue
        if theirs[1] > own[1]:
            problems.append(f"{where}: {own[0]} is below {theirs[0]}")
        elif theirs[1] == own[1]:
            problems.append(f"{where}: {own[0]} and {theirs[0]} are siblings")
    return problems


def test_every_api_module_has_a_layer() -> None:
    packages = {m for m, path in MODULES.items() if path.name == "__init__.py"}
    assert [m for m in MODULES if m.startswith("api.") and m not in packages and not _unit(m)] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layers(module: str) -> None:
    assert _violations(module) == []


def test_no_import_cycle() -> None:
    """No cycle between project modules, ``TYPE_CHECKING`` imports included."""
    graph = {
        module: {target for target, *_ in _imports(path) if target != module}
        for module, path in MODULES.items()
    }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                walk(target, [*stack, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert cycles == []


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    """The checker itself: an upward, a sibling and a hidden import are each reported."""
    MODULES["api.storage._probe"] = probe = tmp_path / "probe.py"
    try:
        probe.write_text(
            "from api.streaming.hub import Hub\ndef f():\n    import api.storage.history\n"
        )
        upward, hidden = _violations("api.storage._probe")
        assert "api.storage is below api.streaming" in upward
        assert "inside a function" in hidden
        MODULES["api.transport._probe"] = probe
        probe.write_text("from api.feeds.perps.schema import PositionsUpdate\n")
        assert _violations("api.transport._probe") == [
            f"{probe}:1 imports api.feeds.perps.schema: api.transport and api.feeds.perps are "
            "siblings"
        ]
    finally:
        MODULES.pop("api.storage._probe", None)
        MODULES.pop("api.transport._probe", None)


def _test_module_imports(source: str) -> list[str]:
    """``line: module`` for every import of a ``test_*`` module (or of a name ``test_*`` from one),
    at any depth of the module."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names = [
                module
                if module.rpartition(".")[2].startswith("test_")
                else f"{module}.{alias.name}"
                for alias in node.names
            ]
        else:
            continue
        found += [
            f"{node.lineno}: {name}"
            for name in dict.fromkeys(names)
            if name.rpartition(".")[2].startswith("test_")
        ]
    return found


def test_no_test_module_imports_another() -> None:
    """A test module imported by another runs its module-level code twice under two names and
    hides what it shares among its tests; shared helpers live in support modules."""
    found = {
        str(path.relative_to(ROOT)): imports
        for path in sorted(ROOT.glob("tests/**/*.py"))
        if (imports := _test_module_imports(path.read_text()))
    }
    assert len(list(ROOT.glob("tests/**/test_*.py"))) > 50, "the walk found too few test modules"
    assert found == {}


def test_the_test_import_rule_catches_each_form() -> None:
    assert _test_module_imports(
        "from tests.e2e.test_perps import call\n"
        "import tests.domain.test_perps_engine\n"
        "from tests.e2e import test_marathons\n"
        "from .test_exchange import PLACE\n"
        "def f():\n    from tests.api.test_hub import x\n"
        "from tests.e2e.support import call\n"
    ) == [
        "1: tests.e2e.test_perps",
        "2: tests.domain.test_perps_engine",
        "3: tests.e2e.test_marathons",
        "4: .test_exchange",
        "6: tests.api.test_hub",
    ]
