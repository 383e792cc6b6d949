"""report.tables: KV deltas against the f16 cell of the same quant and context."""

from __future__ import annotations

import pandas as pd
import pytest

from ggufbench.report.tables import add_kv_deltas


def ppl_frame(rows):
    return pd.DataFrame(rows, columns=["build", "model", "quant", "ctx", "kv", "ppl", "ppl_uncertainty"])


def test_kv_deltas():
    df = add_kv_deltas(ppl_frame([
        ("cpu", "m", "Q4_K_M", 512, "f16", 12.9335, 0.63401),
        ("cpu", "m", "Q4_K_M", 512, "q8_0", 12.9406, 0.63523),
        ("cpu", "m", "Q4_K_M", 1024, "f16", 12.0, 0.6),
        ("cpu", "m", "Q4_K_M", 1024, "q8_0", 12.1, 0.6),
    ])).set_index(["ctx", "kv"])
    assert df.loc[(512, "q8_0"), "dppl_vs_f16_kv"] == pytest.approx(0.0071)
    assert df.loc[(512, "f16"), "dppl_vs_f16_kv"] == 0
    assert df.loc[(1024, "q8_0"), "kv_cost_long_minus_short"] == pytest.approx(0.1 - 0.0071)
    assert df.loc[(512, "q8_0"), "kv_cost_long_minus_short"] == 0


def test_kv_delta_without_f16_cell_is_nan():
    df = add_kv_deltas(ppl_frame([("cpu", "m", "Q2_K", 512, "q8_0", 16.9296, 0.81159)]))
    assert df["dppl_vs_f16_kv"].isna().all()
