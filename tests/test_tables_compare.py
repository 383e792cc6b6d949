"""Derived columns of the PPL table and the two-build comparison, on values from real runs
(docs/measurements.md: the demo's Q4_K_M on the CPU build and on the H200 CUDA build)."""

from __future__ import annotations

import pandas as pd
import pytest

from ggufbench.compare import compare_quality, compare_speed
from ggufbench.tables import add_kv_deltas


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


def test_compare_quality_flags_only_beyond_noise():
    df = ppl_frame([
        ("cpu", "m", "Q4_K_M", 512, "f16", 12.9335, 0.63401),
        ("cuda", "m", "Q4_K_M", 512, "f16", 12.9443, 0.63566),
        ("cpu", "m", "Q2_K", 512, "f16", 16.9295, 0.81103),
        ("cuda", "m", "Q2_K", 512, "f16", 20.0, 0.8),  # a real regression would look like this
    ])
    out = compare_quality(df, "ppl", "ppl_uncertainty", ["model", "quant", "ctx", "kv"], "cpu", "cuda")
    flags = dict(zip(out["quant"], out["beyond noise"], strict=True))
    assert flags == {"Q4_K_M": False, "Q2_K": True}
    row = out.set_index("quant").loc["Q4_K_M"]
    assert row["diff"] == pytest.approx(0.0108)
    assert row["noise (±, combined)"] == pytest.approx((0.63401**2 + 0.63566**2) ** 0.5)


def test_compare_speed():
    cols = ["build", "model", "quant", "test", "n_threads", "median_ts", "min_ts", "max_ts"]
    bench = pd.DataFrame([
        ("a", "m", "Q8_0", "tg128", 2, 187.722, 183.673, 188.912),
        ("b", "m", "Q8_0", "tg128", 2, 190.0, 185.0, 191.0),     # +1.2%: inside a 2.8% range
        ("a", "m", "Q8_0", "pp512", 2, 1006.25, 1004.09, 1008.42),
        ("b", "m", "Q8_0", "pp512", 2, 1100.0, 1098.0, 1102.0),  # +9.3%: beyond a 0.4% range
    ], columns=cols)
    out = compare_speed(bench, "a", "b").set_index("test")
    assert out.loc["tg128", "beyond noise"] == False  # noqa: E712
    assert out.loc["pp512", "beyond noise"] == True  # noqa: E712
    assert out.loc["pp512", "speedup"] == pytest.approx(1100 / 1006.25)
