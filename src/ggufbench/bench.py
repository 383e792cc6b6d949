"""llama-bench: command line and JSONL parsing.

llama-bench -o jsonl writes one JSON object per test (pp/tg/pg) per line. Fields drift between llama.cpp
versions, so every field is kept by name and none is required beyond the few we compute with.
"""

from __future__ import annotations

import json
import math
import statistics

from .errors import ToolFailed

REQUIRED = ("n_prompt", "n_gen", "avg_ts")


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
