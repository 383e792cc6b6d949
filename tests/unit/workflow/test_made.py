"""workflow.made: the tables, figures and page of a finished run, checked before the DAG is built. A table cut
short, of another kind or gone, a figure or page cut short: removed with what was made from it, so the run makes
them again (Snakemake alone said "Nothing to be done"). Real tables (the stored demo run's), a real PNG."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggufbench.core import paths
from ggufbench.report.tables import table_problem, write_table
from ggufbench.workflow.made import repair
from tests.support import DATA

STORED = DATA / "report/cpu-demo"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40 + b"IEND\xaeB`\x82"


def finished(root):
    """A finished run's light outputs: every table (the stored demo's, empty ones where it has none), figures,
    the page."""
    for name in (*paths.TABLES, "server"):
        src = STORED / f"{name}.parquet"
        df = pd.read_parquet(src) if src.exists() else pd.DataFrame()
        write_table(df, root / paths.table(name), name)
    (root / "reports/figures").mkdir(parents=True)
    for fig in ("kld_vs_size", "speed"):
        (root / f"reports/figures/{fig}.png").write_bytes(PNG)
    (root / "reports/summary.html").write_text("<!doctype html>\n<html><body>...</body></html>\n")


def test_a_whole_run_is_left_alone(tmp_path):
    finished(tmp_path)
    assert repair(tmp_path) == []
    assert (tmp_path / "reports/summary.html").exists()


@pytest.mark.faults
@pytest.mark.parametrize(("damage", "removed"), [
    # the cases: a table deleted, a table cut short (was a raw ArrowInvalid), another kind's table in its
    # place (was a KeyError), the page cut short ("Nothing to be done" for each)
    (lambda r: (r / "results/tables/kld.parquet").unlink(), {"figures", "page"}),
    (lambda r: (r / "results/tables/kld.parquet").write_bytes((r / "results/tables/kld.parquet").read_bytes()[:900]),
     {"kld", "figures", "page"}),
    (lambda r: shutil.copyfile(r / "results/tables/bench.parquet", r / "results/tables/kld.parquet"),
     {"kld", "figures", "page"}),
    (lambda r: (r / "results/tables/tune.parquet").unlink(), {"page"}),  # the figures are not made from it
    (lambda r: (r / "reports/summary.html").write_text("<!doctype html>\n<html><body><table>"), {"page"}),
    (lambda r: (r / "reports/figures/speed.png").write_bytes(PNG[:30]), {"speed"}),
])
def test_a_damaged_or_orphaned_output_is_removed_with_what_was_made_from_it(tmp_path, damage, removed):
    finished(tmp_path)
    damage(tmp_path)
    notes = repair(tmp_path)
    gone = {"kld": not (tmp_path / "results/tables/kld.parquet").exists(),
            "figures": not any((tmp_path / "reports/figures").glob("*.png")),
            "speed": not (tmp_path / "reports/figures/speed.png").exists(),
            "page": not (tmp_path / "reports/summary.html").exists()}
    assert {k for k, v in gone.items() if v} >= removed and all(n.endswith("this run makes it again") for n in notes)
    assert not gone["page"] or "page" in removed
    assert repair(tmp_path) == []  # what is left is whole


@pytest.mark.faults
def test_tables_made_from_a_record_that_is_gone_are_removed(tmp_path):
    """A result record deleted (or removed by the job that found it untrustworthy) under tables that are up to
    date: Snakemake said "Nothing to be done"; the tables made from it (their metadata names their records) go, so
    the run measures it again. A record the config asks for that was never made (a quant added) removes nothing:
    a dry run of a new plan must not destroy the last run's report."""
    finished(tmp_path)
    record = "results/kld/cpu/m/Q2_K_ctx512_kv-f16.json"
    (tmp_path / record).parent.mkdir(parents=True)
    (tmp_path / record).write_text("{}")
    kld = tmp_path / "results/tables/kld.parquet"
    write_table(pd.read_parquet(kld), kld, "kld", sources=[record])
    assert repair(tmp_path) == []
    (tmp_path / record).unlink()
    notes = repair(tmp_path)
    assert notes[0] == f"results/tables/kld.parquet was made from records missing now ({record}): removed it; this " \
                       "run makes it again"
    assert not (tmp_path / "reports/summary.html").exists()


@pytest.mark.faults
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_any_truncation_of_a_table_is_caught(tmp_path_factory, cut):
    """Every prefix of a real table is either the whole file or refused as not readable Parquet (its footer is at
    the end)."""
    root = tmp_path_factory.mktemp("cut")
    write_table(pd.read_parquet(STORED / "kld.parquet"), root / "kld.parquet", "kld")
    data = (root / "kld.parquet").read_bytes()
    (root / "kld.parquet").write_bytes(data[: min(cut, len(data))])
    why = table_problem(root / "kld.parquet")
    assert (why is None) == (cut >= len(data))
    assert why is None or why.startswith("is not a readable Parquet file")
