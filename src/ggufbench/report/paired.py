"""Is A better than B? Paired comparisons of two runs on the same chunks (two quants, two KV types of a quant, two
builds), from results/tables/chunks.parquet.

Every run scores the same tokens against the same baseline, so their errors are correlated: the difference is
judged per chunk, d_k = a_k − b_k, with the standard error of its mean over chunks (chunks taken as
independent; the correlation of tokens inside a chunk is absorbed, since a chunk's mean is one observation).
The interval is Student's t at 95% plus the rounding bound of the per-chunk recovery, so a difference the
printed digits cannot carry is never called. Quadrature (both runs' ± combined as if independent) is shown
beside it: what an unpaired comparison would have said.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

# Student's t, two-sided 95% (0.975 quantile), by degrees of freedom; beyond the table the next lower entry
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
# statistic -> (kld-table column of the run's mean, its ± column, which direction is better)
STATS = {"kld": ("kld_mean", "kld_mean_uncertainty", "lower"),
         "ln_ppl_ratio": ("ln_ppl_ratio", "ln_ppl_ratio_uncertainty", "lower"),
         "same_top_p_pct": ("same_top_p_pct", "same_top_p_pct_uncertainty", "higher")}


def t975(df: int) -> float:
    if df < 1:
        return math.inf
    return T975[max(k for k in T975 if k <= df)]


def paired(a: pd.DataFrame, b: pd.DataFrame, stat: str) -> dict:
    """a, b: chunk rows of two runs (columns chunk, <stat>, <stat>_bound). The mean difference a − b over their
    shared chunks, its paired standard error, the 95% half-width (t plus rounding) and the chunks needed for
    a difference of this size and spread to be resolved (same criterion)."""
    cols = ["chunk", stat, f"{stat}_bound"]
    m = a[cols].merge(b[cols], on="chunk", how="inner", suffixes=("_a", "_b"))
    n = len(m)
    d = m[f"{stat}_a"] - m[f"{stat}_b"]
    mean = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    se = sd / math.sqrt(n) if n > 1 else math.nan
    # the same chunks, not paired: each run's chunk-to-chunk spread, combined as if independent
    unpaired = math.hypot(float(m[f"{stat}_a"].std(ddof=1)), float(m[f"{stat}_b"].std(ddof=1))) / math.sqrt(n) \
        if n > 1 else math.nan
    rounding = float((m[f"{stat}_bound_a"] + m[f"{stat}_bound_b"]).mean()) if n else math.nan
    half = t975(n - 1) * se + rounding if n > 1 else math.nan
    resolved = n > 1 and abs(mean) > half
    needed = None  # chunks at which this mean difference would be 1.96 paired SE from 0 (normal approximation)
    if n > 1 and mean != 0 and sd > 0:
        needed = max(2, math.ceil((1.96 * sd / abs(mean)) ** 2))
    return {"n_chunks": n, "diff": mean, "sd": sd, "paired_se": se, "unpaired_se": unpaired, "rounding": rounding,
            "half_width": half,
            "resolved": bool(resolved), "chunks_needed": needed}


def _verdict(p: dict, a: str, b: str, better: str) -> str:
    if p["n_chunks"] < 2:
        return "too few chunks"
    if not p["resolved"]:
        return "not resolved"
    a_better = (p["diff"] < 0) == (better == "lower")
    return f"{a if a_better else b} better"


@dataclass(frozen=True)
class _Pair:
    """Two runs compared on their shared chunks: A against B, run keys (build, model, ctx, kv, quant)."""

    kind: str      # quant | kv | build
    key: dict      # what the two runs share, as the table's columns
    a: str
    b: str
    ka: tuple
    kb: tuple


def _row(pair: _Pair, stat: str, runs: dict, table: pd.DataFrame) -> dict:
    col, unc, better = STATS[stat]
    p = paired(runs[pair.ka], runs[pair.kb], stat)
    quad = math.nan
    if pair.ka in table.index and pair.kb in table.index:
        quad = math.hypot(float(table.loc[pair.ka][unc]), float(table.loc[pair.kb][unc]))
    return {"comparison": pair.kind, **pair.key, "a": pair.a, "b": pair.b, "stat": stat, **p,
            "quadrature_se": quad, "se_ratio": p["paired_se"] / quad if quad else math.nan,
            "quadrature_resolved": bool(quad and abs(p["diff"]) > 1.96 * quad),
            "verdict": _verdict(p, pair.a, pair.b, better)}


def _quant_pairs(kld: pd.DataFrame, runs: dict):
    """Neighbouring quants of each KLD scoreboard (per build, model, ctx, KV type; ordered by mean KLD)."""
    for (build, model, ctx, kv), g in kld.groupby(["build", "model", "ctx", "kv"], sort=False):
        order = [q for q in g.sort_values("kld_mean")["quant"] if (build, model, ctx, kv, q) in runs]
        key = {"build": build, "model": model, "ctx": int(ctx), "kv": kv}
        for a, b in zip(order, order[1:], strict=False):
            yield _Pair("quant", key, a, b, (build, model, ctx, kv, a), (build, model, ctx, kv, b))


def _kv_pairs(kld: pd.DataFrame, runs: dict):
    """Each KV type against f16 for every quant."""
    for (build, model, ctx, quant), g in kld.groupby(["build", "model", "ctx", "quant"], sort=False):
        f16 = (build, model, ctx, "f16", quant)
        key = {"build": build, "model": model, "ctx": int(ctx), "quant": quant}
        for kv in g["kv"]:
            k = (build, model, ctx, kv, quant)
            if kv != "f16" and k in runs and f16 in runs:
                yield _Pair("kv", key, kv, "f16", k, f16)


def _build_pairs(kld: pd.DataFrame, runs: dict):
    """Each build against the first for every quant and KV type."""
    builds = list(dict.fromkeys(kld["build"]))
    for other in builds[1:]:
        for (model, ctx, kv, quant), _ in kld[kld["build"] == other].groupby(["model", "ctx", "kv", "quant"]):
            ka, kb = (other, model, ctx, kv, quant), (builds[0], model, ctx, kv, quant)
            if ka in runs and kb in runs:
                yield _Pair("build", {"model": model, "ctx": int(ctx), "kv": kv, "quant": quant}, other, builds[0],
                            ka, kb)


def comparisons(chunks: pd.DataFrame, kld: pd.DataFrame,
                stats=("kld", "ln_ppl_ratio", "same_top_p_pct")) -> pd.DataFrame:
    """Neighbouring quants of each KLD scoreboard, each KV type against f16 for every quant, and each build against
    the first for every quant and KV type: every statistic of each pair, paired on the shared chunks."""
    if chunks.empty or kld.empty or "kld" not in chunks:
        return pd.DataFrame()
    ck = chunks[chunks["stage"] == "kld"]
    runs = {k: g for k, g in ck.groupby(["build", "model", "ctx", "kv", "quant"], sort=False)}
    table = kld.set_index(["build", "model", "ctx", "kv", "quant"])
    pairs = [*_quant_pairs(kld, runs), *_kv_pairs(kld, runs), *_build_pairs(kld, runs)]
    return pd.DataFrame([_row(pair, s, runs, table) for pair in pairs for s in stats])


def ranking_holds(chunks: pd.DataFrame, first_n: int) -> pd.DataFrame:
    """Per build, model, ctx and KV type: the quants ranked by mean KLD over the first N chunks and over all,
    and whether the order is the same (where the runs have more than N chunks)."""
    ck = chunks[(chunks["stage"] == "kld")] if not chunks.empty and "kld" in chunks else pd.DataFrame()
    rows = []
    for (build, model, ctx, kv), g in (ck.groupby(["build", "model", "ctx", "kv"], sort=False) if not ck.empty
                                       else []):
        n_all = int(g.groupby("quant")["chunk"].count().min())
        if n_all <= first_n:
            continue
        head = g[g["chunk"] < first_n].groupby("quant")["kld"].mean().sort_values()
        full = g.groupby("quant")["kld"].mean().sort_values()
        rows.append({"build": build, "model": model, "ctx": int(ctx), "kv": kv, "first_n": first_n,
                     "n_chunks": n_all, "order_first_n": " < ".join(head.index),
                     "order_all": " < ".join(full.index), "holds": list(head.index) == list(full.index)})
    return pd.DataFrame(rows)
