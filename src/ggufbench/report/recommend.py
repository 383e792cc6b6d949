"""What to run in a VRAM budget at a served context: every (quant, KV type, offload setting, threads) measured,
with its quality, speed and memory need, and the pick (best quality that fits; among settings within the noise
of the best, the fastest at generation). Read by the report and by the server check, which starts the picks
in order until one starts, so both name the same setting.

Memory need: the measured VRAM peak of the llama-bench call (or tuner probe) at that context; with only f16-KV
runs measured, that VRAM stands as an upper bound for a quantized KV; without VRAM (CPU builds), the file size
plus a KV-cache estimate from the GGUF's architecture where the tables carry it, else the file size alone (a
lower bound). Settings that did not fit in device memory are never candidates.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from ..core.units import GIB, MIB
from ..measure.tuner import setting_label
from .rows import measured_rows, with_strategy

# Bytes per element of llama.cpp's KV-cache types (ggml block size / elements per block).
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
                 "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32}
# Model architecture columns that, where the tables carry them, allow a KV-cache estimate (GGUF metadata).
ARCH_COLUMNS = ("n_layer_kv", "n_head_kv", "n_embd_head_k", "n_embd_head_v")
# The offload keys of a setting, as a bench strategy spells them (config bench.strategies).
SPEC_KEYS = ("n_gpu_layers", "override_tensor", "n_cpu_moe", "fit_target", "batch", "ubatch", "no_mmap")


def isna(v) -> bool:
    return v is None or (not isinstance(v, str) and pd.isna(v))


def budgets_from_config(config: dict) -> list[tuple[str, float]]:
    """(label, GiB) per VRAM budget: report.target_gpu (name, vram_gib), then report.vram_budgets_gib."""
    rep = config.get("report") or {}
    out: list[tuple[str, float]] = []
    gpu = rep.get("target_gpu") or {}
    if gpu.get("vram_gib"):
        out.append((f"{gpu.get('name', 'target GPU')} ({gpu['vram_gib']:g} GiB)", float(gpu["vram_gib"])))
    for b in rep.get("vram_budgets_gib") or []:
        if not any(math.isclose(b, v) for _, v in out):
            out.append((f"{b:g} GiB", float(b)))
    return sorted(out, key=lambda x: x[1])


def kv_cache_bytes(row, ctx: int, type_k: str, type_v: str) -> float | None:
    """llama.cpp's KV cache for ctx tokens: n_layer_kv × ctx × n_head_kv × (head_k·bytes(K) + head_v·bytes(V)),
    from the GGUF metadata columns every row carries (n_layer_kv: the layers that keep a KV cache, e.g. every
    4th of Qwen3.5's); None where a table lacks them (older runs) or for an unknown type."""
    try:
        n_layer_kv, n_head_kv, hk, hv = (float(row[c]) for c in ARCH_COLUMNS)
    except (KeyError, TypeError, ValueError):
        return None
    if any(math.isnan(v) for v in (n_layer_kv, n_head_kv, hk, hv)):
        return None
    bk, bv = KV_TYPE_BYTES.get(type_k), KV_TYPE_BYTES.get(type_v)
    if bk is None or bv is None:
        return None
    return n_layer_kv * ctx * n_head_kv * (hk * bk + hv * bv)


def baseline(config: dict, model: str) -> str | None:
    return (config.get("models", {}).get(model) or {}).get("baseline")


def base_kv(config: dict, kld: pd.DataFrame) -> str:
    if not kld.empty and "baseline_kv" in kld and kld["baseline_kv"].notna().any():
        return str(kld["baseline_kv"].dropna().iloc[0])
    return (config.get("kld") or {}).get("base_kv") or ((config.get("perplexity") or {}).get("kv") or ["f16"])[0]


def at_context(bench: pd.DataFrame, context: int | None) -> pd.DataFrame:
    """Rows measured at a served context (bench.contexts); without contexts in the tables, every row (they are
    at llama-bench's own context, which is what serve_contexts then names)."""
    if bench.empty or context is None or "setting_context" not in bench or bench["setting_context"].isna().all():
        return bench
    return bench[bench["setting_context"] == context]


def _spec(row) -> dict:
    spec = {}
    for key in SPEC_KEYS:
        v = row.get(f"setting_{key}")
        if key == "no_mmap":  # a flag: in the spec only when set
            if v is True:
                spec[key] = True
        elif not isna(v):
            spec[key] = v if isinstance(v, str) else int(v)
    return spec


def _quality(p: pd.DataFrame, k: pd.DataFrame, b: pd.DataFrame, model_baseline, kv0) -> list[dict]:
    ctxs = sorted(p["ctx"].unique()) if not p.empty else []
    kctx = int(k["ctx"].min()) if not k.empty else None  # kld.ctx may list several: the shortest, the scoreboard's
    k = k[k["ctx"] == kctx] if not k.empty else k
    ctx0 = kctx if kctx in ctxs else (ctxs[0] if ctxs else None)
    out = []
    if not p.empty:
        for (quant, kv), g in p[p["ctx"] == ctx0].groupby(["quant", "kv"], sort=False):
            r = g.iloc[0]
            kr = k[(k["quant"] == quant) & (k["kv"] == kv)] if not k.empty else k
            if not kr.empty:
                kl, klu, p999 = kr["kld_mean"].iloc[0], kr["kld_mean_uncertainty"].iloc[0], kr["kld_p99_9"].iloc[0]
            elif not k.empty and quant == model_baseline and kv == kv0:  # KLD 0 by definition, once measured
                kl, klu, p999 = 0.0, 0.0, 0.0
            else:
                kl = klu = p999 = float("nan")
            out.append({"quant": quant, "kv": kv, "type_k": r["type_k"], "type_v": r["type_v"],
                        "file_size_bytes": r["file_size_bytes"], "ppl": r["ppl"], "ppl_u": r["ppl_uncertainty"],
                        "kld": kl, "kld_u": klu, "kld_p99_9": p999, "row": r})
    elif not b.empty:  # speed only: one candidate per benchmarked quant and KV
        for (quant, tk, tv), g in b.groupby(["quant", "type_k", "type_v"], sort=False):
            out.append({"quant": quant, "kv": tk if tk == tv else f"{tk}-{tv}", "type_k": tk, "type_v": tv,
                        "file_size_bytes": g["file_size_bytes"].iloc[0], "ppl": float("nan"),
                        "ppl_u": float("nan"), "kld": float("nan"), "kld_u": float("nan"),
                        "kld_p99_9": float("nan"), "row": g.iloc[0]})
    return out


def _bench_settings(bq: pd.DataFrame, same_kv: bool) -> list[dict]:
    """One speed setting per (offload label, threads) of a quant's llama-bench rows."""
    out = []
    for (label, threads), g in bq.groupby(["strategy_label", "n_threads"], sort=False):
        s = {"strategy": label, "threads": int(threads), "tg": float("nan"), "tg_lo": float("nan"),
             "tg_hi": float("nan"), "pp": float("nan"), "tg_test": None, "pp_test": None, "source": "bench",
             "spec": _spec(g.iloc[0]), "bench_strategy": g["strategy"].iloc[0] if "strategy" in g else None}
        for _, t in g.iterrows():
            name = str(t["test"])
            if name.startswith("tg") and s["tg_test"] is None:
                s.update(tg=t["median_ts"], tg_lo=t["min_ts"], tg_hi=t["max_ts"], tg_test=name)
            elif name.startswith("pp") and s["pp_test"] is None:
                s.update(pp=t["median_ts"], pp_test=name)
        measured = g["vram_available"].fillna(False).astype(bool) & g["vram_peak_delta_mib"].notna()
        if measured.any():
            s["need_bytes"] = float(g.loc[measured, "vram_peak_delta_mib"].max()) * MIB
            s["basis"] = "measured VRAM" if same_kv else f"measured VRAM with {g['type_k'].iloc[0]} KV (upper bound)"
            s["measured"] = True
        else:
            s["measured"] = False
        out.append(s)
    return out


def _tuner_settings(tune: pd.DataFrame, quant: str, context: int | None) -> list[dict]:
    """Every probe the tuner measured (f16 KV, the tuner's threads) is a setting in its own right."""
    if tune is None or tune.empty or "probes" not in tune:
        return []
    t = tune[tune["quant"] == quant]
    if context is not None and "context" in t and t["context"].notna().any():
        t = t[t["context"] == context]
    out, seen = [], set()
    for _, r in t.iterrows():
        for p in json.loads(r["probes"] or "[]"):
            spec = p.get("setting") or {"n_cpu_moe": p["n_cpu_moe"]}
            key = (json.dumps(spec, sort_keys=True), r["threads"])
            if p.get("status", "measured") != "measured" or key in seen:
                continue
            seen.add(key)
            out.append({"strategy": f"tuner: {setting_label(spec)}", "threads": int(r["threads"]),
                        "tg": p["tg_ts"], "tg_lo": p["tg_ts"], "tg_hi": p["tg_ts"], "pp": p.get("pp_ts"),
                        "tg_test": None, "pp_test": None, "source": "tuner", "bench_strategy": None,
                        "spec": spec, "need_bytes": float(p["vram_mib"]) * MIB,
                        "basis": "measured VRAM (tuner probe)", "measured": True})
    return out


def candidates(tables: dict[str, pd.DataFrame], config: dict, model: str, build: str,
               context: int | None = None) -> pd.DataFrame:
    """Every (quant, KV type, offload setting, threads) of one model and build at one served context, with its
    quality, speed and memory need (`basis` says how the memory was known)."""
    ppl, kld, bench = tables["perplexity"], tables["kld"], tables["bench"]
    tune = tables.get("tune", pd.DataFrame())
    p = ppl[(ppl["model"] == model) & (ppl["build"] == build)] if not ppl.empty else ppl
    k = kld[(kld["model"] == model) & (kld["build"] == build)] if not kld.empty else kld
    b = bench[(bench["model"] == model) & (bench["build"] == build)] if not bench.empty else bench
    b = with_strategy(at_context(measured_rows(b), context))
    if tune is not None and not tune.empty:
        tune = tune[(tune["model"] == model) & (tune["build"] == build)]
    ctxs = sorted(p["ctx"].unique()) if not p.empty else []
    est_ctx = context or (int(ctxs[-1]) if ctxs else None)

    rows = []
    for q in _quality(p, k, b, baseline(config, model), base_kv(config, kld)):
        bq = b[b["quant"] == q["quant"]] if not b.empty else b
        same = bq[(bq["type_k"] == q["type_k"]) & (bq["type_v"] == q["type_v"])] if not bq.empty else bq
        settings = _bench_settings(same if not same.empty else bq, not same.empty) if not bq.empty else []
        if q["type_k"] == q["type_v"] == "f16":
            settings += _tuner_settings(tune, q["quant"], context)
        if not settings:
            settings = [{"strategy": None, "threads": None, "tg": float("nan"), "tg_lo": float("nan"),
                         "tg_hi": float("nan"), "pp": float("nan"), "tg_test": None, "pp_test": None,
                         "source": None, "bench_strategy": None, "spec": {}, "measured": False}]
        for s in settings:
            row = {k_: v for k_, v in q.items() if k_ != "row"}
            row.update(s)
            if not s["measured"]:
                kvb = kv_cache_bytes(q["row"], est_ctx, q["type_k"], q["type_v"]) if est_ctx else None
                if kvb is not None:
                    row.update(need_bytes=q["file_size_bytes"] + kvb,
                               basis=f"file + {kvb / MIB:.0f} MiB KV estimate at ctx {est_ctx}")
                else:
                    row.update(need_bytes=float(q["file_size_bytes"]), basis="file size (lower bound)")
            row["context"] = context
            rows.append(row)
    return pd.DataFrame(rows)


def pick(c: pd.DataFrame) -> pd.Series:
    """Best quality that fits; among candidates whose quality is within the noise of the best (difference under
    twice the combined ±), the fastest at generation; then the smallest."""
    metric, unc = ("kld", "kld_u") if c["kld"].notna().any() else ("ppl", "ppl_u")
    c = c[c[metric].notna()] if c[metric].notna().any() else c
    if c[metric].isna().all():
        return c.sort_values(["tg", "need_bytes"], ascending=[False, True]).iloc[0]
    best = c.loc[c[metric].idxmin()]
    noise = 2 * ((c[unc].fillna(0) ** 2 + (0 if isna(best[unc]) else best[unc]) ** 2) ** 0.5)
    tied = c[(c[metric] - best[metric]) <= noise]
    return tied.sort_values(["tg", "need_bytes"], ascending=[False, True], na_position="last").iloc[0]


def ranked(c: pd.DataFrame, budget_gib: float) -> list[pd.Series]:
    """The candidates that fit the budget in the order they would be picked: the pick, then the pick of the rest,
    and so on (the server check starts them in this order until one starts)."""
    left = c[c["need_bytes"] <= budget_gib * GIB]
    out = []
    while not left.empty:
        r = pick(left)
        out.append(r)
        left = left.drop(index=r.name)
    return out


def memory_ladder(c: pd.DataFrame) -> pd.DataFrame:
    """The candidates worth running at some budget: each one is the pick for budgets from its memory need up to
    the next one's (the quality-vs-memory frontier, walked from the smallest need up)."""
    out, seen = [], set()
    for need in sorted(c["need_bytes"].unique()):
        r = pick(c[c["need_bytes"] <= need])
        key = (r["quant"], r["kv"], r["strategy"], r["threads"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return pd.DataFrame(out)
