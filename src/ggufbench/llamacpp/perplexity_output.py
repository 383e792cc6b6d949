"""Parsers for llama-perplexity output: PPL mode and KL-divergence mode.

llama-perplexity exits 0 on most failures: too few tokens, decode failure, NaN, an unreadable or
mismatched logits file, fewer than 100 scored tokens. So success is "exit 0 AND the final lines with finite
numbers"; everything else raises ToolFailed naming what went wrong. These are pure functions over the text
the tool printed (stdout and stderr together), tested on real captured output in tests/data/.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from ..core.errors import ToolFailed

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf)"
_PM = r"\s*(?:±|\+/-)\s*"

# Known failure lines, most specific first: (regex, explanation for the user).
_FAILURES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"you need at least (\d+) tokens to evaluate perplexity with a context of (\d+)"),
     "too few tokens: the corpus is shorter than two contexts ({0} tokens needed for ctx {1}); "
     "use a longer corpus or a smaller ctx"),
    (re.compile(r"tokenizes to only (\d+) tokens"), "the corpus tokenizes to only {0} tokens"),
    (re.compile(r"does not look like a file containing log-probabilities"),
     "the baseline logits file is not a llama.cpp logits file (unreadable or corrupt); delete it and "
     "rerun the baseline pass"),
    (re.compile(r"inconsistent vocabulary \((\d+) vs (\d+)\)"),
     "the baseline logits were written with another vocabulary ({0} tokens) than this model's ({1}): "
     "baseline and quant must be the same model"),
    (re.compile(r"failed reading log-probs for chunk (\d+)"),
     "the baseline logits file ends early (no log-probs for chunk {0}): it is truncated; rerun the "
     "baseline pass"),
    (re.compile(r"failed reading (?:evaluation tokens|n_vocab, n_chunk) from"),
     "the baseline logits file is truncated or corrupt in its header"),
    (re.compile(r"failed to decode|llama_decode\(\) failed|failed to eval"),
     "llama_decode failed (out of memory, or a backend error: see the log above it)"),
    (re.compile(r"Unexpected negative standard deviation"),
     "the perplexity's standard deviation came out negative (too few tokens or NaN logits)"),
    (re.compile(r"unable to load model|failed to load model"), "the model file could not be loaded"),
    (re.compile(r"failed to open ([^\n]+)"), "llama-perplexity could not open {0}"),
]


def explain(failures: list[tuple[re.Pattern[str], str]], text: str) -> str | None:
    """The first failure of the table (regex, explanation with the match's groups) found in text, explained."""
    for pattern, explanation in failures:
        m = pattern.search(text)
        if m:
            return explanation.format(*m.groups())
    return None


def diagnose(text: str) -> str | None:
    """The first known failure found in llama-perplexity's output, explained; None if none is found."""
    return explain(_FAILURES, text)


def _fail(text: str, missing: str) -> ToolFailed:
    why = diagnose(text)
    msg = f"llama-perplexity exited without {missing}"
    if why:
        msg += f": {why}"
    else:
        msg += "; no known error line was found (see the log for the tool's own output)"
    return ToolFailed(msg)


def _finite(name: str, *values: float) -> None:
    for v in values:
        if not math.isfinite(v):
            raise ToolFailed(f"llama-perplexity printed a non-finite {name} ({v}): the run produced NaN/inf "
                             "logits (a broken quant, an unsupported KV type on this backend, or overflow)")


def _run_info(text: str) -> dict:
    """How llama-perplexity ran: chunks, context, batch, and chunks per batch (n_seq). Its summary line says so in
    every pass of a 2026 llama.cpp; a 2025 one (4227c9b) prints none in a KL-divergence pass, which evaluates
    one chunk at a time (n_seq 1, n_batch = n_ctx): there the context's own lines say it (n_chunks comes from the
    chunk table, see parse_kld)."""
    info: dict = {}
    m = re.search(r"(?:calculating perplexity|computing) over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), "
                  r"n_seq=(\d+)", text)
    if m:
        info.update(n_chunks=int(m.group(1)), n_ctx=int(m.group(2)), n_batch=int(m.group(3)),
                    n_seq=int(m.group(4)))
    else:
        ctx = {k: int(v) for k, v in re.findall(r"llama_context: (n_seq_max|n_ctx_per_seq|n_batch)\s*=\s*(\d+)",
                                                text)}
        if len(ctx) == 3:
            info.update(n_ctx=ctx["n_ctx_per_seq"], n_batch=ctx["n_batch"], n_seq=ctx["n_seq_max"])
    m = re.search(r"([\d.]+) seconds per pass", text)
    if m:
        info["seconds_per_pass"] = float(m.group(1))
    return info


@dataclass
class PerplexityResult:
    """One PPL measurement: `Final estimate: PPL = X +/- Y` plus the run's shape."""

    ppl: float
    ppl_uncertainty: float
    n_chunks: int | None = None
    n_ctx: int | None = None
    n_batch: int | None = None
    n_seq: int | None = None
    seconds_per_pass: float | None = None
    chunk_ppl: list[float] = field(default_factory=list)
    chunks: list[dict] = field(default_factory=list)  # per chunk, recovered from the running values

    def to_dict(self) -> dict:
        return asdict(self)


def parse_perplexity(text: str) -> PerplexityResult:
    m = re.search(rf"Final estimate: PPL = {_NUM} \+/- {_NUM}", text)
    if not m:
        raise _fail(text, "its 'Final estimate: PPL = X +/- Y' line")
    ppl, unc = float(m.group(1)), float(m.group(2))
    _finite("PPL", ppl, unc)
    printed = re.findall(rf"\[\d+\]{_NUM}", text)
    running = [float(x) for x in printed]
    per = per_chunk(running, [_half_unit(x) for x in printed], "log")
    chunks = [{"chunk": i, "ln_ppl": v, "ln_ppl_bound": b} for i, (v, b) in enumerate(per)]
    return PerplexityResult(ppl=ppl, ppl_uncertainty=unc, chunk_ppl=running, chunks=chunks, **_run_info(text))


# Per-chunk values ----------------------------------------------------------------------------------------
# llama-perplexity prints running statistics after each chunk: means over the chunks so far, every chunk
# scoring the same number of tokens. Chunk k's own value follows from two consecutive running values:
#   mean:  x_k = k·m_k − (k−1)·m_{k−1};  log (PPL = exp of a mean): the same on ln m;  rms: the same on m².
# Exact but for the printed digits: with m printed to ±u, |error(x_k)| <= (2k−1)·u (u scaled by the
# derivative for log and rms); the bound is kept beside each value.


def _half_unit(printed: str) -> float:
    """Half a unit of the last printed digit: 0.42677 -> 5e-6."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return 0.5 * 10.0 ** -decimals


def per_chunk(running: list[float], half_units: list[float], kind: str) -> list[tuple[float, float]]:
    """(value, rounding bound) of every chunk from the running values (kind: mean, log, rms)."""
    out = []
    prev = 0.0
    for k, (m, u) in enumerate(zip(running, half_units, strict=True), start=1):
        if kind == "log":
            cur, du = math.log(m), u / m
        elif kind == "rms":
            cur, du = m * m, 2 * m * u
        else:
            cur, du = m, u
        total = k * cur
        x, bound = total - prev, (2 * k - 1) * du
        prev = total
        if kind == "rms":  # from the mean square back to an RMS (the bound through the derivative)
            r = math.sqrt(max(x, 0.0))
            x, bound = r, (bound / (2 * r) if r > 0 else math.sqrt(bound))
        out.append((x, bound))
    return out


# The KLD-mode chunk table: statistic -> how its running value recovers per chunk
_CHUNK_COLUMNS = (("ln_ppl_q", "log"), ("ln_ppl_ratio", "mean"), ("kld", "mean"), ("rms_dp_pct", "rms"),
                  ("same_top_p_pct", "mean"))
_CHUNK_ROW = re.compile(rf"^\s*(\d+)\s+{_NUM}{_PM}{_NUM}\s+{_NUM}{_PM}{_NUM}\s+{_NUM}{_PM}{_NUM}\s+"
                        rf"{_NUM}{_PM}{_NUM}\s*%\s+{_NUM}{_PM}{_NUM}\s*%", re.M)


def kld_chunks(text: str) -> list[dict]:
    """Per-chunk values of a KLD-mode run, from its table of running statistics (chunk, PPL, ln ratio, KLD,
    Δp RMS, same top p; each after chunk k)."""
    rows = _CHUNK_ROW.findall(text)
    out = [{"chunk": i} for i in range(len(rows))]
    for col, (name, kind) in enumerate(_CHUNK_COLUMNS):
        printed = [r[1 + 2 * col] for r in rows]
        values = per_chunk([float(x) for x in printed], [_half_unit(x) for x in printed], kind)
        for entry, (v, b) in zip(out, values, strict=True):
            entry[name], entry[f"{name}_bound"] = v, b
    return out


# KLD mode ---------------------------------------------------------------------------------------------

# "label in the tool" -> column stem. Values with ± get <stem> and <stem>_uncertainty.
_PPL_STATS = {
    "Mean PPL(Q)": "ppl_q",
    "Mean PPL(base)": "ppl_base",
    "Mean ln(PPL(Q)/PPL(base))": "ln_ppl_ratio",
    "Mean PPL(Q)/PPL(base)": "ppl_ratio",
    "Mean PPL(Q)-PPL(base)": "ppl_diff",
}
_PERCENTILES = {"Maximum": "max", "99.9%": "p99_9", "99.0%": "p99", "95.0%": "p95", "90.0%": "p90",
                "75.0%": "p75", "Median": "median", "25.0%": "p25", "10.0%": "p10", "5.0%": "p5",
                "1.0%": "p1", "0.1%": "p0_1", "Minimum": "min"}


@dataclass
class KldResult:
    """Every statistic llama-perplexity prints in KL-divergence mode. Percent values stay in percent."""

    ppl_q: float
    ppl_q_uncertainty: float
    ppl_base: float
    ppl_base_uncertainty: float
    ppl_cor_pct: float
    ln_ppl_ratio: float
    ln_ppl_ratio_uncertainty: float
    ppl_ratio: float
    ppl_ratio_uncertainty: float
    ppl_diff: float
    ppl_diff_uncertainty: float
    kld_mean: float
    kld_mean_uncertainty: float
    kld_percentiles: dict[str, float]
    dp_mean_pct: float
    dp_mean_pct_uncertainty: float
    dp_percentiles_pct: dict[str, float]
    rms_dp_pct: float
    rms_dp_pct_uncertainty: float
    same_top_p_pct: float
    same_top_p_pct_uncertainty: float
    n_chunks: int | None = None
    n_ctx: int | None = None
    n_batch: int | None = None
    n_seq: int | None = None
    seconds_per_pass: float | None = None
    chunks: list[dict] = field(default_factory=list)  # per chunk (kld_chunks), for paired comparisons

    def to_dict(self) -> dict:
        return asdict(self)

    def flat(self) -> dict:
        """One flat row for a table: percentiles become kld_<p> and dp_<p>_pct columns."""
        d = asdict(self)
        d.pop("chunks")
        for k, v in d.pop("kld_percentiles").items():
            d[f"kld_{k}"] = v
        for k, v in d.pop("dp_percentiles_pct").items():
            d[f"dp_{k}_pct"] = v
        return d


def _block(text: str, title: str) -> str | None:
    m = re.search(rf"====== {re.escape(title)} ======\n(.*?)(?:\n\s*\n|\n======|\Z)", text, re.S)
    return m.group(1) if m else None


def parse_kld(text: str) -> KldResult:
    blocks = {t: _block(text, t) for t in
              ("Perplexity statistics", "KL divergence statistics", "Token probability statistics")}
    missing = [t for t, b in blocks.items() if b is None]
    if missing:
        if diagnose(text) is None and re.search(r"^\s*\d+\s+[\d.]+ ±", text, re.M):
            raise ToolFailed("llama-perplexity printed chunk rows but no statistics: llama.cpp prints none "
                             "below 100 scored tokens; use more --chunks or a larger ctx")
        raise _fail(text, ", ".join(f"'====== {t} ======'" for t in missing))
    out: dict = {}
    ppl_block, kld_block, tok_block = blocks.values()
    for label, stem in _PPL_STATS.items():
        m = re.search(rf"^{re.escape(label)}\s*:\s*{_NUM}{_PM}{_NUM}", ppl_block, re.M)
        if not m:
            raise ToolFailed(f"llama-perplexity's Perplexity statistics lack '{label}'")
        out[stem], out[f"{stem}_uncertainty"] = float(m.group(1)), float(m.group(2))
    m = re.search(rf"^Cor\(ln\(PPL\(Q\)\), ln\(PPL\(base\)\)\):\s*{_NUM}%", ppl_block, re.M)
    out["ppl_cor_pct"] = float(m.group(1)) if m else math.nan

    m = re.search(rf"^Mean\s+KLD:\s*{_NUM}{_PM}{_NUM}", kld_block, re.M)
    if not m:
        raise ToolFailed("llama-perplexity's KL divergence statistics lack 'Mean KLD'")
    out["kld_mean"], out["kld_mean_uncertainty"] = float(m.group(1)), float(m.group(2))
    out["kld_percentiles"] = _percentiles(kld_block, "KLD", r"")

    m = re.search(rf"^Mean\s+Δp:\s*{_NUM}{_PM}{_NUM}\s*%", tok_block, re.M)
    if not m:
        raise ToolFailed("llama-perplexity's Token probability statistics lack 'Mean Δp'")
    out["dp_mean_pct"], out["dp_mean_pct_uncertainty"] = float(m.group(1)), float(m.group(2))
    out["dp_percentiles_pct"] = _percentiles(tok_block, "Δp", r"\s*%")
    for label, stem in (("RMS Δp", "rms_dp_pct"), ("Same top p", "same_top_p_pct")):
        m = re.search(rf"^{re.escape(label)}\s*:\s*{_NUM}{_PM}{_NUM}\s*%", tok_block, re.M)
        if not m:
            raise ToolFailed(f"llama-perplexity's Token probability statistics lack '{label}'")
        out[stem], out[f"{stem}_uncertainty"] = float(m.group(1)), float(m.group(2))

    if not math.isfinite(out["ppl_base"]):  # the file's fault, not the quant's: every KLD against it fails
        raise ToolFailed(f"llama-perplexity printed a non-finite PPL(base) ({out['ppl_base']}): the baseline logits "
                         "hold NaN/inf log-probabilities, so the baseline pass (its quant or kld.base_kv) is at "
                         "fault, not the quant measured here; make the baseline again")
    _finite("KLD statistic", out["kld_mean"], out["ppl_q"], out["same_top_p_pct"])
    chunks = kld_chunks(text)
    info = _run_info(text)
    info.setdefault("n_chunks", len(chunks) or None)
    return KldResult(**out, **info, chunks=chunks)


def _percentiles(block: str, what: str, unit: str) -> dict[str, float]:
    vals: dict[str, float] = {}
    for label, key in _PERCENTILES.items():
        m = re.search(rf"^\s*{re.escape(label)}\s+{what}:\s*{_NUM}{unit}", block, re.M)
        if m:
            vals[key] = float(m.group(1))
    return vals
