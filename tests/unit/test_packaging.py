"""Installs are reproducible: constraints.txt pins every dependency within pyproject.toml's ranges, and the
project's own setup installs from it (issue 11)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = Version(version.strip())
    return found


def requirements() -> list[Requirement]:
    declared = PROJECT["project"]["dependencies"] + PROJECT["project"]["optional-dependencies"]["dev"]
    return [Requirement(text) for text in declared]


def test_every_dependency_is_pinned_within_its_range():
    pinned = pins()
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not in constraints.txt (run ./scripts/lock)"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {requirement}"


def test_each_range_spans_one_major_version():
    for requirement in requirements():
        lower = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        upper = [Version(s.version) for s in requirement.specifier if s.operator == "<"]
        assert lower and upper, f"{requirement} needs a lower and an upper bound"
        major = lower[0].major
        assert upper[0] <= Version(f"{major + 1}"), f"{requirement} spans more than major {major}"


def test_the_project_setup_installs_from_the_constraints():
    assert "-c constraints.txt" in (ROOT / "scripts" / "_venv.sh").read_text()


def test_the_build_backend_takes_the_pep_639_license_string():
    assert PROJECT["project"]["license"] == "MIT"
    assert "setuptools>=77" in PROJECT["build-system"]["requires"]
