"""report.compare: two runs' tables compared, differences flagged only beyond their noise."""

from __future__ import annotations

import pandas as pd
import pytest

from ggufbench.report.compare import compare_quality, compare_speed


def ppl_frame(rows):
    return pd.DataFrame(rows, columns=["build", "model", "quant", "ctx", "kv", "ppl", "ppl_uncertainty"])


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
