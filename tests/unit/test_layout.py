"""Rules of the source tree that keep its parts separable."""

from __future__ import annotations

import re
import subprocess
import sys

from scripts.cli import REPO_ROOT


def python_files(*packages: str):
    for package in packages:
        yield from (REPO_ROOT / package).rglob("*.py")


def importers(packages: tuple[str, ...], imported: str) -> list[str]:
    """Files of ``packages`` with a top-level or nested import of the package ``imported``."""
    return [str(path.relative_to(REPO_ROOT)) for path in python_files(*packages)
            if re.search(rf"^\s*(from|import) {imported}\b", path.read_text(), re.M)]


DEPLOYABLE = ("moderation", "edge", "jobs", "desktop")
"""The shared core and the parts deployed from it."""


def test_no_tool_or_deployable_imports_the_tests():
    assert importers((*DEPLOYABLE, "scripts", "loadtest"), "tests") == []


def test_the_edge_and_the_workers_depend_on_no_tool():
    assert importers(DEPLOYABLE, "scripts") == [] and importers(DEPLOYABLE, "loadtest") == []


def test_the_shared_core_imports_no_deployable_part():
    assert importers(("moderation",), "edge") == []
    assert importers(("moderation",), "jobs") == []
    assert importers(("moderation",), "desktop") == []


def test_the_desktop_client_speaks_only_the_shared_protocol():
    # It is installed on users' machines: the edge's server code and the workers are not its.
    assert importers(("desktop",), "edge") == [] and importers(("desktop",), "jobs") == []
    assert importers(("edge", "jobs"), "desktop") == []


def test_the_batch_workers_never_import_the_edge():
    # The edge may import the jobs API it serves; the other way round would tie the parts in a circle.
    assert importers(("jobs",), "edge") == []


def test_the_edge_process_loads_neither_the_job_runner_nor_pyav():
    # What `python -m edge` imports and builds before it serves, with the job API on.
    probe = """
import sys
import edge.__main__
from edge.app import create_app
from edge.settings import EdgeSettings
create_app(EdgeSettings(jobs=True, redis_url="redis://127.0.0.1:1/0"))
print(" ".join(sorted(sys.modules)))
"""
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          check=True)
    loaded = set(done.stdout.split())
    assert "edge.app" in loaded and "jobs.service" in loaded  # the probe did build the app with jobs on
    assert loaded.isdisjoint({"av", "jobs.handler", "jobs.pipeline", "jobs.decode", "jobs.worker"})
