"""What a KV-cache type costs at the context you serve: the kv_cost job and its statistics.

The job runs ggufbench-kvscore (llamacpp/kvscore/, built beside llama.cpp's tools) once per model, quant and context:
the reference KV type and every KV type asked for decode the same tokens in lockstep, so a KV type's cost is
measured against the same weights with the reference cache, in host memory that does not grow with the context
(llama-perplexity's KL-divergence pass keeps n_ctx x n_vocab floats; its base file, 2 bytes a logit a token).

Two views, named apart in every record and table:
- second half: the tokens llama-perplexity scores (positions ctx/2 .. ctx-2 of each chunk), its statistics with its
  formulas (mean KLD and its ±, PPL ratio, Δp, same top p): where both run, the numbers agree (docs: the tolerance);
- all positions: every position of the chunk, binned by position (kv_cost.bins): how the cost grows along the
  context. Percentiles come from the scorer's fixed histograms (50 log-spaced bins a decade): approximate, within
  one bin (4.7 %) of the exact order statistic.

Statistics are pure functions of the scorer's sums, testable without llama.cpp, like measure/tuner.py: sums of
chunks combine exactly; a mean's ± is llama-perplexity's (tokens as independent) and, beside it, the spread of the
chunks' means (a chunk's mean is one observation: the correlation of tokens inside a chunk is absorbed); a KV type
against the reference is paired on the same chunks, and the verdict "free / costs / unresolved" says how many
chunks would resolve it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..core.config import kv_pair
from ..core.errors import ToolFailed
from ..core.io import record, tool_info, write_json
from ..core.job import Job
from ..core.units import GIB
from ..llamacpp.emulate import emulated_gpu
from ..llamacpp.features import require_cache_types
from ..llamacpp.gguf import gguf_metadata, kv_shape
from ..llamacpp.kvscore_output import SCORER, Histogram, KvScore, ScorerCall, run_kvscore
from ..llamacpp.tokenize import count_tokens
from ..sources.manifest import model_path
from .provenance import provenance
from .quality import MIN_SCORED_TOKENS, _mem_available
from .shards.stats import mean_and_uncertainty

Z95 = 1.96
# Student's t, two-sided 95% (0.975 quantile), by degrees of freedom; beyond the table the next lower entry
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
PERCENT_LEVELS = {"p99_9": 0.999, "p99": 0.99, "p95": 0.95, "p90": 0.90, "median": 0.5, "p10": 0.10, "p5": 0.05,
                  "p1": 0.01, "p0_1": 0.001}
DP_LEVELS = {**PERCENT_LEVELS, "p75": 0.75, "p25": 0.25}
PERCENTILES_NOTE = ("percentiles read from the scorer's fixed histograms (50 log-spaced bins a decade): within one "
                    "bin (4.7 %) of the exact value; maxima exact")


def t975(df: int) -> float:
    if df < 1:
        return math.inf
    return T975[max(k for k in T975 if k <= df)]


# Sums ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sums:
    """llama-perplexity's KL-divergence sums (kl_divergence_result) over a set of tokens: the scorer prints them per
    chunk, cell and view; sums of disjoint sets of tokens add (maxima take the larger)."""

    count: int = 0
    same_top: int = 0
    nonfinite: int = 0
    sum_nll: float = 0.0
    sum_nll2: float = 0.0
    sum_nll_base: float = 0.0
    sum_nll_base2: float = 0.0
    sum_nll_nll_base: float = 0.0
    sum_kld: float = 0.0
    sum_kld2: float = 0.0
    sum_dp: float = 0.0
    sum_dp2: float = 0.0
    sum_dp4: float = 0.0
    max_kld: float = 0.0
    max_abs_dp: float = 0.0

    @classmethod
    def of(cls, row) -> Sums:
        """A scorer row (ChunkRow, or a dict with the same names) as Sums."""
        get = row.get if isinstance(row, dict) else lambda k: getattr(row, k)
        return cls(**{f.name: get(f.name) for f in fields(cls)})

    def __add__(self, other: Sums) -> Sums:
        out = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            out[f.name] = max(a, b) if f.name.startswith("max_") else a + b
        return Sums(**out)


def combine(rows: Iterable) -> Sums:
    """The sums of several chunks (or bins) as one: exact, whatever the order."""
    total = Sums()
    for r in rows:
        total = total + (r if isinstance(r, Sums) else Sums.of(r))
    return total


def covariance(a: float, b: float, ab: float, n: int) -> float:
    if n < 10:
        return 0.0
    return (ab / n - (a / n) * (b / n)) / (n - 1)


def summary(s: Sums) -> dict:
    """Every statistic llama-perplexity prints in KL-divergence mode (the names of perplexity_output.KldResult) from
    the sums, with its formulas; Q is the cell, base the reference."""
    n = s.count
    ln_q, ln_q_u = mean_and_uncertainty(s.sum_nll, s.sum_nll2, n)
    ln_b, ln_b_u = mean_and_uncertainty(s.sum_nll_base, s.sum_nll_base2, n)
    cov = covariance(s.sum_nll, s.sum_nll_base, s.sum_nll_nll_base, n)
    ppl_q, ppl_b = math.exp(ln_q), math.exp(ln_b)
    ratio, ratio_u = ln_q - ln_b, math.sqrt(max(ln_q_u ** 2 + ln_b_u ** 2 - 2 * cov, 0.0))
    kld, kld_u = mean_and_uncertainty(s.sum_kld, s.sum_kld2, n)
    dp, dp_u = mean_and_uncertainty(s.sum_dp, s.sum_dp2, n)
    mse, mse_u = mean_and_uncertainty(s.sum_dp2, s.sum_dp4, n)
    rms = math.sqrt(mse)
    top = s.same_top / n if n else math.nan
    ppl_u_q, ppl_u_b = ppl_q * ln_q_u, ppl_b * ln_b_u
    return {
        "count": n,
        "ppl_q": ppl_q, "ppl_q_uncertainty": ppl_u_q, "ppl_base": ppl_b, "ppl_base_uncertainty": ppl_u_b,
        "ppl_cor_pct": 100 * cov / (ln_q_u * ln_b_u) if ln_q_u and ln_b_u else math.nan,
        "ln_ppl_ratio": ratio, "ln_ppl_ratio_uncertainty": ratio_u,
        "ppl_ratio": math.exp(ratio), "ppl_ratio_uncertainty": math.exp(ratio) * ratio_u,
        "ppl_diff": ppl_q - ppl_b,
        "ppl_diff_uncertainty": math.sqrt(max(ppl_u_q ** 2 + ppl_u_b ** 2 - 2 * ppl_q * ppl_b * cov, 0.0)),
        "kld_mean": kld, "kld_mean_uncertainty": kld_u, "kld_max": s.max_kld,
        "dp_mean_pct": 100 * dp, "dp_mean_pct_uncertainty": 100 * dp_u, "dp_max_abs_pct": 100 * s.max_abs_dp,
        "rms_dp_pct": 100 * rms, "rms_dp_pct_uncertainty": 100 * (0.5 / rms * mse_u if rms else 0.0),
        "same_top_p_pct": 100 * top,
        "same_top_p_pct_uncertainty": 100 * math.sqrt(top * (1 - top) / (n - 1)) if n > 1 else math.nan,
    }


# Percentiles from the histograms -----------------------------------------------------------------------------------

def _segments_up(h: Histogram, sign: float = 1.0) -> list[tuple[int, float, float]]:
    """(count, value low, value high) of a histogram's grid bins, by increasing |value|."""
    step = 1.0 / h.per_decade
    out = []
    for i in sorted(h.counts):
        a, b = 10 ** (h.lo + i * step), 10 ** (h.lo + (i + 1) * step)
        out.append((h.counts[i], sign * a, sign * b))
    return out


def _order_statistic(segments: list[tuple[int, float, float]], k: int) -> float:
    """The k-th smallest value (0-based), values spread evenly inside their bin."""
    seen = 0
    for count, a, b in segments:
        if k < seen + count:
            return a + (b - a) * (k - seen + 0.5) / count
        seen += count
    return segments[-1][2]


def _quantile(segments: list[tuple[int, float, float]], fraction: float) -> float:
    """llama-perplexity's percentile (the order statistics at fraction x (N-1), linearly interpolated), each order
    statistic read from its bin."""
    total = sum(c for c, _, _ in segments)
    if total == 0:
        return math.nan
    p = min(max(fraction, 0.0), 1.0) * (total - 1)
    i = int(p)
    lo = _order_statistic(segments, i)
    return lo + (p - i) * (_order_statistic(segments, min(i + 1, total - 1)) - lo)


def kld_segments(h: Histogram) -> list[tuple[int, float, float]]:
    """KLD values in order: below the grid (0, or a rounding's negative) as 0, the grid, above it at its top."""
    top = 10.0 ** h.hi
    return [(h.below, 0.0, 0.0), *_segments_up(h), (h.above, top, top)]


def dp_segments(pos: Histogram, neg: Histogram) -> list[tuple[int, float, float]]:
    """dp values in order: the negative ones by decreasing |dp|, those below the grid as 0, the positive ones."""
    down = [(c, b, a) for c, a, b in reversed(_segments_up(neg, -1.0))]
    top = 10.0 ** pos.hi
    return [(neg.above, -top, -top), *down, (pos.below + neg.below, 0.0, 0.0), *_segments_up(pos),
            (pos.above, top, top)]


def percentiles(segments: list[tuple[int, float, float]], levels: dict[str, float], scale: float = 1.0) -> dict:
    return {k: scale * _quantile(segments, q) for k, q in levels.items()}


# Agreement with llama-perplexity -----------------------------------------------------------------------------------
# Where both run (same build, model, text, ctx, chunks, KV types), the second-half statistics are llama-perplexity's
# but for its base file, which keeps each reference log-probability as a 16-bit integer above a per-row floor:
# - above the floor (max logit - 16), a value is off by at most half a step, the step (max - min logit, at most 16)
#   / 65535 <= 2.44e-4: each token's KLD moves by a zero-mean error of standard deviation <= step / sqrt(12) (7.0e-5),
#   its mean by about that / sqrt(tokens); "same top" flips only where the reference's two best logits are within a
#   step;
# - at or below the floor every value is stored as the floor: a next token that unlikely (log p below about -16) is
#   read back as likelier than it was, so llama-perplexity's KLD-mode PPL(base) comes out lower than its own baseline
#   pass's PPL, and ln(PPL(Q)/PPL(base)) higher (measured: 3.3e-4 in ln at ctx 2048 on SmolLM2, 0 at 512). The
#   scorer keeps floats: its PPL(base) is the baseline pass's own. KLD is not affected (both leave the tokens below
#   -16 out of the sum).
# llama-perplexity prints 6 decimals (3 for percent values, 4 for PPL mode's estimate): half a unit is added.
# Percentiles: the scorer's histograms (one bin, 4.7 %) plus the stored values' own error (llama-perplexity's lowest
# KLD percentiles come out negative: a true KL divergence never does).
STORE_STEP = 16 / 65535
STORE_SD = STORE_STEP / math.sqrt(12)


def agreement_bounds(stat: str, n_tokens: int, value: float) -> tuple[float, float]:
    """How far (low, high) the scorer's second-half statistic may lie from llama-perplexity's printed one, over
    n_tokens scored tokens (5 standard deviations where the error is statistical; one-sided where the base file's
    floor biases llama-perplexity's value: its KLD-mode PPL(base) low, its ln ratio high)."""
    mean_sd = STORE_SD / math.sqrt(n_tokens)
    if stat == "ppl_base":  # KLD mode's PPL(base), from the stored values: the scorer's may be higher
        return -(STORE_STEP / 2 * value + 5e-7), math.inf
    if stat == "ln_ppl_ratio":
        return -math.inf, STORE_STEP / 2 + 5e-7
    if stat in ("ppl_base_pass", "ln_ppl_ratio_vs_base_pass"):  # against the baseline pass's own PPL (4 decimals)
        tol = 5e-5 + 1e-6 * value if stat == "ppl_base_pass" else 5e-5 / 2 + 1e-6
        return -tol, tol
    if stat.startswith("kld_p") or stat == "kld_median":
        tol = 0.05 * abs(value) + 3e-5
    elif stat.startswith("dp_p") or stat == "dp_median":
        tol = 0.05 * abs(value) + 100 * STORE_STEP / 2 + 5e-4
    else:
        tol = {"ppl_q": 1e-6 * value + 5e-7, "kld_mean": 5 * mean_sd + 5e-7 + 1e-3 * value,
               "kld_mean_uncertainty": 0.05 * value + 5e-7, "dp_mean_pct": 100 * 5 * mean_sd + 5e-4,
               "rms_dp_pct": 0.01 * value + 5e-4, "same_top_p_pct": 100 * 2 / n_tokens + 5e-4}[stat]
    return -tol, tol


def agreement(half: dict, kld, base=None) -> list[dict]:
    """The scorer's second-half statistics (cell_result(...)["second_half"]) against llama-perplexity's KLD pass of
    the same cell (perplexity_output.KldResult) and, given, its baseline pass (PerplexityResult): per statistic both
    values, the difference, its bounds and whether it is within them."""
    lp = kld.flat()
    ours = {**{k: half[k] for k in ("ppl_q", "ppl_base", "ln_ppl_ratio", "kld_mean", "kld_mean_uncertainty",
                                    "dp_mean_pct", "rms_dp_pct", "same_top_p_pct")},
            **{f"kld_{k}": v for k, v in half["kld_percentiles"].items()},
            **{f"dp_{k}": v for k, v in half["dp_percentiles_pct"].items()}}
    theirs = {k: lp.get(k, lp.get(f"{k}_pct")) for k in ours}
    if base is not None:
        ours |= {"ppl_base_pass": half["ppl_base"], "ln_ppl_ratio_vs_base_pass": half["ln_ppl_ratio"]}
        theirs |= {"ppl_base_pass": base.ppl, "ln_ppl_ratio_vs_base_pass": math.log(lp["ppl_q"] / base.ppl)}
    rows = []
    for k, v in ours.items():
        if theirs[k] is None:
            continue
        lo, hi = agreement_bounds(k, half["count"], abs(theirs[k]))
        d = v - theirs[k]
        rows.append({"stat": k, "scorer": v, "llama_perplexity": theirs[k], "diff": d, "low": lo, "high": hi,
                     "agrees": lo <= d <= hi})
    return rows


# Per chunk, paired, verdict ----------------------------------------------------------------------------------------

def chunk_values(s: Sums) -> dict:
    """One chunk's means (one observation each for the chunk-to-chunk spread)."""
    n = s.count
    return {"count": n, "kld": s.sum_kld / n, "ln_ppl_ratio": (s.sum_nll - s.sum_nll_base) / n,
            "same_top_p_pct": 100 * s.same_top / n, "dp_mean_pct": 100 * s.sum_dp / n,
            "rms_dp_pct": 100 * math.sqrt(s.sum_dp2 / n)}


def chunks_needed(diff: float, sd: float, margin: float = 0.0, z: float = Z95) -> int | None:
    """Chunks at which a mean `diff` with chunk-to-chunk spread `sd` would sit z standard errors from `margin`
    (normal approximation); None where it cannot (no spread, or diff at the margin)."""
    gap = abs(diff - margin)
    if not sd > 0 or not gap > 0 or not math.isfinite(sd):
        return None
    return max(2, math.ceil((z * sd / gap) ** 2))


@dataclass(frozen=True)
class Paired:
    """A mean over chunks of per-chunk values (a − b where two runs are paired on the same chunks), with its standard
    error from the chunks' spread and Student's t 95 % half-width."""

    n_chunks: int
    diff: float
    sd: float
    se: float
    half_width: float
    resolved: bool          # the interval excludes 0
    chunks_needed: int | None   # to resolve a mean of this size from 0 with this spread

    @property
    def low(self) -> float:
        return self.diff - self.half_width

    @property
    def high(self) -> float:
        return self.diff + self.half_width

    def to_dict(self) -> dict:
        return asdict(self)


def paired(a: Sequence[float], b: Sequence[float] | None = None) -> Paired:
    """The paired difference a_k − b_k over the same chunks k (b None: a_k alone, already a paired quantity such
    as a chunk's ln(PPL(Q)/PPL(base)) or its KLD against the reference)."""
    if b is not None and len(a) != len(b):
        raise ValueError(f"paired values over {len(a)} and {len(b)} chunks: pair them on the same chunks")
    d = [x - y for x, y in zip(a, b, strict=True)] if b is not None else list(a)
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, False, None)
    mean = sum(d) / n
    if n < 2:
        return Paired(n, mean, math.nan, math.nan, math.inf, False, None)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    half = t975(n - 1) * se
    return Paired(n, mean, sd, se, half, bool(abs(mean) > half), chunks_needed(mean, sd))


def verdict(p: Paired, tolerance: float) -> dict:
    """Is the KV type free? From a paired mean over chunks (a KLD, or a ln PPL ratio) and a tolerance on it: `free`
    where the whole 95 % interval is at or below the tolerance, `costs` where it is all above, else `unresolved`,
    with the chunks at which this mean and spread would decide it."""
    if p.n_chunks < 2:
        return {"verdict": "too few chunks", "tolerance": tolerance, "low": math.nan, "high": math.nan,
                "chunks_needed": None}
    if p.high <= tolerance:
        word, needed = "free", None
    elif p.low > tolerance:
        word, needed = "costs", None
    else:
        word, needed = "unresolved", chunks_needed(p.diff, p.sd, tolerance)
    return {"verdict": word, "tolerance": tolerance, "low": p.low, "high": p.high, "chunks_needed": needed}


# A scorer run as results --------------------------------------------------------------------------------------------

def view_result(score: KvScore, cell: int, view: str = "second_half", bin: int | None = None) -> dict:
    """One cell's statistics over one view: llama-perplexity's (summary), the chunk-clustered ± of mean KLD and the
    paired statistics over chunks."""
    rows = sorted(score.cell_rows(cell, view, bin), key=lambda r: r.chunk)
    per_chunk = [chunk_values(Sums.of(r)) for r in rows if r.count]
    out = summary(combine(rows))
    for stat in ("kld", "ln_ppl_ratio", "same_top_p_pct"):
        out[f"paired_{stat}"] = paired([c[stat] for c in per_chunk]).to_dict()
    out["kld_mean_se_chunks"] = out["paired_kld"]["se"]
    return out


def position_rows(score: KvScore, cell: int) -> list[dict]:
    """Every position bin of one cell: its statistics, and the paired growth of its mean KLD over the first bin's
    (per chunk: bin − first bin) with how many chunks would resolve it."""
    first = {r.chunk: Sums.of(r) for r in score.cell_rows(cell, "bin", 0)}
    out = []
    for b, (lo, hi) in enumerate(score.bins):
        rows = sorted(score.cell_rows(cell, "bin", b), key=lambda r: r.chunk)
        res = view_result(score, cell, "bin", b)
        grow = paired([chunk_values(Sums.of(r))["kld"] for r in rows],
                      [chunk_values(first[r.chunk])["kld"] for r in rows])
        out.append({"bin": b, "pos_lo": lo, "pos_hi": hi, **res, "kld_growth_vs_first": grow.to_dict()})
    return out


def cell_result(score: KvScore, cell: int) -> dict:
    c = score.cells[cell]
    half = view_result(score, cell)
    h = score.hist(cell)
    half["kld_percentiles"] = percentiles(kld_segments(h.kld), PERCENT_LEVELS)
    half["dp_percentiles_pct"] = percentiles(dp_segments(h.dp_pos, h.dp_neg), DP_LEVELS, 100.0)
    every = summary(combine(r for r in score.rows if r.cell == cell and r.view == "bin"))
    return {"kv": c.kv, "type_k": c.type_k, "type_v": c.type_v, "model": c.model, "second_half": half,
            "all_positions": every, "positions": position_rows(score, cell),
            "chunks": [{"chunk": r.chunk, **chunk_values(Sums.of(r))}
                       for r in sorted(score.cell_rows(cell), key=lambda r: r.chunk)]}


def kv_cost_result(score: KvScore) -> dict:
    return {
        "n_ctx": score.n_ctx, "n_chunks": score.n_chunk, "n_tokens": score.n_tokens, "n_vocab": score.n_vocab,
        "n_batch": score.n_batch, "scored_per_chunk": score.n_ctx - 1 - score.first, "positions_per_chunk":
        score.n_ctx - 1, "tokens_fnv1a64": score.tokens_fnv1a64, "ref_kv": score.ref.kv,
        "cells": [cell_result(score, i) for i in range(len(score.cells))],
        "memory": {"peak_rss_bytes": score.peak_rss_bytes, "rss_loaded_bytes": score.rss_loaded_bytes,
                   "rss_end_bytes": score.rss_bytes, "logits_host_bytes": score.logits_host_bytes,
                   "kv_state_bytes": dict(zip([score.ref.kv + " (ref)", *(c.kv for c in score.cells)],
                                              score.kv_state_bytes, strict=False)),
                   "llama_perplexity_logits_bytes": score.n_ctx * score.n_vocab * 4},
        "seconds": score.seconds, "percentiles": PERCENTILES_NOTE,
    }


# Table rows (report/tables.py) ----------------------------------------------------------------------------------

_ROW_STATS = ("count", "kld_mean", "kld_mean_uncertainty", "kld_mean_se_chunks", "kld_max", "ln_ppl_ratio",
              "ln_ppl_ratio_uncertainty", "ppl_q", "ppl_base", "dp_mean_pct", "dp_mean_pct_uncertainty", "rms_dp_pct",
              "same_top_p_pct", "same_top_p_pct_uncertainty")


def kv_cost_rows(rec: dict) -> list[dict]:
    """One row per KV type of a kv_cost record: both views named apart (half_* is llama-perplexity's second half,
    all_* every position), the paired statistics over chunks, approximate percentiles, memory."""
    res, prov, params = rec["result"], rec["provenance"], rec["params"]
    base = {k: prov.get(k) for k in ("build", "model", "quant", "file_sha256", "corpus", "corpus_sha256", "backend",
                                     "gpu_name")}
    base |= {"ctx": res["n_ctx"], "ref_kv": res["ref_kv"], "n_chunks": res["n_chunks"],
             "tokens_fnv1a64": res["tokens_fnv1a64"], "peak_rss_bytes": res["memory"]["peak_rss_bytes"],
             "seconds": res["seconds"], "threads": params.get("threads")}
    rows = []
    for c in res["cells"]:
        row = {**base, "kv": c["kv"], "type_k": c["type_k"], "type_v": c["type_v"]}
        for view, key in (("half", "second_half"), ("all", "all_positions")):
            row |= {f"{view}_{s}": c[key].get(s) for s in _ROW_STATS}
        for stat in ("kld", "ln_ppl_ratio", "same_top_p_pct"):
            p = c["second_half"][f"paired_{stat}"]
            row |= {f"paired_{stat}_{k}": p[k] for k in ("n_chunks", "diff", "sd", "se", "half_width", "resolved",
                                                          "chunks_needed")}
        row |= {f"half_kld_{k}": v for k, v in c["second_half"]["kld_percentiles"].items()}
        rows.append(row)
    return rows


def row_verdict(row, tolerance: float) -> dict:
    """verdict() of a kv_cost table row (its paired mean KLD over chunks, second half) against a tolerance."""
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k)
    p = Paired(*(get(f"paired_kld_{k}") for k in ("n_chunks", "diff", "sd", "se", "half_width", "resolved",
                                                   "chunks_needed")))
    return verdict(Paired(int(p.n_chunks), *(float(x) for x in (p.diff, p.sd, p.se, p.half_width)),
                          bool(p.resolved), p.chunks_needed), tolerance)


def kv_cost_position_rows(rec: dict) -> list[dict]:
    """One row per KV type and position bin of a kv_cost record (the position curve)."""
    res, prov = rec["result"], rec["provenance"]
    base = {"build": prov.get("build"), "model": prov.get("model"), "quant": prov.get("quant"), "ctx": res["n_ctx"],
            "ref_kv": res["ref_kv"], "n_chunks": res["n_chunks"]}
    rows = []
    for c in res["cells"]:
        for b in c["positions"]:
            p, g = b["paired_kld"], b["kld_growth_vs_first"]
            rows.append({**base, "kv": c["kv"], "bin": b["bin"], "pos_lo": b["pos_lo"], "pos_hi": b["pos_hi"],
                         **{s: b.get(s) for s in _ROW_STATS}, "kld_half_width": p["half_width"],
                         "kld_resolved": p["resolved"], "growth_vs_first": g["diff"],
                         "growth_half_width": g["half_width"], "growth_resolved": g["resolved"],
                         "growth_chunks_needed": g["chunks_needed"]})
    return rows


# The job -----------------------------------------------------------------------------------------------------------

def require_scorer(build: dict) -> None:
    """The build has the scorer: builds made before it existed (or where it did not compile) lack it."""
    if SCORER not in build.get("tools", []):
        why = (build.get("missing_tools") or {}).get(SCORER) or "the build was made before ggufbench built it"
        raise ToolFailed(f"kv_cost: build {build.get('build')} has no {SCORER} ({why}); rebuild it: snakemake "
                         f"--forcerun build_llama_cpp (its other results stay valid)")


def scorer_memory(n_cells: int, batch: int, n_vocab: int) -> int:
    """Host bytes the scorer's logits take: one batch of logits per context (reference + cells), at any context."""
    return (1 + n_cells) * batch * n_vocab * 4


def precheck_scorer(job: Job, model: Path, corpus, *, ctx: int, n_cells: int, batch: int) -> int:
    """Before the run: ctx within the model's training context, the scorer's logits within free memory, and the
    corpus holding at least one chunk of ctx tokens with MIN_SCORED_TOKENS scored. Returns the corpus's tokens."""
    n_ctx_train = kv_shape(model).get("n_ctx_train")
    if n_ctx_train and ctx > n_ctx_train:
        raise ToolFailed(f"kv_cost.ctx {ctx:,} is beyond the model's training context ({n_ctx_train:,}, {model.name}): "
                         f"a KV type's cost there is extrapolation's; use at most {n_ctx_train}")
    need = scorer_memory(n_cells, batch, gguf_metadata(model)["n_vocab"])
    free = _mem_available()
    if free is not None and need > free:
        raise ToolFailed(f"kv_cost: the scorer keeps {1 + n_cells} x {batch} logits rows ({need / GIB:.1f} GiB) and "
                         f"{free / GIB:.1f} GiB is available: lower kv_cost.batch or score fewer KV types per run")
    n_tokens = count_tokens(Path(job.tool).with_name("llama-tokenize"), model, Path(corpus), job.log)
    if n_tokens < ctx or ctx - 1 - ctx // 2 < MIN_SCORED_TOKENS:
        raise ToolFailed(f"kv_cost: the corpus has {n_tokens:,} tokens, at least one context of {ctx:,} (scoring "
                         f"{MIN_SCORED_TOKENS}+ tokens) is needed; use a longer corpus or a smaller kv_cost.ctx")
    return n_tokens


@dataclass(frozen=True)
class KvCostCells:
    """What one scorer run measures: every KV type in kvs against ref_kv, on the same tokens, at context ctx
    (chunks: how many, None for every chunk the corpus holds; bins: position bin edges of the all-positions view;
    batch: tokens per decode, capped at ctx). The rule's params (workflow/deps.py kv_cost_cells) and ctx."""

    ctx: int
    ref_kv: str
    kvs: tuple[str, ...]
    chunks: int | None = None
    bins: tuple[int, ...] = (0,)
    batch: int = 512


def kv_cost_job(job: Job, *, manifest, corpus, corpus_record, cells: KvCostCells) -> dict:
    """One scorer run over one quant's GGUF: one record with every KV type's cost against the reference."""
    require_scorer(job.build)
    require_cache_types(job.build, [cells.ref_kv, *cells.kvs], "kv_cost.kv / kv_cost.ref_kv")
    model = model_path(manifest)
    batch = min(int(cells.batch), cells.ctx)
    n_tokens = precheck_scorer(job, model, corpus, ctx=cells.ctx, n_cells=len(cells.kvs), batch=batch)
    call = ScorerCall(models=(str(model),), text=str(corpus), ctx=cells.ctx, cells=tuple(cells.kvs),
                      ref=cells.ref_kv, chunks=int(cells.chunks) if cells.chunks else None, batch=batch,
                      threads=job.threads, n_gpu_layers=job.run.get("n_gpu_layers") if job.gpu_build else None,
                      flash_attn=str(job.run.get("flash_attn", "auto")), bins=tuple(cells.bins))
    with emulated_gpu(job.gpu.get("emulate_free_gib"), job.gpu_build) as emulation:
        r, score = run_kvscore(job.tool, call, job.log)
    job.note(f"{SCORER}: {score.n_chunk} chunks of {cells.ctx} over {n_tokens:,} tokens, peak RSS "
             f"{score.peak_rss_bytes / GIB:.2f} GiB")
    params = {"ctx": cells.ctx, "ref_kv": cells.ref_kv, "kvs": list(cells.kvs),
              "kv_pairs": {kv: list(kv_pair(kv)) for kv in cells.kvs}, "chunks": cells.chunks, "bins": list(cells.bins),
              "batch": batch, "threads": job.threads, **job.run}
    rec = record("kv_cost", provenance(job.build_json, manifest, corpus_record, r.output, emulation), params,
                 kv_cost_result(score), tool_info(call.command(job.tool), r.wall_seconds))
    write_json(job.out["record"], rec)
    return rec
