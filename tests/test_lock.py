"""The locks say what pyproject.toml asks for, and the environment the tests run in is the lock.

``requirements.lock`` (what ``make run`` installs) and ``requirements-dev.lock`` (what ``make test``
installs) are written by ``make lock`` from pyproject.toml. These tests fail when the two disagree:
a dependency added, removed or re-ranged in pyproject.toml without ``make lock``, a lock edited by
hand, or a runtime package pinned differently in the two locks.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
BUILD = [Requirement(r) for r in PYPROJECT["dependency-groups"]["build"]]
DEV = [Requirement(r) for r in PROJECT["optional-dependencies"]["dev"]]

DIRECT_VIA = {"tradestream (pyproject.toml)", "tradestream (pyproject.toml:build)"}
"""How uv marks a package that pyproject.toml asks for by name (a dependency or the build group)."""


@dataclass(frozen=True)
class Pin:
    name: NormalizedName
    version: Version
    marker: Marker | None
    hashes: tuple[str, ...]
    via: frozenset[str]


def read_lock(filename: str) -> list[Pin]:
    """Parses a lock as uv writes it: ``name==version [; marker] \\``, its ``--hash`` lines, then
    ``# via`` comments (one name on the line, or one per following ``#   `` line)."""
    pins: list[Pin] = []
    entry: list[str] = []
    for line in [*(ROOT / filename).read_text().splitlines(), ""]:
        if entry and (not line or not line[0].isspace()):
            pins.append(_pin(entry))
            entry = []
        if line and not line.startswith("#") and not line[0].isspace():
            entry = [line]
        elif entry:
            entry.append(line)
    return pins


def _pin(lines: list[str]) -> Pin:
    requirement = lines[0].rstrip(" \\")
    spec, _, marker = requirement.partition(" ; ")
    name, sep, version = spec.partition("==")
    assert sep, f"not pinned with ==: {requirement!r}"
    hashes, via = [], []
    for line in (line.strip() for line in lines[1:]):
        if line.startswith("--hash="):
            hashes.append(line.removeprefix("--hash=").rstrip(" \\"))
        elif line.startswith("# via") or line.startswith("#   "):
            name_of = line.removeprefix("# via").removeprefix("#   ").strip()
            if name_of:
                via.append(name_of)
        else:
            pytest.fail(f"unexpected line in the entry for {name}: {line!r}")
    return Pin(
        canonicalize_name(name),
        Version(version),
        Marker(marker) if marker else None,
        tuple(hashes),
        frozenset(via),
    )


LOCKS = {"requirements.lock": RUNTIME + BUILD, "requirements-dev.lock": RUNTIME + BUILD + DEV}


@pytest.mark.parametrize("filename", sorted(LOCKS))
def test_every_direct_dependency_is_pinned_within_its_range(filename: str) -> None:
    pins = read_lock(filename)
    for requirement in LOCKS[filename]:
        versions = [p.version for p in pins if p.name == canonicalize_name(requirement.name)]
        assert versions, f"{requirement} is in pyproject.toml but not in {filename}: run make lock"
        for version in versions:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{filename} pins {requirement.name} {version}, outside {requirement}"
            )


@pytest.mark.parametrize("filename", sorted(LOCKS))
def test_the_lock_asks_for_nothing_that_pyproject_does_not(filename: str) -> None:
    direct = {p.name for p in read_lock(filename) if p.via & DIRECT_VIA}
    assert direct == {canonicalize_name(r.name) for r in LOCKS[filename]}, "run make lock"


@pytest.mark.parametrize("filename", sorted(LOCKS))
def test_every_pin_is_one_version_with_its_hashes(filename: str) -> None:
    pins = read_lock(filename)
    assert len(pins) > len(LOCKS[filename])
    for pin in pins:
        assert pin.hashes, f"{pin.name} has no hash"
        assert all(h.startswith("sha256:") and len(h) == len("sha256:") + 64 for h in pin.hashes)
        assert pin.via, f"{pin.name}: nothing asks for it"
    names = [(p.name, str(p.marker)) for p in pins]
    assert len(names) == len(set(names)), "a package pinned twice under the same marker"


def test_the_dev_lock_runs_the_runtime_lock_unchanged() -> None:
    dev = {(p.name, str(p.marker)): p for p in read_lock("requirements-dev.lock")}
    for pin in read_lock("requirements.lock"):
        assert (pin.name, str(pin.marker)) in dev, f"{pin.name} is missing from the dev lock"
        twin = dev[pin.name, str(pin.marker)]
        assert (twin.version, twin.hashes) == (pin.version, pin.hashes), pin.name


def test_the_build_group_covers_the_build_system() -> None:
    """The project is installed with --no-build-isolation from the lock's setuptools: what the
    build system requires must be in the locked build group."""
    group = {canonicalize_name(r.name): r for r in BUILD}
    for requirement in map(Requirement, PYPROJECT["build-system"]["requires"]):
        assert canonicalize_name(requirement.name) in group
        assert str(group[canonicalize_name(requirement.name)].specifier) == str(
            requirement.specifier
        )


def test_this_environment_is_the_dev_lock() -> None:
    """What the tests run on is what the lock pins: the versions installed here are the locked
    ones, for every package whose marker applies to this interpreter and platform."""
    for pin in read_lock("requirements-dev.lock"):
        if pin.marker is not None and not pin.marker.evaluate():
            continue
        try:
            installed = Version(metadata.version(pin.name))
        except metadata.PackageNotFoundError:
            pytest.fail(f"{pin.name} {pin.version} is locked but not installed: make test")
        assert installed == pin.version, f"{pin.name}: {installed} installed, {pin.version} locked"
