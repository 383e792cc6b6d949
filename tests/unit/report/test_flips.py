"""report.flips: accuracy and flip statistics on hand-checkable numbers (Wilson intervals, the exact binomial tail of
McNemar's test, Spearman with ties) and on the real captures' per-question answers (tests/data/cpu-*/tasks)."""

from __future__ import annotations

import math

import pytest

from ggufbench.llamacpp.task_output import parse_multiple_choice
from ggufbench.report.flips import (
    Z95,
    accuracy,
    binomial_cdf_half,
    cell_flips,
    flips,
    mcnemar_exact,
    noise_comparison,
    questions_for_flip_rate,
    ranks,
    spearman,
    wilson,
)
from tests.support import DATA


def test_wilson_interval_known_values():
    # Wilson (1927) at z = 1.96: 5 of 10 -> [0.2366, 0.7634]; 0 of 10 -> [0, 0.2775]; 81 of 263 -> [0.2553, 0.3662]
    assert wilson(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert wilson(0, 10) == pytest.approx((0.0, Z95 ** 2 / (10 + Z95 ** 2)), abs=1e-6)  # z²/(n+z²)
    assert wilson(10, 10) == pytest.approx((10 / (10 + Z95 ** 2), 1.0), abs=1e-6)
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_the_exact_binomial_tail_and_mcnemar():
    assert binomial_cdf_half(0, 5) == 1 / 32 and binomial_cdf_half(2, 4) == 11 / 16
    assert binomial_cdf_half(-1, 3) == 0.0 and binomial_cdf_half(3, 3) == 1.0
    # b=1, c=9: 2·(C(10,0)+C(10,1))/2^10 = 22/1024
    assert mcnemar_exact(1, 9) == 22 / 1024 == mcnemar_exact(9, 1)
    assert mcnemar_exact(0, 5) == 2 / 32
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    # b=20, c=40: the tail by the pmf recurrence p(i+1) = p(i)·(n−i)/(i+1) in floats, p(0) = 2^-60; the
    # continuity-corrected normal approximation (z = 19/√60) gives 0.0142 beside it
    pmf, tail = 2.0 ** -60, 0.0
    for i in range(21):
        tail += pmf
        pmf *= (60 - i) / (i + 1)
    assert mcnemar_exact(20, 40) == pytest.approx(2 * tail, rel=1e-12) == pytest.approx(0.013489, abs=1e-6)


def test_flips_count_both_ways_and_the_net_change():
    base = [1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    cell = [1, 0, 0, 1, 0, 1, 0, 0, 1, 0]
    f = flips(base, cell)
    assert (f.n, f.right_to_wrong, f.wrong_to_right) == (10, 2, 1)
    assert f.flip.k == 3 and f.flip.rate == 0.3 and f.flip.low == pytest.approx(wilson(3, 10)[0])
    assert f.net_change == pytest.approx(-0.1) == accuracy(cell).rate - accuracy(base).rate
    assert f.mcnemar_p == 1.0  # 2·P(X <= 1 | n=3) = 2·4/8
    assert flips(base, base).flip.k == 0
    with pytest.raises(ValueError, match="not the same task file"):
        flips(base, cell[:-1])


def test_the_captured_q2_k_flips_against_f16_on_both_builds():
    f16 = parse_multiple_choice((DATA / "cpu-0.3.36/tasks/mc_f16.txt").read_text(), 20).correct
    q2k_new = parse_multiple_choice((DATA / "cpu-0.3.36/tasks/mc_q2_k.txt").read_text(), 20).correct
    q2k_old = parse_multiple_choice((DATA / "cpu-0.3.16/tasks/mc_q2_k_kvu.txt").read_text(), 20).correct
    new, old = flips(f16, q2k_new), flips(f16, q2k_old)
    assert (new.right_to_wrong, new.wrong_to_right, new.net_change) == (1, 0, -0.05)
    assert (old.right_to_wrong, old.wrong_to_right, old.net_change) == (2, 0, -0.1)
    assert (new.mcnemar_p, old.mcnemar_p) == (1.0, 0.5)
    acc = accuracy(f16)
    assert (acc.k, acc.n, acc.rate) == (10, 20, 0.5)


def test_a_cell_is_beyond_the_noise_only_when_its_interval_clears_the_floor():
    n = 1000
    base = [1] * 600 + [0] * 400
    noise = base[:]
    noise[0], noise[700] = 0, 1                       # 2 flips in 1000: 0.2%
    many = base[:]
    for i in range(0, 60):
        many[i] = 0                                    # 60 right -> wrong
    few = base[:]
    few[0] = few[1] = 0                                # 2 right -> wrong
    floor = flips(base, noise)
    far, near = noise_comparison(flips(base, many), floor), noise_comparison(flips(base, few), floor)
    assert far["beyond_noise"] and not near["beyond_noise"]
    assert far["flip_rate_above_noise"] == pytest.approx(60 / n - 2 / n)
    rows = cell_flips({("F16", "f16"): base, ("Q2_K", "f16"): many, ("F16", "noise"): noise}, ("F16", "f16"),
                      noise=("F16", "noise"))
    by = {r["cell"]: r for r in rows}
    assert by[("F16", "f16")]["flip_k"] == 0 and by[("Q2_K", "f16")]["right_to_wrong"] == 60
    assert by[("Q2_K", "f16")]["beyond_noise"] and by[("Q2_K", "f16")]["accuracy_rate"] == 0.54
    with pytest.raises(KeyError, match="no baseline cell"):
        cell_flips({("Q2_K", "f16"): many}, ("F16", "f16"))


def test_spearman_with_ties_and_its_n():
    assert ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    assert spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == (1.0, 5)
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == (-1.0, 5)
    # 1 - 6·Σd²/(n(n²-1)) without ties: d = (0, 1, -1, 0) -> 1 - 12/60 = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx((0.8, 4))
    # ties: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): Pearson on ranks = 0.9487
    rho, n = spearman([1, 2, 2, 3], [1, 2, 3, 4])
    assert (round(rho, 4), n) == (0.9487, 4)
    # pairs with a missing value are left out, and n says how many were used
    assert spearman([1, 2, math.nan, 4, 5], [1, 2, 3, 4, 5]) == (1.0, 4)
    assert math.isnan(spearman([1, 2], [1, 2])[0]) and math.isnan(spearman([1, 1, 1], [1, 2, 3])[0])


def test_the_flip_budget_two_against_four_percent_needs_about_a_thousand_questions():
    assert questions_for_flip_rate(0.02, 0.04) == 1084
    assert questions_for_flip_rate(0.02, 0.02) is None
    assert questions_for_flip_rate(0.01, 0.10) < 200


DEMO = DATA / "cpu-0.3.36/tasks/demo_cloze"
# the demo run's KLD against F16 (results/tables/kld.parquet of `make demo`: ctx 512, 8 chunks), mean per cell
DEMO_KLD = {("F16", "q8_0"): 0.000285, ("Q8_0", "f16"): 0.004162, ("Q4_K_M", "f16"): 0.061093,
            ("Q2_K", "f16"): 0.428934}


def test_the_demos_cloze_flips_grow_with_kld_and_clear_the_noise_floor():
    """The demo's 926-question cloze set answered by every quant (real captures): the flips order as the KLD does,
    the batch-size rerun of the baseline (the noise floor) changed no answer on the CPU, and only Q4_K_M and Q2_K
    flip more than the floor allows; their net accuracy change is within chance (McNemar)."""
    cells = {tuple(f.stem.removeprefix("mc_").rsplit("_kv-", 1)): parse_multiple_choice(f.read_text(), 926).correct
             for f in DEMO.glob("mc_*.txt")}
    rows = {r["cell"]: r for r in cell_flips(cells, ("F16", "f16"), noise=("F16", "f16_b512_ub64"))}
    assert rows[("F16", "f16_b512_ub64")]["flip_k"] == 0
    got = {c: (rows[c]["right_to_wrong"], rows[c]["wrong_to_right"]) for c in DEMO_KLD}
    assert got == {("F16", "q8_0"): (1, 2), ("Q8_0", "f16"): (4, 5), ("Q4_K_M", "f16"): (23, 15),
                   ("Q2_K", "f16"): (44, 60)}
    assert [c for c in DEMO_KLD if rows[c]["beyond_noise"]] == [("Q8_0", "f16"), ("Q4_K_M", "f16"), ("Q2_K", "f16")]
    assert all(rows[c]["mcnemar_p"] > 0.1 for c in DEMO_KLD)
    rho, n = spearman([DEMO_KLD[c] for c in DEMO_KLD], [rows[c]["flip_rate"] for c in DEMO_KLD])
    assert (rho, n) == (1.0, 4)
    assert rows[("F16", "f16")]["accuracy_k"] == 505 and rows[("Q2_K", "f16")]["accuracy_k"] == 521
