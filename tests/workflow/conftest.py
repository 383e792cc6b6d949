"""The demo run, made once per test session and shared by the workflow tests that ride on it (test_demo.py, and
the small studies and fault cases that take its quants and build instead of making their own)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.workflow import REPO, snakemake


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The demo run once for the session. GGUFBENCH_DEMO_WORKDIR names a working directory to run it in instead
    (a developer's finished demo: the run there is then only what changed; some tests change that folder)."""
    reuse = os.environ.get("GGUFBENCH_DEMO_WORKDIR")
    workdir = Path(reuse) if reuse else tmp_path_factory.mktemp("demo")
    proc = snakemake(workdir, "--cores", "2", "reports/summary.html", configfile=REPO / "config/demo.yaml")
    return workdir, proc
