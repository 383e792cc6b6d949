"""Two llama.cpp builds side by side: per-cell differences in PPL, KLD and tok/s, flagged when they exceed
the measured noise (in the spirit of llama.cpp's scripts/compare-llama-bench.py, which prints a speedup per
test; here each difference also carries the noise it is judged against).

Noise: for PPL and KLD, llama.cpp's own ± of each side combined in quadrature (conservative: both builds score
the same tokens, so their errors are correlated and the true noise of the difference is smaller); for speed,
the wider of the two min-max ranges of the repetitions, relative to the median.
"""

from __future__ import annotations

import math

import pandas as pd

KEYS_PPL = ["model", "quant", "ctx", "kv"]
KEYS_KLD = ["model", "quant", "ctx", "kv"]
KEYS_BENCH = ["model", "quant", "test", "n_threads"]


def _pairs(df: pd.DataFrame, keys: list[str], base: str, other: str) -> pd.DataFrame:
    a = df[df["build"] == base].set_index(keys)
    b = df[df["build"] == other].set_index(keys)
    return a.merge(b, left_index=True, right_index=True, how="inner", suffixes=("_a", "_b")).reset_index()


def compare_quality(df: pd.DataFrame, value: str, unc: str, keys: list[str], base: str, other: str,
                    k: float = 2.0) -> pd.DataFrame:
    p = _pairs(df, keys, base, other)
    if p.empty:
        return p
    out = p[keys].copy()
    out[f"{value} {base}"] = p[f"{value}_a"]
    out[f"{value} {other}"] = p[f"{value}_b"]
    out["diff"] = p[f"{value}_b"] - p[f"{value}_a"]
    out["noise (±, combined)"] = (p[f"{unc}_a"] ** 2 + p[f"{unc}_b"] ** 2) ** 0.5
    out["beyond noise"] = out["diff"].abs() > k * out["noise (±, combined)"]
    return out


def compare_speed(bench: pd.DataFrame, base: str, other: str) -> pd.DataFrame:
    p = _pairs(bench, KEYS_BENCH, base, other)
    if p.empty:
        return p
    out = p[KEYS_BENCH].copy()
    out[f"t/s {base}"] = p["median_ts_a"]
    out[f"t/s {other}"] = p["median_ts_b"]
    out["speedup"] = p["median_ts_b"] / p["median_ts_a"]
    spread = [max((hi_a - lo_a) / m_a, (hi_b - lo_b) / m_b) for lo_a, hi_a, m_a, lo_b, hi_b, m_b in zip(
        p["min_ts_a"], p["max_ts_a"], p["median_ts_a"], p["min_ts_b"], p["max_ts_b"], p["median_ts_b"], strict=True)]
    out["noise (rel. range)"] = spread
    out["beyond noise"] = [abs(s - 1) > n if math.isfinite(n) else False for s, n in zip(out["speedup"], spread,
                                                                                         strict=True)]
    return out


def compare_builds(tables: dict[str, pd.DataFrame], base: str, other: str) -> dict[str, pd.DataFrame]:
    out = {}
    if not tables["perplexity"].empty:
        out["perplexity"] = compare_quality(tables["perplexity"], "ppl", "ppl_uncertainty", KEYS_PPL, base, other)
    if not tables["kld"].empty:
        out["kld"] = compare_quality(tables["kld"], "kld_mean", "kld_mean_uncertainty", KEYS_KLD, base, other)
    if not tables["bench"].empty:
        out["bench"] = compare_speed(tables["bench"], base, other)
    return out
