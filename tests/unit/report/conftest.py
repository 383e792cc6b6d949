"""Fixtures of the report tests: pages built from the stored tables of tests/data/report/."""

import pytest

from tests.support.report_pages import build_report, config_for


@pytest.fixture(scope="module")
def cpu_page(tmp_path_factory):
    """The CPU demo's page as if no VRAM budget were configured (the tables were made before the demo had any)."""
    out = tmp_path_factory.mktemp("cpu")
    return build_report("cpu-demo", out, config_for("cpu-demo", vram_budgets_gib=[])).read_text(encoding="utf-8"), out
