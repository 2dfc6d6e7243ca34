"""What the server's distribution installs: every package of the tree, under two import
names, and a declared requirement for every distribution its code imports."""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PROJECT["tool"]["setuptools"]
# Where each installed package's files are: the package-dir mapping, else its own path.
MAPPED = SETUPTOOLS.get("package-dir", {})


def folder(package: str) -> Path:
    for name, path in MAPPED.items():
        if package == name or package.startswith(f"{name}."):
            return ROOT / path / package.removeprefix(name).lstrip(".").replace(".", "/")
    return ROOT / package.replace(".", "/")


def tree_packages() -> set[str]:
    """Every folder of Python code under the installed packages' roots, by import name."""
    roots = {"conveyor": ROOT / "conveyor", "services": ROOT / "services", **MAPPED}
    found = set()
    for name, path in roots.items():
        base = ROOT / path if isinstance(path, str) else path
        for sub in [base, *(p for p in base.rglob("*") if p.is_dir())]:
            if "__pycache__" in sub.parts or not any(sub.iterdir()):
                continue
            relative = sub.relative_to(base).parts
            found.add(".".join((name, *relative)))
    return found


def imported_modules() -> Iterator[str]:
    """The top-level names the installed code imports."""
    for package in SETUPTOOLS["packages"]:
        for path in folder(package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    yield from (alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    yield node.module.split(".")[0]


def declared() -> set[str]:
    """The distributions the project requires, its extras' included, normalized."""
    requirements = list(PROJECT["project"]["dependencies"])
    for extra in PROJECT["project"]["optional-dependencies"].values():
        requirements += extra
    return {normalize(Requirement(r).name) for r in requirements}


def normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_every_folder_of_code_is_a_package_the_wheel_installs() -> None:
    packages = SETUPTOOLS["packages"]
    assert tree_packages() == set(packages) and len(set(packages)) == len(packages)


def test_the_wheel_installs_two_import_names() -> None:
    assert {p.split(".")[0] for p in SETUPTOOLS["packages"]} == {"conveyor", "services"}


def test_every_distribution_the_code_imports_is_declared() -> None:
    own = {"conveyor", "services"}
    providers = packages_distributions()
    modules = set(imported_modules()) - own - set(sys.stdlib_module_names)
    # A namespace (opentelemetry) is made by several distributions: one declared will do.
    undeclared = {
        module
        for module in modules
        if not {normalize(d) for d in providers.get(module, [module])} & declared()
    }
    assert undeclared == set()


def test_the_migrations_ship_inside_the_package() -> None:
    assert MAPPED == {"services.migrations": "migrations"}
    assert (ROOT / "migrations" / "versions").is_dir()
    assert "script.py.mako" in SETUPTOOLS["package-data"]["services.migrations"]
