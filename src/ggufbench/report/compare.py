"""Two llama.cpp builds side by side: per-cell differences in PPL, KLD and tok/s, flagged when they exceed
the measured noise (in the spirit of llama.cpp's scripts/compare-llama-bench.py, which prints a speedup per
test; here each difference also carries the noise it is judged against).

Noise: for KLD, where both builds' per-chunk values are in the chunks table, the paired test of report.paired
(the per-chunk differences' 95% interval: both builds score the same tokens against the same baseline);
otherwise, and for PPL, llama.cpp's own ± of each side combined in quadrature. For speed, the wider of the two
min-max ranges of the repetitions, relative to the median.
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


def compare_quality(df: pd.DataFrame, value: str, unc: str, keys: list[str], *, base: str, other: str,
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


def with_paired(out: pd.DataFrame, chunks: pd.DataFrame, base: str, other: str) -> pd.DataFrame:
    """KLD cells of two builds judged by the paired test on their shared chunks where both have them: the paired
    half-width (95%, with the rounding bound) replaces the quadrature noise; `judged by` says which was used."""
    from .paired import paired

    if out.empty:
        return out
    ck = chunks[chunks["stage"] == "kld"] if chunks is not None and not chunks.empty and "kld" in chunks else None
    halves, judged, beyond = [], [], []
    for _, r in out.iterrows():
        p = None
        if ck is not None:
            sel = [ck[(ck["build"] == b) & (ck["model"] == r["model"]) & (ck["quant"] == r["quant"])
                      & (ck["ctx"] == r["ctx"]) & (ck["kv"] == r["kv"])] for b in (other, base)]
            if all(len(x) > 1 for x in sel):
                p = paired(sel[0], sel[1], "kld")
        if p is not None and p["n_chunks"] > 1:
            halves.append(p["half_width"])
            judged.append(f"paired, {p['n_chunks']} chunks")
            beyond.append(bool(p["resolved"]))
        else:
            halves.append(math.nan)
            judged.append("quadrature")
            beyond.append(bool(r["beyond noise"]))
    out = out.copy()
    out["paired ± (95%)"], out["judged by"], out["beyond noise"] = halves, judged, beyond
    return out


def compare_builds(tables: dict[str, pd.DataFrame], base: str, other: str) -> dict[str, pd.DataFrame]:
    out = {}
    if not tables["perplexity"].empty:
        out["perplexity"] = compare_quality(tables["perplexity"], "ppl", "ppl_uncertainty", KEYS_PPL, base=base,
                                            other=other)
    if not tables["kld"].empty:
        out["kld"] = with_paired(
            compare_quality(tables["kld"], "kld_mean", "kld_mean_uncertainty", KEYS_KLD, base=base, other=other),
            tables.get("chunks"), base, other)
    if not tables["bench"].empty:
        out["bench"] = compare_speed(tables["bench"], base, other)
    return out
