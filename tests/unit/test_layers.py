"""The layers run one way, from the edges to the domain, and the domain stays pure (docs/contracts.md §2).

    domain   <-  runtime  <-  store, clients  <-  app (web), workers (jobs, CLI)

Every `import` counts, including one inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What each package may import from this project (itself included).
ALLOWED = {
    "domain": {"domain"},
    "runtime": {"domain", "runtime"},
    "store": {"domain", "runtime", "store"},
    "clients": {"domain", "runtime", "clients"},
    "app": {"domain", "runtime", "store", "clients", "app"},
    "workers": {"domain", "runtime", "store", "clients", "workers"},
}
PROJECT = set(ALLOWED) | {"scripts", "tests", "migrations"}
# The domain's only third-party import: marshmallow validates data and does no I/O.
DOMAIN_THIRD_PARTY = {"marshmallow"}
# Named so that a failure says what was reached for.
IO_LIBRARIES = {"flask", "werkzeug", "redis", "rq", "sqlalchemy", "alembic", "psycopg", "requests", "prometheus_client"}


def imported_modules(source: str) -> set[str]:
    """Every absolute module an import statement anywhere in `source` names (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module in PROJECT:  # `from workers import jobs` names the module workers.jobs
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def violations(package: str, source: str) -> set[str]:
    """The imports of a module of `package` that break the layering."""
    broken = set()
    for name in imported_modules(source):
        root = name.split(".")[0]
        if root in PROJECT and root not in ALLOWED[package]:
            broken.add(name)
        elif package == "domain" and root not in PROJECT | DOMAIN_THIRD_PARTY | sys.stdlib_module_names:
            broken.add(name)
    return broken


def modules_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_checker_sees_lazy_and_from_package_imports():
    source = "from store.db import Database\ndef f():\n    from workers import jobs\n    import flask\n"
    assert violations("store", source) == {"workers", "workers.jobs"}
    assert violations("domain", source) == {"store.db", "workers", "workers.jobs", "flask"}
    assert violations("workers", "from app import create_app") == {"app", "app.create_app"}
    assert (
        violations("domain", "import json, re\nfrom marshmallow import Schema\nfrom domain.times import as_utc")
        == set()
    )


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_every_package_imports_only_the_layers_below_it(package):
    modules = modules_of(package)
    assert modules, f"{package}/ has no modules"
    broken = {f"{path.relative_to(ROOT)}: {name}" for path in modules for name in violations(package, path.read_text())}
    assert broken == set()


def test_the_domain_imports_no_io_library():
    reached = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in modules_of("domain")
        for name in imported_modules(path.read_text())
        if name.split(".")[0] in IO_LIBRARIES
    }
    assert reached == set()


def test_the_web_and_the_workers_are_independent():
    """Neither process imports the other: each is an edge on the shared layers (and `replay-event` is in workers)."""
    app_reaches = {n for p in modules_of("app") for n in imported_modules(p.read_text()) if n.startswith("workers")}
    workers_reach = {n for p in modules_of("workers") for n in imported_modules(p.read_text()) if n.startswith("app")}
    assert (app_reaches, workers_reach) == (set(), set())


def imported_test_modules(source: str) -> set[str]:
    """Every test module (`test_*`) or conftest (absolute, relative or top-level) an import anywhere in `source` names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            prefix = module if node.module is None else f"{module}."
            names.update([module, *(prefix + alias.name for alias in node.names)])
    found = set()
    for name in names:
        parts = name.split(".")  # a relative name's leading dots are empty parts
        hit = next((i for i, part in enumerate(parts) if part.startswith("test_") or part == "conftest"), None)
        # Under tests/ (absolute or relative), or top-level: one pytest imported from its own directory.
        if hit is not None and (parts[0] in ("tests", "") or hit == 0):
            found.add(".".join(parts[: hit + 1]))  # the module; what is imported from it is not another one
    return found


def test_the_test_checker_sees_from_package_relative_and_lazy_imports():
    source = (
        "from tests.unit.test_queue import stored\nfrom . import test_policy\ndef f():\n    import tests.e2e.test_x\n"
    )
    assert imported_test_modules(source) == {"tests.unit.test_queue", ".test_policy", "tests.e2e.test_x"}
    assert imported_test_modules("from tests.unit.test_queue import test_stored") == {"tests.unit.test_queue"}
    conftests = (
        "from tests.e2e.conftest import Stack\nfrom ..integration.conftest import _truncate\n"
        "from tests import conftest\ndef f():\n    from .conftest import wait_until\n"
    )
    assert imported_test_modules(conftests) == {
        "tests.e2e.conftest",
        "..integration.conftest",
        "tests.conftest",
        ".conftest",
    }
    assert imported_test_modules("from tests.helpers.events import inquiry_event\nfrom tests import payloads") == set()
    assert imported_test_modules("import conftest\nfrom test_console import Console") == {"conftest", "test_console"}
    assert imported_test_modules("from tests.helpers import conftest_like\nimport testing, contest") == set()


def test_no_test_module_imports_another():
    """Nothing under tests/ or scripts/ imports a test module or a conftest, pytest's to import: helpers that tests
    and scripts share live in tests/helpers/, fixtures in a conftest.py (shared ones in tests/conftest.py)."""
    imports = {
        f"{path.relative_to(ROOT)}: {name}"
        for package in ("tests", "scripts")
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in imported_test_modules(path.read_text())
    }
    assert imports == set()
