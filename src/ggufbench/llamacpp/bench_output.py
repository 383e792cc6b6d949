"""llama-bench -o jsonl output: one JSON object per test (pp/tg/pg) per line, kept field by field (fields drift
between llama.cpp versions, so none is required beyond the few computed with), with the repetitions' median
and range."""

from __future__ import annotations

import json
import math
import statistics

from ..core.errors import ToolFailed

REQUIRED = ("n_prompt", "n_gen", "avg_ts")


FLASH_ATTN = {-1: "auto", 0: "off", 1: "on"}


def flash_attn_label(value) -> str | None:
    """llama-bench's flash_attn field as one type: 2026 llama.cpp writes -1/0/1 (auto/off/on), 2025 a bool."""
    if value is None or isinstance(value, str):
        return value
    return FLASH_ATTN.get(int(value), str(value))


def parse_bench_jsonl(text: str) -> list[dict]:
    """Rows of llama-bench -o jsonl output, each with a `test` label (pp512, tg128, pp512+tg128, @dN)."""
    rows: list[dict] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ToolFailed(f"llama-bench output line {lineno} is not JSON ({e.msg}): {line[:120]!r}; "
                             "was it run with -o jsonl?") from e
        if not isinstance(row, dict):
            raise ToolFailed(f"llama-bench output line {lineno} is not a JSON object: {line[:120]!r}")
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise ToolFailed(f"llama-bench output line {lineno} lacks {', '.join(missing)}")
        row["test"] = test_label(row)
        if "flash_attn" in row:
            row["flash_attn"] = flash_attn_label(row["flash_attn"])
        samples = row.get("samples_ts") or []
        if samples:
            row["median_ts"] = statistics.median(samples)
            row["min_ts"], row["max_ts"] = min(samples), max(samples)
        if not math.isfinite(float(row["avg_ts"])) or float(row["avg_ts"]) <= 0:
            raise ToolFailed(f"llama-bench reported avg_ts={row['avg_ts']} for {row['test']}: no measurement")
        rows.append(row)
    if not rows:
        raise ToolFailed("llama-bench printed no result rows (see its log for why)")
    return rows


def test_label(row: dict) -> str:
    """The label llama-bench's markdown table uses: pp512, tg128, pp512+tg128, with ' @ dN' for depth."""
    p, g = int(row.get("n_prompt", 0)), int(row.get("n_gen", 0))
    label = "+".join(x for x in (f"pp{p}" if p else "", f"tg{g}" if g else "") if x)
    depth = int(row.get("n_depth", 0) or 0)
    return f"{label} @ d{depth}" if depth else label


def summarize(row: dict, discard_first: bool, noise_pct: float) -> dict:
    """Median and min-max over the repetitions, the first (cold) one left out when asked and there are at
    least three; `noisy` when the kept range exceeds noise_pct of the median. Not noisy is not clean: a load that
    lasts the whole call slows every repetition alike (issue 25: tg128 93 -> 6.1 t/s, range 2%); the call's own
    `load` and `loaded` (measure.load), kept here with every other key, say that."""
    samples = list(row.get("samples_ts") or [])
    kept = samples[1:] if discard_first and len(samples) >= 3 else samples
    if not kept:
        return row
    med = statistics.median(kept)
    lo, hi = min(kept), max(kept)
    spread = 100.0 * (hi - lo) / med if med > 0 else math.inf
    return {**row, "median_ts": med, "min_ts": lo, "max_ts": hi, "n_samples_kept": len(kept),
            "first_sample_discarded": len(kept) < len(samples), "spread_pct": spread,
            "noisy": spread > noise_pct}
