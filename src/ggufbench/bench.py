"""llama-bench: command line and JSONL parsing.

llama-bench -o jsonl writes one JSON object per test (pp/tg/pg) per line. Fields drift between llama.cpp
versions, so every field is kept by name and none is required beyond the few we compute with.
"""

from __future__ import annotations

import json
import math
import statistics

from .config import kv_pair
from .errors import ToolFailed
from .plan import as_list

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


# Plans -------------------------------------------------------------------------------------------------

def strategy_settings(name: str, spec: dict) -> list[dict]:
    """One offload setting per llama-bench invocation: a `n_cpu_moe` list expands to one setting per N
    (each gets its own VRAM measurement). Keys: n_gpu_layers, override_tensor, n_cpu_moe, fit_target."""
    base = {"strategy": name}
    for key in ("n_gpu_layers", "override_tensor", "fit_target"):
        if spec.get(key) is not None:
            base[key] = spec[key]
    if spec.get("n_cpu_moe") is None:
        return [base]
    return [{**base, "n_cpu_moe": int(n)} for n in as_list(spec["n_cpu_moe"])]


def setting_args(setting: dict, gpu_build: bool, default_ngl: int) -> list[str]:
    args: list[str] = []
    ngl = setting.get("n_gpu_layers", default_ngl if gpu_build else None)
    if ngl is not None:
        args += ["-ngl", str(ngl)]
    if "override_tensor" in setting:
        args += ["-ot", str(setting["override_tensor"])]
    if "n_cpu_moe" in setting:
        args += ["-ncmoe", str(setting["n_cpu_moe"])]
    if "fit_target" in setting:
        args += ["-fitt", str(setting["fit_target"])]
    return args


def invocations(plan: dict, strategy: str, spec: dict) -> list[dict]:
    """Every llama-bench call of one strategy: its settings x KV types x -b x -ub x contexts. Threads, prompt,
    gen and depth are swept inside each call (they do not change the memory a setting takes; the context does,
    so each context is a call of its own, with its own VRAM peak and its own "does not fit")."""
    out = []
    for setting in strategy_settings(strategy, spec):
        for kv in as_list(plan.get("kv") or ["f16"]):
            for b in as_list(plan.get("batch") or [None]):
                for ub in as_list(plan.get("ubatch") or [None]):
                    for ctx in plan.get("contexts") or [None]:
                        out.append({**setting, "kv": kv, "batch": b, "ubatch": ub, "context": ctx})
    return out


def depths(plan: dict, context: int | None) -> list[int]:
    """-d of a call: at a served context C, the KV cache filled to C − the largest prompt, so that the prompt
    test's context is exactly C (llama-bench sizes it n_prompt + n_gen + n_depth) and generation runs near the
    end of a full context; without one, the plan's own depths."""
    if context is None:
        return list(plan.get("depth") or [0])
    top = max(max(plan.get("prompt") or [0]), max(plan.get("gen") or [0]))
    return [context - top]


def bench_cmd(tool, model, plan: dict, inv: dict, threads: list[int], gpu_build: bool, run: dict) -> list:
    """The llama-bench call for one invocation (bench jobs) or one probe (the tuner)."""
    k, v = kv_pair(inv.get("kv", "f16"))
    cmd = [tool, "-m", model, "-o", "jsonl",
           "-p", ",".join(str(p) for p in plan.get("prompt", [512])),
           "-n", ",".join(str(n) for n in plan.get("gen", [128])),
           "-d", ",".join(str(d) for d in depths(plan, inv.get("context"))),
           "-r", plan.get("repetitions", 5), "-t", ",".join(str(t) for t in threads),
           "-fa", run.get("flash_attn", "on"), "-ctk", k, "-ctv", v]
    if inv.get("batch") is not None:
        cmd += ["-b", inv["batch"]]
    if inv.get("ubatch") is not None:
        cmd += ["-ub", inv["ubatch"]]
    cmd += setting_args(inv, gpu_build, run.get("n_gpu_layers", 99))
    cmd += [str(a) for a in plan.get("extra_args", [])]
    return cmd


def planned_rows(plan: dict, inv: dict, threads: list[int], gpu_build: bool, run: dict) -> list[dict]:
    """The rows a call would have written, with the llama-bench fields that name its setting (as llama-bench
    reports them: -ngl -1 under fit, "none" without -ot): what a "does not fit" call stands for."""
    rows = []
    for d in depths(plan, inv.get("context")):
        for t in threads:
            for p in plan.get("prompt", [512]):
                if p:
                    rows.append({"n_prompt": p, "n_gen": 0, "n_depth": d, "n_threads": t})
            for n in plan.get("gen", [128]):
                if n:
                    rows.append({"n_prompt": 0, "n_gen": n, "n_depth": d, "n_threads": t})
    k, v = kv_pair(inv.get("kv", "f16"))
    fit = inv.get("fit_target")
    ngl = -1 if fit else inv.get("n_gpu_layers", run.get("n_gpu_layers", 99) if gpu_build else -1)
    named = {"type_k": k, "type_v": v, "n_gpu_layers": ngl, "n_cpu_moe": inv.get("n_cpu_moe", 0),
             "tensor_buft_overrides": inv.get("override_tensor", "none"), "fit_target": fit or 0,
             "backends": "CUDA" if gpu_build else "CPU", "n_batch": inv.get("batch"), "n_ubatch": inv.get("ubatch")}
    return [{**r, "test": test_label(r), **named} for r in rows]


def summarize(row: dict, discard_first: bool, noise_pct: float) -> dict:
    """Median and min-max over the repetitions, the first (cold) one left out when asked and there are at
    least three; `noisy` when the kept range exceeds noise_pct of the median."""
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
