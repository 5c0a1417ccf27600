"""Rules of the source tree that keep its parts separable."""

from __future__ import annotations

import re

from scripts.cli import REPO_ROOT


def python_files(*packages: str):
    for package in packages:
        yield from (REPO_ROOT / package).rglob("*.py")


def test_no_tool_or_deployable_imports_the_tests():
    offenders = [str(path.relative_to(REPO_ROOT)) for path in python_files("edge", "jobs", "scripts", "loadtest")
                 if re.search(r"^\s*(from|import) tests\b", path.read_text(), re.M)]
    assert offenders == []


def test_the_edge_and_the_workers_depend_on_no_tool():
    offenders = [str(path.relative_to(REPO_ROOT)) for path in python_files("edge", "jobs")
                 if re.search(r"^\s*(from|import) (scripts|loadtest)\b", path.read_text(), re.M)]
    assert offenders == []
