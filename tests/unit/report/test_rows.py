"""report.rows: the rows the page, the figures and the recommendations select (stored CPU and H200 tables), and the
import that keeps matplotlib out of the DAG (issue 30)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from ggufbench.report import rows as ROWS
from tests.support.report_pages import REPO, stored_tables


def test_recommend_imports_no_matplotlib():
    """rules/common.smk imports report.recommend while Snakemake builds the DAG: that must not load matplotlib."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import ggufbench.report.recommend; "
            "import ggufbench.report.rows; print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "src")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pareto_front_on_the_measured_ladder():
    k = ROWS.scoreboard_kld(stored_tables("cpu-demo")["kld"])
    front = ROWS.pareto_front(k["file_size_bytes"], k["kld_mean"])
    # on this ladder every quant is on the frontier: each bigger file has a lower mean KLD
    assert front.all() and len(k) == 5
    # a point beaten on both axes drops off
    assert list(ROWS.pareto_front([1, 2, 3], [0.5, 0.6, 0.1])) == [True, False, True]
    assert list(ROWS.pareto_front([], [])) == []


def test_offload_strategy_from_llama_bench_fields():
    cpu = ROWS.with_strategy(stored_tables("cpu-demo")["bench"])
    assert set(cpu["strategy_label"]) == {"CPU only"}
    gpu = ROWS.with_strategy(stored_tables("h200-demo")["bench"])
    assert set(gpu["strategy_label"]) == {"-ngl 99"}
    row = gpu.iloc[0].to_dict() | {"n_cpu_moe": 20}
    assert ROWS.offload_strategy(row) == ("n-cpu-moe", "-ngl 99 -ncmoe 20")
    assert list(ROWS.with_strategy(pd.DataFrame()).columns) == ["strategy", "strategy_label"]


def test_scoreboard_kld_keeps_the_baseline_kv_type():
    kld = stored_tables("cpu-demo")["kld"]
    k = ROWS.scoreboard_kld(kld)
    assert set(k["kv"]) == {"f16"} and "F16" not in set(k["quant"])  # the baseline is not measured against itself
    # a KLD study whose only non-baseline cells are KV types: no scoreboard rows, and no error
    kv_only = kld[kld["quant"] == "F16"]
    assert not kv_only.empty and ROWS.scoreboard_kld(kv_only).empty
    assert ROWS.scoreboard_kld(pd.DataFrame()).empty and ROWS.scoreboard_kld(kld.iloc[0:0]).empty


def test_measured_rows_leave_out_what_did_not_fit():
    bench = stored_tables("cpu-demo")["bench"]
    assert len(ROWS.measured_rows(bench)) == len(bench)
    nofit = bench.assign(status=["does not fit", None] + ["measured"] * (len(bench) - 2))
    assert len(ROWS.measured_rows(nofit)) == len(bench) - 1
    old = stored_tables("h200-demo")["bench"]  # tables made before status was recorded: every row measured
    assert "status" not in old and ROWS.measured_rows(old).equals(old)


def test_present():
    kld = stored_tables("cpu-demo")["kld"]
    assert ROWS.present(kld, "kv", "build")
    assert not ROWS.present(kld, "nonsense")
    assert not ROWS.present(kld.iloc[0:0], "kv") and not ROWS.present(pd.DataFrame()) and not ROWS.present(None)
