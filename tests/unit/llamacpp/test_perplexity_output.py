"""Parsers over real captured llama.cpp output: llama-perplexity (PPL and KLD mode), llama-bench, --version."""

from __future__ import annotations

import json
import math

import pytest

from ggufbench.core.errors import ToolFailed
from ggufbench.llamacpp.perplexity_output import diagnose, parse_kld, parse_perplexity


@pytest.mark.parametrize(
    ("name", "ppl", "unc", "n_ctx", "n_seq", "chunk_ppl"),
    [
        ("ppl_q8_0_kv-f16.txt", 12.0240, 0.58153, 512, 4,
         [18.8783, 12.8541, 11.4831, 13.4720, 15.2408, 15.0242, 12.5634, 11.9030, 12.3557, 11.9797, 11.8315,
          12.0240]),
        ("ppl_q8_0_kv-q8_0.txt", 12.0056, 0.57993, 512, 4,
         [18.6947, 12.7977, 11.4009, 13.4028, 15.1798, 14.9645, 12.5382, 11.8939, 12.3421, 11.9665, 11.8223,
          12.0056]),
        ("kld_base_f16.txt", 11.9086, 0.57602, 512, 4,
         [18.4139, 12.6073, 11.2756, 13.2824, 15.0468, 14.8432, 12.4408, 11.7981, 12.2289, 11.8631, 11.7158,
          11.9086]),
        ("kld_base_small.txt", 6.7232, 2.20499, 128, 16, [6.7232]),
    ],
)
def test_parse_perplexity_real_output(capture, name, ppl, unc, n_ctx, n_seq, chunk_ppl):
    r = parse_perplexity(capture(name))
    assert r.ppl == ppl
    assert r.ppl_uncertainty == unc
    assert r.n_ctx == n_ctx
    assert r.n_batch == 2048
    assert r.n_seq == n_seq
    assert r.n_chunks == len(chunk_ppl)
    assert r.chunk_ppl == chunk_ppl
    # the last running estimate is the final one
    assert r.chunk_ppl[-1] == r.ppl


def test_parse_perplexity_run_info_and_dict(capture):
    r = parse_perplexity(capture("ppl_q8_0_kv-q8_0.txt"))
    assert r.seconds_per_pass == 3.66
    d = r.to_dict()
    assert d["ppl"] == 12.0056 and d["ppl_uncertainty"] == 0.57993
    assert d["n_chunks"] == 12 and len(d["chunk_ppl"]) == 12
    json.dumps(d)  # a record field: must serialise


def test_kv_q8_0_costs_nothing_measurable_here(capture):
    """The two real runs differ only in KV type; their PPLs agree within the stated uncertainty."""
    f16 = parse_perplexity(capture("ppl_q8_0_kv-f16.txt"))
    q8 = parse_perplexity(capture("ppl_q8_0_kv-q8_0.txt"))
    assert f16.ppl != q8.ppl
    assert abs(f16.ppl - q8.ppl) < f16.ppl_uncertainty


@pytest.mark.parametrize("nan", ["nan", "-nan"])
def test_parse_perplexity_nan_is_a_failure(capture, nan):
    # llama.cpp prints the estimate with printf("%.4lf"), and glibc prints a NaN as "nan" or "-nan": that is
    # what a run with NaN logits ends with. Exit status 0, so only the parser can catch it.
    text = capture("ppl_q8_0_kv-q8_0.txt")
    assert "Final estimate: PPL = 12.0056 +/- 0.57993" in text
    text = text.replace("PPL = 12.0056 +/- 0.57993", f"PPL = {nan} +/- {nan}")
    with pytest.raises(ToolFailed, match="non-finite PPL"):
        parse_perplexity(text)


def test_parse_perplexity_inf_is_a_failure(capture):
    text = capture("ppl_q8_0_kv-f16.txt").replace("PPL = 12.0240 +/- 0.58153", "PPL = inf +/- nan")
    with pytest.raises(ToolFailed, match="non-finite"):
        parse_perplexity(text)


def test_too_few_tokens(capture):
    text = capture("fail_too_few_tokens.txt")
    why = diagnose(text)
    assert why is not None
    assert "1024 tokens" in why and "ctx 512" in why
    with pytest.raises(ToolFailed) as ei:
        parse_perplexity(text)
    msg = str(ei.value)
    assert "too few tokens" in msg
    assert "1024 tokens needed for ctx 512" in msg
    assert "Final estimate" in msg  # says what was missing, too


def test_truncated_logits(capture):
    text = capture("fail_truncated_logits.txt")
    with pytest.raises(ToolFailed) as ei:
        parse_kld(text)
    msg = str(ei.value)
    assert "chunk 3" in msg
    assert "truncated" in msg
    # the chunk rows it did print must not be mistaken for the "too few scored tokens" case
    assert "100 scored tokens" not in msg


def test_bad_logits(capture):
    with pytest.raises(ToolFailed, match="not a llama.cpp logits file"):
        parse_kld(capture("fail_bad_logits.txt"))


def test_kld_too_few_scored_tokens(capture):
    text = capture("fail_kld_too_few_scored.txt")
    assert diagnose(text) is None  # no error line at all: the tool just prints no statistics
    with pytest.raises(ToolFailed) as ei:
        parse_kld(text)
    msg = str(ei.value)
    assert "100 scored tokens" in msg
    assert "chunk rows but no statistics" in msg


def test_missing_model(capture):
    text = capture("fail_missing_model.txt")
    assert diagnose(text) == "the model file could not be loaded"
    with pytest.raises(ToolFailed, match="could not be loaded"):
        parse_perplexity(text)
    with pytest.raises(ToolFailed, match="could not be loaded"):
        parse_kld(text)


def test_unknown_failure_says_so(capture):
    # A PPL-mode run parsed as KLD: no statistics blocks, no known error line, no chunk table rows.
    text = capture("kld_base_f16.txt")
    assert diagnose(text) is None
    with pytest.raises(ToolFailed) as ei:
        parse_kld(text)
    msg = str(ei.value)
    assert "KL divergence statistics" in msg
    assert "no known error line" in msg


def test_kld_output_is_not_a_ppl_result(capture):
    with pytest.raises(ToolFailed, match="Final estimate"):
        parse_perplexity(capture("kld_q2_k.txt"))


def test_diagnose_none_on_success(capture):
    for name in ("ppl_q8_0_kv-f16.txt", "kld_q2_k.txt", "kld_q8_0.txt", "kld_base_f16.txt"):
        assert diagnose(capture(name)) is None, name


def test_parse_kld_q2_k(capture):
    r = parse_kld(capture("kld_q2_k.txt"))
    assert (r.kld_mean, r.kld_mean_uncertainty) == (0.416352, 0.006442)
    assert (r.same_top_p_pct, r.same_top_p_pct_uncertainty) == (68.725, 0.838)
    assert (r.ppl_q, r.ppl_q_uncertainty) == (16.929501, 0.811025)
    assert (r.ppl_base, r.ppl_base_uncertainty) == (11.908564, 0.576021)
    assert r.ppl_cor_pct == 93.89
    assert (r.ln_ppl_ratio, r.ln_ppl_ratio_uncertainty) == (0.351800, 0.016835)
    assert (r.ppl_ratio, r.ppl_ratio_uncertainty) == (1.421624, 0.023934)
    assert (r.ppl_diff, r.ppl_diff_uncertainty) == (5.020938, 0.335149)
    assert (r.dp_mean_pct, r.dp_mean_pct_uncertainty) == (-7.925, 0.296)
    assert (r.rms_dp_pct, r.rms_dp_pct_uncertainty) == (18.169, 0.364)
    assert r.kld_percentiles == {
        "max": 6.729734, "p99_9": 3.169593, "p99": 1.611855, "p95": 0.979838, "p90": 0.769352,
        "median": 0.354741, "p10": 0.090885, "p5": 0.041587, "p1": 0.005603, "p0_1": 0.000863,
        "min": 0.000338,
    }
    assert r.dp_percentiles_pct == {
        "max": 57.386, "p99_9": 44.271, "p99": 26.110, "p95": 12.829, "p90": 5.387, "p75": 0.021,
        "median": -2.168, "p25": -14.655, "p10": -30.602, "p5": -40.705, "p1": -59.407, "p0_1": -75.836,
        "min": -99.362,
    }
    assert (r.n_chunks, r.n_ctx, r.n_batch, r.n_seq, r.seconds_per_pass) == (12, 512, 2048, 4, 1.64)


def test_parse_kld_q8_0(capture):
    r = parse_kld(capture("kld_q8_0.txt"))
    assert (r.kld_mean, r.kld_mean_uncertainty) == (0.004116, 0.000070)
    assert r.kld_percentiles["p99_9"] == 0.033971
    assert r.kld_percentiles["max"] == 0.053069
    assert r.kld_percentiles["min"] == -0.000002  # llama.cpp's rounding: kept as printed
    assert (r.same_top_p_pct, r.same_top_p_pct_uncertainty) == (96.471, 0.334)
    assert (r.ppl_q, r.ppl_q_uncertainty) == (12.024026, 0.581531)
    assert r.ppl_cor_pct == 99.93
    assert (r.rms_dp_pct, r.rms_dp_pct_uncertainty) == (1.653, 0.043)
    assert (r.dp_mean_pct, r.dp_mean_pct_uncertainty) == (-0.149, 0.030)
    assert r.seconds_per_pass == 2.36


def test_kld_baseline_consistent_across_captures(capture):
    """PPL(base) in both KLD runs is the baseline pass's own PPL (11.9086 rounded to 4 places there)."""
    base = parse_perplexity(capture("kld_base_f16.txt"))
    q2 = parse_kld(capture("kld_q2_k.txt"))
    q8 = parse_kld(capture("kld_q8_0.txt"))
    assert q2.ppl_base == q8.ppl_base == 11.908564
    assert round(q2.ppl_base, 4) == base.ppl
    # and PPL(Q) of the Q8_0 KLD pass is the Q8_0 PPL pass with f16 KV (same model, corpus, ctx)
    assert round(q8.ppl_q, 4) == parse_perplexity(capture("ppl_q8_0_kv-f16.txt")).ppl
    assert q2.kld_mean > 100 * q8.kld_mean


def test_kld_flat_row(capture):
    r = parse_kld(capture("kld_q2_k.txt"))
    flat = r.flat()
    assert "kld_percentiles" not in flat and "dp_percentiles_pct" not in flat
    assert flat["kld_mean"] == 0.416352
    assert flat["kld_p99_9"] == 3.169593
    assert flat["kld_median"] == 0.354741
    assert flat["dp_p75_pct"] == 0.021
    assert flat["dp_min_pct"] == -99.362
    assert flat["same_top_p_pct"] == 68.725
    # the KLD block prints no 75%/25% rows, the Δp block does
    assert "kld_p75" not in flat and "kld_p25" not in flat
    assert sum(k.startswith("kld_p") or k in ("kld_max", "kld_min", "kld_median") for k in flat) == 11
    assert sum(k.startswith("dp_") and k.endswith("_pct") and k != "dp_mean_pct" for k in flat) == 13
    assert all(not isinstance(v, (dict, list)) for v in flat.values())
    json.dumps(flat)


@pytest.mark.parametrize("nan", ["nan", "-nan"])
def test_parse_kld_nan_is_a_failure(capture, nan):
    # llama.cpp prints these with printf("%10.6f"): glibc writes NaN as "nan"/"-nan".
    text = capture("kld_q2_k.txt")
    assert "Mean    KLD:   0.416352 ± " in text
    text = text.replace("Mean    KLD:   0.416352", f"Mean    KLD:   {nan}")
    with pytest.raises(ToolFailed, match="non-finite KLD statistic"):
        parse_kld(text)


@pytest.mark.faults
def test_non_finite_baseline_logits_are_blamed_on_the_baseline_not_the_quant(capture):
    """The issue's case: inf in the logits was blamed on the quant or KV type. Captured: the demo's baseline logits
    with +inf/-inf written over the first token's scale and minimum, then a real Q8_0 KLD pass against them
    (rc 0, Mean PPL(base) nan, the quant's own PPL and KLD finite)."""
    text = capture("fail_kld_inf_base_logits.txt")
    with pytest.raises(ToolFailed, match=r"non-finite PPL\(base\) \(nan\): the baseline logits hold NaN/inf.*not "
                                         r"the quant measured here"):
        parse_kld(text)


def test_parse_kld_missing_statistic(capture):
    text = capture("kld_q2_k.txt")
    lines = [ln for ln in text.splitlines() if not ln.startswith("Same top p")]
    with pytest.raises(ToolFailed, match="Same top p"):
        parse_kld("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", ["kld_q2_k.txt", "kld_q8_0.txt"])
def test_per_chunk_values_reproduce_the_printed_means_within_their_rounding(capture, name):
    """Chunk k's own value from two consecutive running values: the first chunk's is the first row as printed,
    the mean over chunks is the final running value, and each value's bound grows with k."""
    text = capture(name)
    r = parse_kld(text)
    assert len(r.chunks) == r.n_chunks == 12 and [c["chunk"] for c in r.chunks] == list(range(12))
    first = next(ln for ln in text.splitlines() if ln.strip().startswith("1 "))
    assert f"{r.chunks[0]['kld']:.5f}" in first and f"{r.chunks[0]['same_top_p_pct']:.3f}" in first
    for stat, final in (("kld", r.kld_mean), ("ln_ppl_ratio", r.ln_ppl_ratio), ("same_top_p_pct", r.same_top_p_pct)):
        mean = sum(c[stat] for c in r.chunks) / 12
        assert abs(mean - final) <= r.chunks[-1][f"{stat}_bound"], stat
    assert math.exp(sum(c["ln_ppl_q"] for c in r.chunks) / 12) == pytest.approx(r.ppl_q, rel=1e-5)
    rms = math.sqrt(sum(c["rms_dp_pct"] ** 2 for c in r.chunks) / 12)
    assert rms == pytest.approx(r.rms_dp_pct, abs=1e-3)
    assert r.chunks[0]["kld_bound"] == 5e-6 and r.chunks[11]["kld_bound"] == pytest.approx(23 * 5e-6)
    assert "chunks" not in r.flat()  # the tables keep one row per run; chunks.parquet has the chunks


def test_per_chunk_ppl_of_a_ppl_run(capture):
    r = parse_perplexity(capture("ppl_q8_0_kv-f16.txt"))
    assert len(r.chunks) == 12 and r.chunks[0]["ln_ppl"] == pytest.approx(math.log(18.8783))
    assert math.exp(sum(c["ln_ppl"] for c in r.chunks) / 12) == pytest.approx(r.ppl, rel=1e-5)
