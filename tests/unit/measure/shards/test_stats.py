"""measure.shards.stats: shard results recombine to the unsharded run's PPL and KLD statistics (real captures)."""

from __future__ import annotations

import math

import pytest

from ggufbench.llamacpp.perplexity_output import parse_kld, parse_perplexity
from ggufbench.measure.shards.plan import scored_tokens
from ggufbench.measure.shards.stats import combine_kld, combine_ppl, stats_from_sums, sums_from_kld
from tests.support import DATA

SHARDED = DATA / "cpu-0.3.36" / "sharded"


MEANS = ["ppl_q", "ppl_base", "ln_ppl_ratio", "ppl_ratio", "ppl_diff", "kld_mean", "dp_mean_pct", "rms_dp_pct",
         "same_top_p_pct"]


UNCERTAINTIES = [f"{k}_uncertainty" for k in MEANS]


def kld(a: int, b: int) -> dict:
    return parse_kld((SHARDED / f"kld_q2_k_chunks{a}-{b}.txt").read_text(encoding="utf-8")).flat()


def parts(*ranges) -> list[tuple[dict, int]]:
    return [(parse_kld((SHARDED / f"kld_q2_k_chunks{a}-{b}.txt").read_text(encoding="utf-8")).to_dict(),
             scored_tokens(b - a, 512)) for a, b in ranges]


def printed_digits(key: str, value: float) -> float:
    """Half a unit of the last digit llama-perplexity prints for this statistic, relative where it prints
    significant digits. Percent values have 3 decimals; the rest 6."""
    return 0.0005 if key.endswith("_pct") or key.endswith("_pct_uncertainty") else 5e-7


def test_one_shard_combined_alone_gives_back_its_own_numbers():
    (r, n), = parts((0, 3))
    s = stats_from_sums(sums_from_kld(r, n))
    flat = kld(0, 3)
    for key in MEANS + UNCERTAINTIES:
        # uncertainties printed with few significant digits come back to within their rounding
        tol = printed_digits(key, flat[key]) + 2e-3 * abs(flat[key])
        assert s[key] == pytest.approx(flat[key], abs=tol), key


def test_batch_aligned_shards_equal_the_unsharded_run_to_the_printed_digits():
    whole, c = kld(0, 8), combine_kld(parts((0, 4), (4, 8)))
    for key in MEANS:
        assert abs(c[key] - whole[key]) <= 2 * printed_digits(key, whole[key]) + 1e-6 * abs(whole[key]), \
            (key, whole[key], c[key])
    for key in UNCERTAINTIES:
        assert c[key] == pytest.approx(whole[key], rel=2e-3, abs=1e-6), key
    assert c["n_tokens_scored"] == scored_tokens(8, 512) == 2040
    assert c["kld_max"] == whole["kld_max"] and c["kld_min"] == whole["kld_min"]  # exact
    assert c["percentiles_estimated"] is True
    lo, hi = c["percentile_shard_spread"]["kld"]["median"]
    assert lo <= c["kld_median"] <= hi


def test_unaligned_shards_agree_within_one_combined_standard_error():
    whole, c = kld(0, 6), combine_kld(parts((0, 3), (3, 6)))
    for key in ("kld_mean", "ppl_q", "same_top_p_pct"):
        se = math.hypot(whole[f"{key}_uncertainty"], c[f"{key}_uncertainty"])
        assert abs(c[key] - whole[key]) < se, (key, whole[key], c[key], se)
    # the baseline's own numbers (F16, unaffected by batch composition here) still match to the digits
    assert c["ppl_base"] == pytest.approx(whole["ppl_base"], abs=1e-4)


def test_baseline_ppl_combines_from_the_shards_baseline_passes():
    shard = [parse_perplexity((SHARDED / f"base_chunks{a}-{b}.txt").read_text()) for a, b in ((0, 4), (4, 8))]
    whole = parse_perplexity((SHARDED / "base_chunks0-8.txt").read_text())
    ppl, unc = combine_ppl([(r.ppl, r.ppl_uncertainty, scored_tokens(4, 512)) for r in shard])
    assert ppl == pytest.approx(whole.ppl, abs=1e-4) and unc == pytest.approx(whole.ppl_uncertainty, abs=2e-5)
