"""report.paired: paired comparisons on the same chunks, on simulated chunks with a set difference and on real
llama-perplexity KLD output (SmolLM2-135M, 12 chunks of ctx 512: Q8_0 and Q2_K against the same F16 logits)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ggufbench.llamacpp.perplexity_output import parse_kld
from ggufbench.report.paired import comparisons, paired, ranking_holds, t975


def simulated(n: int, diff: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two runs whose chunks share a large chunk-to-chunk spread (hard text is hard for both) and differ by
    `diff` plus a small independent part: the case of two quants on one corpus."""
    rng = np.random.default_rng(seed)
    common = rng.gamma(2.0, 0.05, n)
    a = common + rng.normal(0, 0.002, n)
    b = common + diff + rng.normal(0, 0.002, n)
    frame = lambda x: pd.DataFrame({"chunk": range(n), "kld": x, "kld_bound": 5e-6})  # noqa: E731
    return frame(a), frame(b)


def test_a_set_difference_is_found_and_resolved():
    a, b = simulated(25, 0.004)
    p = paired(a, b, "kld")
    assert p["diff"] == pytest.approx(-0.004, abs=0.0012) and p["resolved"]
    unpaired_se = np.hypot(a["kld"].std(ddof=1), b["kld"].std(ddof=1)) / 5
    assert p["paired_se"] < unpaired_se / 10  # the shared spread cancels in the difference
    assert p["chunks_needed"] < 25


def test_no_difference_is_not_resolved_and_the_rounding_counts():
    a, b = simulated(25, 0.0, seed=3)
    assert not paired(a, b, "kld")["resolved"]
    same = a.assign(kld_bound=0.01)  # a difference smaller than what the printed digits carry is never called
    assert not paired(same, same.assign(kld=same["kld"] + 0.005), "kld")["resolved"]


def test_t_quantiles():
    assert t975(7) == 2.365 and t975(35) == 2.042 and t975(1000) == 1.980 and t975(0) == float("inf")


def _run(capture, name, quant):
    r = parse_kld(capture(name))
    chunks = pd.DataFrame(r.chunks).assign(stage="kld", build="cpu", model="smollm2", ctx=512, kv="f16",
                                           quant=quant)
    row = {"build": "cpu", "model": "smollm2", "ctx": 512, "kv": "f16", "quant": quant, **r.flat()}
    return chunks, row


def test_real_output_q8_0_against_q2_k(capture):
    (c8, r8), (c2, r2) = _run(capture, "kld_q8_0.txt", "Q8_0"), _run(capture, "kld_q2_k.txt", "Q2_K")
    out = comparisons(pd.concat([c8, c2]), pd.DataFrame([r8, r2]))
    kld = out[out["stat"] == "kld"].iloc[0]
    assert (kld["comparison"], kld["a"], kld["b"], kld["n_chunks"]) == ("quant", "Q8_0", "Q2_K", 12)
    assert kld["diff"] == pytest.approx(r8["kld_mean"] - r2["kld_mean"], abs=1e-4)
    assert kld["verdict"] == "Q8_0 better" and kld["quadrature_resolved"]
    # llama.cpp's ± counts the 12 x 255 tokens as independent; the chunks say they are not: here the chunk-
    # clustered paired SE is 2.2 times the quadrature of the two ±, for all that pairing cancels
    assert kld["se_ratio"] == pytest.approx(2.24, abs=0.01)
    top = out[out["stat"] == "same_top_p_pct"].iloc[0]
    assert top["verdict"] == "Q8_0 better" and top["diff"] > 0  # higher is better there


def test_the_ranking_after_n_chunks_against_all(capture):
    (c8, _), (c2, _) = _run(capture, "kld_q8_0.txt", "Q8_0"), _run(capture, "kld_q2_k.txt", "Q2_K")
    r = ranking_holds(pd.concat([c8, c2]), 4).iloc[0]
    assert (r["order_first_n"], r["order_all"], r["holds"], r["n_chunks"]) == ("Q8_0 < Q2_K", "Q8_0 < Q2_K", True, 12)
    assert ranking_holds(pd.concat([c8, c2]), 12).empty  # nothing beyond the first 12 to compare with
