"""Combining the shards' printed statistics exactly (means, sums, uncertainties; percentiles as a marked estimate)."""

from __future__ import annotations

import math
from dataclasses import dataclass

# --- exact combination of what llama-perplexity prints per shard ---------------------------------------------


def mean_and_uncertainty(s: float, s2: float, n: int) -> tuple[float, float]:
    """A mean and its ± from the sum and the sum of squares, as llama-perplexity computes them (its
    mean_and_uncertainty: tokens as independent; no ± below 11 tokens). The scorer's sums use it too (kv_cost)."""
    if n < 1:
        return 0.0, 0.0
    f = s / n
    df = s2 / n - f * f
    return f, (math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0)


def _sums(mean: float, unc: float, n: int) -> tuple[float, float]:
    """(sum x, sum x^2) over n values from a printed mean and its uncertainty sqrt(var / (n - 1))."""
    var = unc * unc * (n - 1)
    return n * mean, n * (var + mean * mean)


@dataclass
class Sums:
    """The running sums llama-perplexity's kl_divergence keeps (kl_divergence_result), recovered from output."""

    n: int = 0
    nll: float = 0.0
    nll2: float = 0.0
    nll_base: float = 0.0
    nll_base2: float = 0.0
    nll_nll_base: float = 0.0
    kld: float = 0.0
    kld2: float = 0.0
    p_diff: float = 0.0
    p_diff2: float = 0.0
    p_diff4: float = 0.0
    n_same_top: int = 0

    def __add__(self, o: Sums) -> Sums:
        return Sums(**{k: getattr(self, k) + getattr(o, k) for k in self.__dataclass_fields__})


def sums_from_kld(r: dict, n: int) -> Sums:
    """Sums of one KLD run (a KldResult dict) that scored n tokens."""
    mq, sq = math.log(r["ppl_q"]), r["ppl_q_uncertainty"] / r["ppl_q"]
    mb, sb = math.log(r["ppl_base"]), r["ppl_base_uncertainty"] / r["ppl_base"]
    nll, nll2 = _sums(mq, sq, n)
    nb, nb2 = _sums(mb, sb, n)
    # ln-ratio uncertainty^2 = sq^2 + sb^2 - 2 cov, cov = (S_qb/n - mq mb) / (n - 1)
    cov = (sq * sq + sb * sb - r["ln_ppl_ratio_uncertainty"] ** 2) / 2
    nqb = n * (cov * (n - 1) + mq * mb)
    k, k2 = _sums(r["kld_mean"], r["kld_mean_uncertainty"], n)
    rms, rms_unc = r["rms_dp_pct"] / 100, r["rms_dp_pct_uncertainty"] / 100
    mse, mse_unc = rms * rms, 2 * rms * rms_unc
    p2, p4 = _sums(mse, mse_unc, n)
    return Sums(n, nll, nll2, nb, nb2, nqb, k, k2, n * r["dp_mean_pct"] / 100, p2, p4,
                round(r["same_top_p_pct"] / 100 * n))


def stats_from_sums(s: Sums) -> dict:
    """What llama-perplexity prints at the end of a KLD run, from its sums (its own formulas)."""
    n = s.n
    lq, uq = mean_and_uncertainty(s.nll, s.nll2, n)
    lb, ub = mean_and_uncertainty(s.nll_base, s.nll_base2, n)
    cov = (s.nll_nll_base / n - (s.nll / n) * (s.nll_base / n)) / (n - 1) if n >= 10 else 0.0
    ppl_q, ppl_b = math.exp(lq), math.exp(lb)
    lr_unc = math.sqrt(max(0.0, uq * uq + ub * ub - 2 * cov))
    ratio = math.exp(lq - lb)
    diff_unc = math.sqrt(max(0.0, (ppl_q * uq) ** 2 + (ppl_b * ub) ** 2 - 2 * ppl_q * ppl_b * cov))
    kl, kl_unc = mean_and_uncertainty(s.kld, s.kld2, n)
    dp, dp_unc = mean_and_uncertainty(s.p_diff, s.p_diff2, n)
    mse, mse_unc = mean_and_uncertainty(s.p_diff2, s.p_diff4, n)
    rms = math.sqrt(mse)
    top = s.n_same_top / n
    return {"ppl_q": ppl_q, "ppl_q_uncertainty": ppl_q * uq, "ppl_base": ppl_b, "ppl_base_uncertainty": ppl_b * ub,
            "ppl_cor_pct": 100 * cov / (uq * ub) if uq and ub else math.nan,
            "ln_ppl_ratio": lq - lb, "ln_ppl_ratio_uncertainty": lr_unc,
            "ppl_ratio": ratio, "ppl_ratio_uncertainty": ratio * lr_unc,
            "ppl_diff": ppl_q - ppl_b, "ppl_diff_uncertainty": diff_unc,
            "kld_mean": kl, "kld_mean_uncertainty": kl_unc,
            "dp_mean_pct": 100 * dp, "dp_mean_pct_uncertainty": 100 * dp_unc,
            "rms_dp_pct": 100 * rms, "rms_dp_pct_uncertainty": 100 * (0.5 / rms * mse_unc if rms else 0.0),
            "same_top_p_pct": 100 * top, "same_top_p_pct_uncertainty": 100 * math.sqrt(top * (1 - top) / (n - 1))}


def combine_percentiles(parts: list[tuple[dict, int]]) -> tuple[dict, dict]:
    """Percentiles do not combine exactly. Maximum and minimum do (max of maxima, min of minima); the others
    are estimated as the token-weighted mean of the shards' values. Returns (estimate, per-shard [min, max])."""
    keys = sorted({k for p, _ in parts for k in p})
    est, spread = {}, {}
    for k in keys:
        vals = [(p[k], n) for p, n in parts if k in p]
        spread[k] = [min(v for v, _ in vals), max(v for v, _ in vals)]
        if k == "max":
            est[k] = spread[k][1]
        elif k == "min":
            est[k] = spread[k][0]
        else:
            est[k] = sum(v * n for v, n in vals) / sum(n for _, n in vals)
    return est, spread


def combine_kld(parts: list[tuple[dict, int]]) -> dict:
    """One KldResult-shaped dict (flat percentiles as kld_<p>, dp_<p>_pct) from shards' (result, tokens)."""
    total = Sums()
    for r, n in parts:
        total = total + sums_from_kld(r, n)
    out = stats_from_sums(total)
    kp, ks = combine_percentiles([(r["kld_percentiles"], n) for r, n in parts])
    dpp, dps = combine_percentiles([(r["dp_percentiles_pct"], n) for r, n in parts])
    out.update({f"kld_{k}": v for k, v in kp.items()})
    out.update({f"dp_{k}_pct": v for k, v in dpp.items()})
    out["n_tokens_scored"] = total.n
    out["percentiles_estimated"] = True
    out["percentile_shard_spread"] = {"kld": ks, "dp_pct": dps}
    return out


def combine_ppl(parts: list[tuple[float, float, int]]) -> tuple[float, float]:
    """PPL ± uncertainty over shards from each shard's (PPL, uncertainty, scored tokens): PPL mode prints
    exp(mean nll) and exp(mean nll) * sqrt(var / (n - 1)), so the nll sums come back exactly as for KLD."""
    s = s2 = 0.0
    n = 0
    for ppl, unc, k in parts:
        a, b = _sums(math.log(ppl), unc / ppl, k)
        s, s2, n = s + a, s2 + b, n + k
    m, u = mean_and_uncertainty(s, s2, n)
    return math.exp(m), math.exp(m) * u
