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
    out = compare_quality(df, "ppl", "ppl_uncertainty", ["model", "quant", "ctx", "kv"], base="cpu", other="cuda")
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


def test_kld_cells_of_two_builds_are_judged_by_the_paired_test_on_their_chunks(capture):
    """Per-chunk KLD recovered from real captures (tests/data/cpu-0.3.36): two builds that scored the same
    (bit-identical, as two builds of one source did) are not beyond noise; a build whose chunks are those of a
    far better quant is, judged on its 12 chunks; a cell without chunks falls back to quadrature."""
    from ggufbench.llamacpp.perplexity_output import kld_chunks, parse_kld
    from ggufbench.report.compare import compare_builds

    q2k, q8 = capture("kld_q2_k.txt"), capture("kld_q8_0.txt")
    key = {"model": "m", "ctx": 512, "kv": "f16", "stage": "kld"}
    kld, chunks = [], []
    for build, quant, text in (("a", "Q2_K", q2k), ("b", "Q2_K", q2k), ("a", "Q4", q2k), ("b", "Q4", q8),
                               ("a", "Q6", q2k), ("b", "Q6", q8)):
        r = parse_kld(text)
        kld.append({**key, "build": build, "quant": quant, "kld_mean": r.kld_mean,
                    "kld_mean_uncertainty": r.kld_mean_uncertainty})
        if quant != "Q6":  # Q6 has no chunk rows: quadrature
            chunks += [{**key, "build": build, "quant": quant, **c} for c in kld_chunks(text)]
    tables = {"perplexity": pd.DataFrame(), "bench": pd.DataFrame(), "kld": pd.DataFrame(kld),
              "chunks": pd.DataFrame(chunks)}
    out = compare_builds(tables, "a", "b")["kld"].set_index("quant")
    assert out.loc["Q2_K", "diff"] == 0 and not out.loc["Q2_K", "beyond noise"]
    assert out.loc["Q2_K", "judged by"] == "paired, 12 chunks"
    assert out.loc["Q4", "beyond noise"] and out.loc["Q4", "judged by"] == "paired, 12 chunks"
    assert out.loc["Q6", "judged by"] == "quadrature" and out.loc["Q6", "beyond noise"]
