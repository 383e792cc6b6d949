"""reports/summary.html: one self-contained page made from the Parquet tables alone, from the jinja2 templates in
templates/ (the HTML and its escaping live there; this module computes what goes in it)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import jinja2
import pandas as pd

from ..core.io import write_text
from ..core.units import GIB
from ..measure.load import LOADED_SHARE
from ..measure.runs import serve_contexts
from . import recommend
from .claims import claims_section
from .figures import FIGURES
from .flips import questions_for_flip_rate, wilson
from .rows import measured_rows, present, scoreboard_kld, with_strategy
from .tables import read_table

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("ggufbench.report", "templates"), autoescape=True,
                          trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                          undefined=jinja2.StrictUndefined)


def _macro(name: str, template: str = "sections.html.j2"):
    """A template's macro, called like a function: its HTML comes back as markupsafe.Markup (a str)."""
    return getattr(_ENV.get_template(template).module, name)


# ---------------------------------------------------------------------------------------------- formatting

def _pm(v, u, fmt="{:.4f}") -> str:
    if recommend.isna(v):
        return "—"
    return f"{fmt.format(v)} ± {fmt.format(u)}" if not recommend.isna(u) else fmt.format(v)


def _table(df: pd.DataFrame, table_id: str, numeric: set[str] | None = None, row_class=None) -> dict:
    """A table for the templates' table macro: its cells as text ("—" for a missing value), numeric columns
    (right-aligned), row_class(i) -> a CSS class for row i (or None)."""
    numeric = numeric or set()
    rows = [(row_class(i) if row_class else None, ["—" if recommend.isna(v) else str(v) for v in row])
            for i, row in enumerate(df.itertuples(index=False))]
    return {"id": table_id, "columns": [str(c) for c in df.columns], "numeric": [c in numeric for c in df.columns],
            "rows": rows}


def _empty(what: str, why: str = "") -> str:
    return _macro("empty", "macros.html.j2")(what, why)


def _chunks(v) -> str:
    """A --chunks value as run: a count, or `all` for none (the whole corpus; a Parquet column that mixes counts
    and nulls holds floats and NaN)."""
    return "all" if recommend.isna(v) else str(int(v))


def _gib(nbytes) -> str:
    return "—" if recommend.isna(nbytes) else f"{nbytes / GIB:.3f}"


def _results(tables: dict[str, pd.DataFrame]) -> list[pd.DataFrame]:
    """The result tables that hold rows (a table of nothing measured has no columns either)."""
    return [t for t in (tables["perplexity"], tables["kld"], tables["bench"]) if present(t, "build", "model")]


def _first_build(tables: dict[str, pd.DataFrame], model: str | None = None) -> str | None:
    builds = tables["builds"]
    order = list(builds["build"]) if present(builds, "build") else []
    measured = {b for t in _results(tables) for b in (t[t["model"] == model] if model else t)["build"]}
    for b in order:
        if b in measured:
            return b
    return sorted(measured)[0] if measured else None


def _models(tables: dict[str, pd.DataFrame]) -> list[str]:
    return list(dict.fromkeys(m for t in _results(tables) for m in t["model"]))


def _of(df: pd.DataFrame, build: str, model: str) -> pd.DataFrame:
    """One build's and model's rows of a table (none of a table without rows)."""
    if not present(df, "build", "model"):
        return df.iloc[0:0]
    return df[(df["build"] == build) & (df["model"] == model)]


def _no_kld_why(config: dict, kld: pd.DataFrame, model: str) -> str:
    """Why a model has no KLD against its baseline, in the config's words."""
    if not config.get("kld"):
        return "the KLD, Δp and same-top-p columns need kld: in the config"
    base = recommend.baseline(config, model) or "the baseline"
    own = kld[kld["model"] == model] if present(kld, "model") else kld.iloc[0:0]
    one_quant = len((config.get("models", {}).get(model) or {}).get("quants") or {}) <= 1
    add = f"; add quants under models.{model}.quants to see what each costs" if one_quant else ""
    if not own.empty:
        return (f"KLD was measured only for {base} with other KV types (the KV-cache matrix shows them); no other "
                f"quant was measured against {base}{add}")
    if one_quant:
        return f"kld: measures each quant against the baseline ({base}), and {base} is the only one{add}"
    return (f"the tables hold no KLD rows of its quants besides {base} (its kld jobs make them: run the workflow to "
            "its end)")


# ---------------------------------------------------------------------------------------------- scoreboard

KLD_COLUMNS = {"KLD": ("kld_mean", "{:.6f}", ""), "KLD 99.9%": ("kld_p99_9", "{:.4f}", ""),
               "mean Δp": ("dp_mean_pct", "{:.3f}", " %"), "RMS Δp": ("rms_dp_pct", "{:.3f}", " %"),
               "same top p": ("same_top_p_pct", "{:.3f}", " %")}


def _scoreboard_row(quant: str, r, kr, *, baseline: str | None, base_ppl: float, with_kld: bool) -> dict:
    """One quant's scoreboard row: r its PPL cell, kr its KLD row (None: not measured against the baseline)."""
    is_base = quant == baseline
    if kr is not None:  # KLD mode's own ΔPPL: its ± accounts for both passes scoring the same tokens
        dppl = _pm(kr["ppl_diff"], kr["ppl_diff_uncertainty"])
    elif is_base:
        dppl = "0 (baseline)"
    else:
        dppl = "—" if recommend.isna(base_ppl) else f"{r['ppl'] - base_ppl:+.4f}"
    row = {"quant": quant + (" (baseline)" if is_base else ""), "size GiB": _gib(r["file_size_bytes"]),
           "PPL": _pm(r["ppl"], r["ppl_uncertainty"]), "ΔPPL": dppl}
    if with_kld:  # without KLD rows of this model the KLD columns would hold nothing
        for name, (col, fmt, unit) in KLD_COLUMNS.items():
            row[name] = ("(baseline)" if is_base and kr is None else "—" if kr is None
                         else _pm(kr[col], kr.get(f"{col}_uncertainty"), fmt) + unit)
    return row


def _scoreboard_block(build: str, model: str, g: pd.DataFrame, *, ks: pd.DataFrame, kld: pd.DataFrame,
                      config: dict, ctx: int | None = None, several: bool = False) -> dict:
    """One build's and model's scoreboard at one context (ctx: a context KLD was measured at; None: the shortest
    PPL context): its PPL cells there with the baseline's KV type (else the first measured), its KLD rows at that
    context, and what it lacks."""
    kctx = _of(ks, build, model)
    ctx0 = int(ctx) if ctx is not None else int(sorted(g["ctx"].unique())[0])
    if not kctx.empty:
        kctx = kctx[kctx["ctx"] == ctx0]
    kvs = list(dict.fromkeys(g[g["ctx"] == ctx0]["kv"]))
    kv0 = recommend.base_kv(config, kld)
    kv0 = kv0 if kv0 in kvs else kvs[0]  # a PPL matrix without the baseline's KV type: its first
    p = g[(g["kv"] == kv0) & (g["ctx"] == ctx0)].drop_duplicates("quant").set_index("quant")
    baseline = recommend.baseline(config, model)
    base_ppl = p["ppl"].get(baseline) if baseline in p.index else float("nan")
    k = kctx.drop_duplicates("quant").set_index("quant") if not kctx.empty else pd.DataFrame()
    rows = [_scoreboard_row(quant, r, k.loc[quant] if quant in k.index else None, baseline=baseline,
                            base_ppl=base_ppl, with_kld=not kctx.empty)
            for quant, r in p.sort_values("file_size_bytes", ascending=False).iterrows()]
    missing = []
    if kctx.empty:
        missing.append(("KLD results for " + str(model), _no_kld_why(config, kld, model)))
    if p.index.nunique() == 1 and not (kctx.empty and config.get("kld")):  # else the KLD line says so
        missing.append((f"other quant of {model}", "one quant measured, nothing to compare it with; add quants "
                        f"under models.{model}.quants (ΔPPL and KLD are against the baseline, "
                        f"{baseline or 'models.' + str(model) + '.baseline'})"))
    table_id = f"scoreboard-{build}-{model}" + (f"-ctx{ctx0}" if several else "")
    return {"build": build, "model": model, "ctx": ctx0, "kv": kv0, "missing": missing, "table": _table(
        pd.DataFrame(rows), table_id, {"size GiB", "PPL", "ΔPPL", *KLD_COLUMNS})}


def _kld_note(kld: pd.DataFrame) -> dict:
    """What the KLD columns were measured against, and on how much of the corpus."""
    base = ", ".join(sorted({str(c) for c in kld["baseline_quant"]}))
    sharded = kld[kld["kld_mode"] == "sharded"] if "kld_mode" in kld else kld.iloc[0:0]
    if not sharded.empty:
        n = ", ".join(sorted({str(int(c)) for c in sharded["n_chunks"]}))
        s = ", ".join(sorted({str(int(c)) for c in sharded["n_shards"]}))
        scope = (f"{n} chunks scored in {s} shards (kld.mode: sharded; the percentile columns other than "
                 "max and min are estimates from the shards')")
    else:
        scope = "--chunks " + ", ".join(sorted({_chunks(c) for c in kld["chunks"]}))
    return {"base": base, "scope": scope}


def scoreboard(ppl: pd.DataFrame, kld: pd.DataFrame, config: dict) -> str:
    """One table per build and model: quant, size, PPL ±, ΔPPL ±, KLD ±, KLD 99.9%, mean Δp ±, RMS Δp ±, same
    top p ± — the baseline's KV type, the KLD runs' context, as in llama.cpp's tools/perplexity README. A model
    without KLD rows has the PPL columns alone, and says why."""
    if not present(ppl) and not present(kld):
        return _empty("perplexity or KLD results", "the scoreboard needs perplexity: or kld: in the config")
    if not present(ppl, "build", "model", "quant", "ctx", "kv"):
        return _empty("perplexity results", "the scoreboard needs the PPL cells")
    ks = scoreboard_kld(kld)
    blocks = []
    for (build, model), g in ppl.groupby(["build", "model"], sort=False):
        own = _of(ks, build, model)
        kctxs = [int(c) for c in sorted(own["ctx"].unique()) if c in set(g["ctx"])] if present(own, "ctx") else []
        # one scoreboard per context KLD was measured at (kld.ctx may list several), else at the shortest PPL ctx
        blocks += [_scoreboard_block(build, model, g, ks=ks, kld=kld, config=config, ctx=c, several=len(kctxs) > 1)
                   for c in kctxs or [None]]
    return _macro("scoreboard")(blocks, str(ppl["build"].iloc[0]), _kld_note(kld) if present(ks) else None)


# ---------------------------------------------------------------------------------------------- KV matrix

def _kv_cell(r) -> str:
    """PPL ± and, for a KV type other than f16, its ΔPPL against f16 KV: marked when within the noise."""
    text = _pm(r["ppl"], r["ppl_uncertainty"])
    if r["kv"] != "f16" and not recommend.isna(r.get("dppl_vs_f16_kv")):
        noise = "" if r.get("dppl_vs_f16_kv_resolved", True) else ", within noise"
        text += f" ({r['dppl_vs_f16_kv']:+.4f}{noise})"
    return text


def _deltas(g: pd.DataFrame, col: str) -> list[str]:
    """A difference with its ± (95 %: 1.96 of it), or — where a cell is missing."""
    unc = g[f"{col}_uncertainty"] if f"{col}_uncertainty" in g else pd.Series(float("nan"), index=g.index)
    return ["—" if recommend.isna(v) else f"{v:+.4f}" + ("" if recommend.isna(u) else f" ± {1.96 * u:.4f}")
            for v, u in zip(g[col], unc, strict=True)]


def _long_verdict(r) -> str:
    """Does the KV type cost more at the long context? Only a difference beyond its ± says so."""
    if recommend.isna(r.get("kv_cost_long_minus_short")) or "kv_cost_long_minus_short_resolved" not in r:
        return "—"
    if not r["kv_cost_long_minus_short_resolved"]:
        return "not resolved"
    return "costs more at the long ctx" if r["kv_cost_long_minus_short"] > 0 else "costs less at the long ctx"


def _kv_missing(model: str, g: pd.DataFrame) -> list[tuple[str, str]]:
    """(what, why) for each axis of a model's KV matrix that was not measured: a second KV type, f16 KV (the
    reference of every Δ), a second context."""
    kvs, ctxs = list(dict.fromkeys(g["kv"])), sorted(g["ctx"].unique())
    out = []
    if len(kvs) == 1:
        out.append((f"second KV type for {model}", f"only KV {kvs[0]} was measured, nothing to compare it with; list "
                    "two under perplexity.kv (e.g. [f16, q8_0]) to see what a quantized KV cache costs"))
    elif "f16" not in kvs:
        out.append((f"f16-KV cells for {model}", "the (+Δ) of a KV type is against f16 KV at the same context; add "
                    "f16 to perplexity.kv"))
    if len(ctxs) == 1 and len(kvs) > 1:
        out.append((f"second context for {model}", f"only ctx {int(ctxs[0])} was measured; list two under "
                    "perplexity.ctx to see whether a KV type costs more at the longer one"))
    return out


def kv_matrix(ppl: pd.DataFrame, kld: pd.DataFrame | None = None) -> str:
    if not present(ppl, "build", "model", "quant", "ctx", "kv"):
        return _empty("perplexity results", "the KV-cache matrix needs perplexity: (or kld:) in the config")
    kld = kld if kld is not None else pd.DataFrame()
    if "dppl_vs_f16_kv_resolved" not in ppl and present(ppl, "ppl", "ppl_uncertainty"):
        from .tables import add_kv_deltas  # tables made before the deltas carried their ±

        ppl = add_kv_deltas(ppl.drop(columns=["dppl_vs_f16_kv", "kv_cost_long_minus_short"], errors="ignore"))
    blocks = []
    first = str(ppl["build"].iloc[0])
    for (build, model), g in ppl.groupby(["build", "model"], sort=False):
        own = {"build": build, "model": model, "long": None, "kld": None, "missing": _kv_missing(model, g)}
        g = g.assign(cell=[_kv_cell(r) for _, r in g.iterrows()])
        m = g.pivot_table(index="quant", columns=["ctx", "kv"], values="cell", aggfunc="first")
        order = g.sort_values("file_size_bytes", ascending=False)["quant"].drop_duplicates()
        kvs = list(dict.fromkeys(g["kv"]))
        m = m.reindex(index=order, columns=pd.MultiIndex.from_tuples(
            [(c, kv) for c in sorted(g["ctx"].unique()) for kv in kvs if (c, kv) in m.columns]))
        m.columns = [f"ctx {c} · KV {kv}" for c, kv in m.columns]
        own["ppl"] = _table(m.reset_index(), f"kv-{build}-{model}", set(m.columns))
        ctxs = sorted(g["ctx"].unique())
        if len(ctxs) > 1 and "kv_cost_long_minus_short" in g:
            long = g[(g["ctx"] == ctxs[-1]) & (g["kv"] != "f16")]
            if not long.empty:
                t = pd.DataFrame({"quant": long["quant"].to_numpy(), "kv": long["kv"].to_numpy(),
                                  f"ΔPPL vs f16 KV at ctx {ctxs[-1]}": _deltas(long, "dppl_vs_f16_kv"),
                                  f"ΔPPL at ctx {ctxs[-1]} minus ΔPPL at ctx {ctxs[0]}":
                                      _deltas(long, "kv_cost_long_minus_short"),
                                  "verdict": [_long_verdict(r) for _, r in long.iterrows()]})
                own["long"] = {"ctx": ctxs[-1], "ctx0": ctxs[0],
                               "table": _table(t, f"kv-long-{build}-{model}", set(t.columns[2:4]))}
        k = _of(kld, build, model)
        if not k.empty and k["kv"].nunique() > 1:
            k = k.assign(cell=[_pm(v, u, "{:.6f}") for v, u in zip(k["kld_mean"], k["kld_mean_uncertainty"],
                                                                   strict=True)])
            kctxs = sorted(int(c) for c in k["ctx"].unique())  # a column per context and KV type (kld.ctx a list)
            km = k.pivot_table(index="quant", columns=["ctx", "kv"], values="cell", aggfunc="first")
            km = km.reindex(index=order, columns=pd.MultiIndex.from_tuples(
                [(c, kv) for c in kctxs for kv in kvs if (c, kv) in km.columns]))
            bq, bkv = str(k["baseline_quant"].iloc[0]), str(k["baseline_kv"].iloc[0])
            for c in kctxs:
                if bq in km.index and (c, bkv) in km.columns and recommend.isna(km.loc[bq, (c, bkv)]):
                    km.loc[bq, (c, bkv)] = "0 (baseline)"
            km.columns = [f"KV {kv}" if len(kctxs) == 1 else f"ctx {c} · KV {kv}" for c, kv in km.columns]
            own["kld"] = {"quant": bq, "kv": bkv, "ctx": ", ".join(str(c) for c in kctxs),
                          "table": _table(km.reset_index(), f"kv-kld-{build}-{model}", set(km.columns))}
        blocks.append(own)
    return _macro("kv_matrix")(blocks, first)


# ---------------------------------------------------------------------------------------------- speed / VRAM

def _vram_text(ok, delta, reason) -> str:
    if ok and not recommend.isna(delta):
        return f"{delta:.0f}"
    return f"n/a ({(reason or 'not measured').split(' (')[0]})"


def _no_fit_text(free_mib) -> str:
    return "does not fit" + ("" if recommend.isna(free_mib) else f" in {free_mib / 1024:.1f} GiB")


def _speed_cell(h: pd.DataFrame) -> str:
    """One llama-bench test of one setting: median t/s (min–max), or "does not fit in N GiB"."""
    if h.empty:
        return "—"
    if h["status"].iloc[0] != "measured":
        return _no_fit_text(h["vram_free_before_mib"].iloc[0] if "vram_free_before_mib" in h else None)
    return f"{h['median_ts'].iloc[0]:.1f} ({h['min_ts'].iloc[0]:.1f}–{h['max_ts'].iloc[0]:.1f})"


def _speed_row(key: tuple, g: pd.DataFrame, tests: list[str], *, has_ctx: bool, one_call: bool) -> dict:
    """One setting's row (key: build, model, quant, offload label, threads, type_k, type_v[, context])."""
    r = g.iloc[0]
    row = {"build": key[0], "model": key[1], "quant": key[2], "size GiB": _gib(r["file_size_bytes"]),
           "offload": key[3], "threads": key[4],
           "KV": key[5] if key[5] == key[6] else f"{key[5]}/{key[6]}", "backend": r["backend"]}
    if has_ctx:
        row["context"] = "—" if recommend.isna(key[7]) else int(key[7])
    row.update({f"{t} t/s": _speed_cell(g[g["test"] == t]) for t in tests})
    row["machine load"] = _load_text(g)
    if not (g["status"] == "measured").all():
        row["VRAM peak MiB"] = _no_fit_text(r.get("vram_free_before_mib"))
        return row
    vram = _vram_text(bool(r["vram_available"]), r["vram_peak_delta_mib"], r["vram_reason"])
    if not one_call and bool(r["vram_available"]) and not has_ctx:
        vram = f"≤ {vram} (peak of the whole call)"
    row["VRAM peak MiB"] = vram
    return row


def _load_text(g: pd.DataFrame) -> str:
    """What other processes took of the machine while this setting's llama-bench calls ran (measure/load.py):
    "loaded" when they took enough to make the speeds not the setting's own."""
    if "loaded" not in g or not g.get("load_available", pd.Series(dtype=bool)).fillna(False).astype(bool).any():
        return "not measured"
    share = g["load_other_cpu_share"].max()
    pct = "?" if recommend.isna(share) else f"{share:.0%}"
    return f"LOADED: others took {pct}" if g["loaded"].fillna(False).astype(bool).any() else f"clean ({pct})"


def _loaded_note(df: pd.DataFrame) -> str | None:
    """The speed table's word on machine load: how many settings ran on a loaded machine, or why none was checked."""
    loads = df["machine load"]
    loaded = int(loads.str.startswith("LOADED").sum())
    if loaded:
        return (f"{loaded} of {len(df)} settings were measured while other processes took more than "
                f"{LOADED_SHARE:.0%} of the CPUs (machine load, LOADED): their speeds are lower than the setting's "
                "own even where the repetitions agree. Rerun those llama-bench jobs on an idle machine "
                "(snakemake --forcerun llama_bench).")
    if (loads == "not measured").all():
        return "Machine load not measured (records made before ggufbench sampled it, or no /proc)."
    return None


def _no_vram_why(bench: pd.DataFrame) -> str | None:
    """Why no row has a VRAM reading (None: some do)."""
    if bench["vram_available"].fillna(False).astype(bool).any():
        return None
    if bench["vram_reason"].notna().any():
        return str(bench["vram_reason"].dropna().iloc[0])
    return "the llama-bench records hold no VRAM reading and no reason"


def speed_table(bench: pd.DataFrame) -> str:
    """One row per build × quant × setting (offload strategy, threads, KV types, context); a column per
    llama-bench test with the median t/s and the repetitions' min–max, or "does not fit in N GiB"; VRAM of the
    llama-bench call."""
    if not present(bench, "build", "model", "quant", "test"):
        return _empty("llama-bench results", "speed and VRAM come from llama-bench runs (bench: in the config)")
    b = with_strategy(bench)
    b = b.assign(status=b["status"].fillna("measured") if "status" in b else "measured")
    has_ctx = "setting_context" in b and b["setting_context"].notna().any()
    keys = ["build", "model", "quant", "strategy_label", "n_threads", "type_k", "type_v"]
    if has_ctx:
        keys.append("setting_context")
    tests = list(dict.fromkeys(b["test"]))
    calls = b.groupby(["build", "model", "quant"])["strategy_label"].nunique()
    order = b.sort_values(["build", "model", "file_size_bytes"], ascending=[True, True, False])
    df = pd.DataFrame([_speed_row(key, g, tests, has_ctx=has_ctx, one_call=calls.get(key[:3], 1) == 1)
                       for key, g in order.groupby(keys, sort=False)])
    if df["model"].nunique() == 1:
        df = df.drop(columns="model")
    table = _table(df, "speed", {"size GiB", "threads", "context", "VRAM peak MiB", *[f"{t} t/s" for t in tests]},
                   row_class=lambda i, d=df: "nofit" if str(d["VRAM peak MiB"].iloc[i]).startswith("does not")
                   else "loaded" if d["machine load"].iloc[i].startswith("LOADED") else None)
    reps = {len(json.loads(s)) for s in bench["samples_ts"] if isinstance(s, str)} if "samples_ts" in bench else set()
    emu = bench["gpu_emulated_free_mib"].dropna() if "gpu_emulated_free_mib" in bench else pd.Series(dtype=float)
    emulated = None if emu.empty else f"{emu.iloc[0] / 1024:g}"
    html = _macro("speed")(table, [str(n) for n in sorted(reps)], has_ctx, _no_vram_why(bench), emulated,
                           _loaded_note(df))
    if not (b["status"] == "measured").any():
        html = _empty("llama-bench setting that fit", f"all {len(df)} settings ran out of device memory; offload "
                      "part of the model (bench.strategies: n_cpu_moe, override_tensor or fit_target)") + html
    return html


# ---------------------------------------------------------------------------------------------- recommendations

def _rec_row(label: str, r, fits: int, total: int, smallest) -> dict:
    if r is None:
        return {"budget": label, "run": "nothing fits",
                "KV": "—", "offload / threads": "—", "KLD": "—", "KLD 99.9%": "—", "PPL": "—", "tg t/s": "—",
                "pp t/s": "—", "memory GiB": "—",
                "evidence": (f"the smallest need is {smallest['need_bytes'] / GIB:.3f} GiB ({smallest['quant']}, "
                             f"{smallest['basis']})" if smallest is not None else "no candidates")}
    tg = "—" if recommend.isna(r["tg"]) else f"{r['tg']:.1f} ({r['tg_lo']:.1f}–{r['tg_hi']:.1f})"
    return {
        "budget": label, "run": r["quant"], "KV": r["kv"],
        "offload / threads": "—" if recommend.isna(r["strategy"]) else f"{r['strategy']}, -t {r['threads']}",
        "KLD": "0 (baseline)" if r["kld"] == 0 else _pm(r["kld"], r["kld_u"], "{:.6f}"),
        "KLD 99.9%": "—" if recommend.isna(r["kld_p99_9"]) else f"{r['kld_p99_9']:.4f}",
        "PPL": _pm(r["ppl"], r["ppl_u"]), "tg t/s": tg, "pp t/s": "—" if recommend.isna(r["pp"]) else f"{r['pp']:.0f}",
        "memory GiB": f"{r['need_bytes'] / GIB:.3f}",
        "evidence": f"{r['basis']}; {fits} of {total} settings fit",
    }


def _proof(server: pd.DataFrame, build: str, model: str, gib: float, ctx: int):
    if server is None or server.empty:
        return None
    s = server[(server["build"] == build) & (server["model"] == model) & (server["context"] == ctx)
               & ((server["budget_gib"] - gib).abs() < 1e-9)]
    return s.iloc[0] if not s.empty else None


def _proof_cells(p) -> dict:
    if p is None:
        return {"proven": "not checked (no server check in this run: server.check, report budgets)"}
    if p["status"] != "started":
        tried = json.loads(p["attempts"] or "[]")
        why = "; ".join(f"{a['quant']} {a['strategy']}: {a.get('reason', a['status'])}" for a in tried)
        return {"proven": f"{p['status']}" + (f" ({why})" if why else "")}
    vram = "" if recommend.isna(p["server_vram_peak_mib"]) else f", {p['server_vram_peak_mib']:.0f} MiB"
    tries = "" if p["n_attempts"] == 1 else f" (attempt {int(p['n_attempts'])}: the better ones did not fit)"
    return {"proven": f"started in {p['load_seconds']:.1f} s, {p['server_predicted_ts']:.1f} tok/s{vram}{tries}"}


def _budget_pick(c: pd.DataFrame, gib: float, proof):
    """The pick for a budget: the candidate whose server check started, else (no check) the best that fits."""
    if proof is not None and proof["status"] == "started":  # what started is what is recommended
        s = json.loads(proof["attempts"])[-1]
        keys = ("quant", "strategy", "threads", "kv")
        same = [x for x in recommend.ranked(c, gib) if [str(x[k]) for k in keys] == [str(s[k]) for k in keys]]
        return same[0] if same else None  # None: the tables changed since the check; rerun it
    fit = c[c["need_bytes"] <= gib * GIB]
    return recommend.pick(fit) if not fit.empty and proof is None else None


# candidates' column -> the picks' columns that show it: left out where no candidate has it (no kld:, a model with
# only its baseline, a speed-only study), rather than a column of dashes
REC_QUALITY = {"kld": ["KLD", "KLD 99.9%"], "ppl": ["PPL"]}


def _rec_table(rows: list[dict], measured: set[str]) -> pd.DataFrame:
    """The rows of a picks or ladder table, with the quality columns of what was measured (a REC_QUALITY key)."""
    return pd.DataFrame(rows).drop(columns=[c for k, cols in REC_QUALITY.items() if k not in measured for c in cols])


def _measured(c: pd.DataFrame) -> set[str]:
    return {k for k in REC_QUALITY if c[k].notna().any()}


def _ladder(c: pd.DataFrame, ctx: int, model: str) -> dict:
    smallest = c.loc[c["need_bytes"].idxmin()]
    ladder = recommend.memory_ladder(c)
    rows = [_rec_row(f"from {r['need_bytes'] / GIB:.3f} GiB", r, int((c["need_bytes"] <= r["need_bytes"]).sum()),
                     len(c), smallest) for _, r in ladder.iterrows()]
    return {"ctx": ctx, "best": len(ladder), "total": len(c), "table": _table(
        _rec_table(rows, _measured(c)).rename(columns={"budget": "memory"}), f"ladder-{model}",
        {"KLD", "KLD 99.9%", "PPL", "tg t/s", "pp t/s", "memory GiB"})}


def _model_picks(tables: dict[str, pd.DataFrame], config: dict, model: str, commands: list) -> dict:
    """One model's block: a pick per VRAM budget and served context, and the memory ladder at the first context
    with candidates (ladder None: nothing to recommend from). Proven commands are appended to commands."""
    build = _first_build(tables, model)
    title = (config.get("models", {}).get(model) or {}).get("title", model)
    budgets = recommend.budgets_from_config(config)
    block = {"title": title, "build": build, "model": model, "picks": None, "ladder": None}
    rows, measured = [], set()
    for ctx in serve_contexts(config):
        c = recommend.candidates(tables, config, model, build, ctx)
        if c.empty:
            continue
        measured |= _measured(c)
        block["ladder"] = block["ladder"] or _ladder(c, ctx, model)
        smallest = c.loc[c["need_bytes"].idxmin()]
        for label, gib in budgets:
            proof = _proof(tables.get("server"), build, model, gib, ctx)
            fit = int((c["need_bytes"] <= gib * GIB).sum())
            rows.append({"context": ctx, **_rec_row(label, _budget_pick(c, gib, proof), fit, len(c), smallest),
                         **_proof_cells(proof)})
            if proof is not None and proof["status"] == "started":
                commands.append((f"{title}, {label}, ctx {ctx}", proof["command"]))
    if rows:
        block["picks"] = _table(_rec_table(rows, measured), f"recommendations-{model}",
                                {"context", "KLD", "KLD 99.9%", "PPL", "tg t/s", "pp t/s", "memory GiB"})
    return block


def recommendations(tables: dict[str, pd.DataFrame], config: dict) -> str:
    models = _models(tables)
    if not models:
        return _empty("results to recommend from")
    frames = [t for t in (tables["bench"], tables["perplexity"]) if present(t, "gpu_name")]
    measured_on = sorted({str(g) for t in frames for g in t["gpu_name"].dropna() if g})
    target = (config.get("report") or {}).get("target_gpu") or {}
    commands = []
    blocks = [_model_picks(tables, config, model, commands) for model in models]
    with_kld = {m for m in models if not scoreboard_kld(_of(tables["kld"], _first_build(tables, m), m)).empty}
    metric = ("mean KLD against the baseline" if with_kld == set(models) else "perplexity" if not with_kld
              else "mean KLD against the baseline where measured, else perplexity")
    if not present(tables["perplexity"]):
        metric = None  # candidates without PPL cells are ranked by speed (recommend.pick)
    shown_target = str(target["name"]) if target.get("name") and target.get("name") not in measured_on else None
    return _macro("recommendations")(blocks, commands, metric, measured_on, shown_target,
                                     _recommendations_missing(tables))


def _recommendations_missing(tables: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    """(what, why) for each kind of result the picks had to do without."""
    out = []
    if not present(tables["perplexity"]):
        out.append(("perplexity results" if present(tables["kld"]) else "quality results",
                    "the picks are by speed alone; perplexity: or kld: in the config measures what each quant costs "
                    "in quality"))
    bench = tables["bench"]
    if not present(bench):
        out.append(("llama-bench results", "the picks are by quality alone, without speeds, their memory from the "
                    "file sizes (bench: in the config measures speed and VRAM)"))
    elif measured_rows(bench).empty:
        out.append(("llama-bench setting that fit", "every llama-bench call ran out of device memory: the picks are "
                    "by quality alone, their memory from the file sizes"))
    return out


def tuner_table(tune: pd.DataFrame | None) -> str:
    if tune is None or tune.empty:
        return _macro("tuner")(None)
    cols = {"build": "build", "quant": "quant", "budget_gib": "budget GiB", "context": "context",
            "status": "status", "best_n_cpu_moe": "best -ncmoe", "best_tg_ts": "tg t/s", "best_vram_mib": "VRAM MiB",
            "n_runs": "runs", "full_sweep_runs": "full sweep runs", "reason": "note"}
    t = tune[[c for c in cols if c in tune]].rename(columns=cols)
    for c in ("tg t/s", "VRAM MiB"):
        if c in t:
            t[c] = t[c].map(lambda v: "—" if recommend.isna(v) else f"{v:.1f}")
    return _macro("tuner")(_table(t, "tuner", {"budget GiB", "context", "best -ncmoe", "tg t/s", "VRAM MiB", "runs",
                                               "full sweep runs"}))


# ---------------------------------------------------------------------------------------------- tasks

def _rate_cell(rate, low, high) -> str:
    """A proportion in % with its 95% Wilson interval: '54.5 % [51.3, 57.7]'."""
    if recommend.isna(rate):
        return "—"
    return f"{100 * rate:.1f} % [{100 * low:.1f}, {100 * high:.1f}]"


def _task_row(r, is_base: bool) -> dict:
    row = {"quant": r["quant"] + (" (baseline)" if is_base else ""), "KV": r["kv"],
           "accuracy": _rate_cell(r["accuracy"], r["accuracy_low"], r["accuracy_high"]),
           "KLD": "—" if recommend.isna(r.get("kld_mean")) else _pm(r["kld_mean"], r["kld_mean_uncertainty"], "{:.6f}")}
    if is_base or recommend.isna(r.get("flip_rate")):
        return {**row, "flips r→w / w→r": "(baseline)" if is_base else "—", "flip rate": "—", "net change": "—",
                "beyond noise": "—"}
    return {**row, "flips r→w / w→r": f"{int(r['right_to_wrong'])} / {int(r['wrong_to_right'])}",
            "flip rate": _rate_cell(r["flip_rate"], r["flip_low"], r["flip_high"]),
            "net change": f"{100 * r['net_change']:+.1f} pt (p = {r['mcnemar_p']:.2g})",
            "beyond noise": "—" if recommend.isna(r.get("beyond_noise")) else ("yes" if r["beyond_noise"] else "no")}


def _flip_budget(n: int) -> str:
    """What n questions resolve: the Wilson interval of a 2% flip rate, and the questions 2% vs 4% needs."""
    low, high = wilson(round(0.02 * n), n)
    return (f"{n} questions: a 2% flip rate reads as [{100 * low:.1f}, {100 * high:.1f}] % (95%); telling 2% from 4% "
            f"needs about {questions_for_flip_rate(0.02, 0.04):,} questions")


def _task_block(build: str, model: str, task_set: str, g: pd.DataFrame) -> dict:
    main = g[g["variant"] == "main"].sort_values("file_size_bytes", ascending=False)
    noise = g[g["variant"] == "noise_floor"]
    base = (main["baseline_quant"].iloc[0], main["baseline_kv"].iloc[0]) if "baseline_quant" in main else (None, None)
    rows = [_task_row(r, (r["quant"], r["kv"]) == base) for _, r in main.iterrows()]
    n = int(main["n_tasks"].max())
    floor = None
    if not noise.empty and "flip_k" in noise:
        r = noise.iloc[0]
        floor = (f"{int(r['flip_k'])} of {n} answers changed when the baseline was scored again with -b "
                 f"{_chunks(r.get('batch'))} -ub {_chunks(r.get('ubatch'))}")
    return {"build": build, "model": model, "task_set": task_set, "n": n, "kind": str(main["task_set_kind"].iloc[0]),
            "source": str(main["task_set_source"].iloc[0]), "chance": f"{100 * main['random_chance'].iloc[0]:.1f} %",
            "floor": floor, "budget": _flip_budget(n),
            "table": _table(pd.DataFrame(rows), f"tasks-{build}-{model}-{task_set}",
                            {"accuracy", "KLD", "flips r→w / w→r", "flip rate", "net change"})}


def tasks_section(tasks: pd.DataFrame | None) -> str:
    """Does the quant change the answers? Per build, model and task set: accuracy, the answers that flipped against
    the baseline cell (both ways), the flip rate, the net change with McNemar's exact p, beside the mean KLD; the
    noise floor, and what the number of questions can resolve (the flip budget)."""
    if not present(tasks, "build", "model", "task_set", "variant", "accuracy"):
        return _macro("tasks")(None, None)
    blocks = [_task_block(b, m, t, g) for (b, m, t), g in tasks.groupby(["build", "model", "task_set"], sort=False)]
    return _macro("tasks")(blocks, str(tasks["build"].iloc[0]))


# ---------------------------------------------------------------------------------------------- paired

PAIRED_FIRST_N = 8  # the ranking after this many chunks, set beside the ranking over all of them


def _g(v) -> str:
    return "—" if recommend.isna(v) else f"{v:.3g}"


def paired_section(tables: dict[str, pd.DataFrame]) -> str:
    """Is A better than B? Each neighbouring pair of the KLD scoreboard, each KV type against f16, each build
    against the first: the mean KLD difference on the same chunks, its paired ± and verdict, the chunks needed."""
    from .paired import comparisons, ranking_holds

    chunks, kld = tables.get("chunks", pd.DataFrame()), tables["kld"]
    if not present(kld, "build", "model", "ctx", "kv", "quant", "kld_mean"):
        return _empty("KLD results", "paired comparisons compare two KLD runs on the same chunks: kld: in the "
                      "config, with two quants besides the baseline or a quant with two KV types (kld.kv)")
    c = comparisons(chunks, kld)
    if c.empty and not present(chunks, "stage", "kld"):
        return _empty("per-chunk KLD results", "paired comparisons need two KLD runs on the same chunks "
                      "(results/tables/chunks.parquet; runs made before it was recorded have none)")
    if c.empty:
        return _empty("two KLD runs on the same chunks", "paired comparisons need two quants of a model besides "
                      "its baseline, or a quant with two KV types (kld.kv)")
    k = c[c["stat"] == "kld"]
    blocks = []
    for kind, title in (("quant", "Neighbouring quants on the scoreboard"), ("kv", "Is a quantized KV cache free?"),
                        ("build", "llama.cpp builds, paired")):
        g = k[k["comparison"] == kind]
        if g.empty:
            continue
        where = [c_ for c_ in ("build", "model", "ctx", "kv", "quant") if c_ in g and g[c_].notna().any()]
        shown = g[where].astype(str).assign(**{
            "A": g["a"], "B": g["b"], "Δ KLD (A−B)": g["diff"].map(lambda v: f"{v:+.5f}"),
            "± 95% paired": g["half_width"].map(lambda v: f"{v:.5f}"), "paired SE": g["paired_se"].map(_g),
            "quadrature SE": g["quadrature_se"].map(_g), "paired / quadrature": g["se_ratio"].map(_g),
            "verdict": g["verdict"], "chunks": g["n_chunks"].astype(str),
            "chunks needed": g["chunks_needed"].map(lambda v: "—" if recommend.isna(v) else str(int(v)))})
        verdicts = list(g["verdict"])
        table = _table(shown, f"paired-{kind}", {"Δ KLD (A−B)", "± 95% paired", "paired SE", "quadrature SE",
                                                 "paired / quadrature", "chunks", "chunks needed"},
                       row_class=lambda i, v=verdicts: "pick" if v[i].endswith("better") else None)
        only_paired = [f"{r.a} vs {r.b}" for r in g.itertuples() if r.resolved and not r.quadrature_resolved]
        needed = g[g["verdict"] == "not resolved"]["chunks_needed"].dropna()
        blocks.append({"title": title, "table": table, "only_paired": only_paired,
                       "needed": int(needed.max()) if kind == "quant" and not needed.empty else None})
    holds = ranking_holds(chunks, PAIRED_FIRST_N)
    ranking = [f"{r.model} ctx {r.ctx} KV {r.kv}: after {r.first_n} of {r.n_chunks} chunks {r.order_first_n}; "
               f"over all {r.order_all} ({'the same' if r.holds else 'NOT the same'})" for r in holds.itertuples()]
    return _macro("paired")(blocks, ranking)


def _verdict_text(v: dict) -> str:
    return v["verdict"] if v["verdict"] != "unresolved" else "not resolved"


def _kv_cost_positions(pos: pd.DataFrame) -> dict:
    """One quant's position curve at one context: per KV type and position bin, the mean KLD with its 95 % interval
    over chunks, and how much it grew over the first bin (paired on the chunks)."""
    p = pos.sort_values(["kv", "bin"], kind="stable")
    shown = pd.DataFrame({
        "KV": p["kv"].to_numpy(),
        "positions": [f"{lo:,}–{hi - 1:,}" for lo, hi in zip(p["pos_lo"], p["pos_hi"], strict=True)],
        "tokens": p["count"].astype(int).astype(str).to_numpy(),
        "mean KLD ± 95%": [f"{v:.6f} ± {h:.6f}" for v, h in zip(p["kld_mean"], p["kld_half_width"], strict=True)],
        "resolved": ["yes" if r else "no" for r in p["kld_resolved"]],
        "vs first bin ± 95%": [f"{d:+.6f} ± {h:.6f}" if b else "—" for d, h, b in
                               zip(p["growth_vs_first"], p["growth_half_width"], p["bin"], strict=True)],
        "growth resolved": ["—" if b == 0 else ("yes" if r else f"no ({_chunks_needed(n)} chunks would)")
                            for r, n, b in zip(p["growth_resolved"], p["growth_chunks_needed"], p["bin"],
                                               strict=True)]})
    return _table(shown, "kv-cost-positions", {"tokens", "mean KLD ± 95%", "vs first bin ± 95%"})


def _chunks_needed(v) -> str:
    return "—" if recommend.isna(v) else str(int(v))


def kv_cost_section(tables: dict[str, pd.DataFrame], config: dict) -> str:
    """Is q8_0 KV free at C tokens? Per quant and context, every KV type of kv_cost against the reference KV type on
    the same tokens: mean KLD over llama-perplexity's second half with the paired verdict (kv_cost.free_kld) and the
    chunks it would take, the cost over every position, and the position curve."""
    from ..measure.kv_cost import row_verdict

    kc, pos = tables.get("kv_cost", pd.DataFrame()), tables.get("kv_cost_positions", pd.DataFrame())
    if not present(kc, "build", "model", "quant", "ctx", "kv", "half_kld_mean"):
        return _empty("KV-cost results", "kv_cost: in the config measures what each KV type costs at the contexts "
                      "you serve (ggufbench-kvscore, built with llama.cpp; docs/kv-cost.md)")
    tol = float((config.get("kv_cost") or {}).get("free_kld", 0.001))
    blocks = []
    for (build, model, quant, ctx), g in kc.groupby(["build", "model", "quant", "ctx"], sort=False):
        verdicts = [row_verdict(r, tol) for r in g.to_dict("records")]
        shown = pd.DataFrame({
            "KV": g["kv"].to_numpy(),
            "mean KLD (2nd half)": [_pm(v, u, "{:.6f}") for v, u in zip(g["half_kld_mean"],
                                                                        g["half_kld_mean_uncertainty"], strict=True)],
            "95% over chunks": [f"{v['low']:.6f} – {v['high']:.6f}" if not recommend.isna(v["low"]) else "—"
                                for v in verdicts],
            "verdict": [_verdict_text(v) for v in verdicts],
            "chunks needed": [_chunks_needed(v["chunks_needed"]) for v in verdicts],
            "ln PPL(KV)/PPL(ref)": [f"{v:+.5f} ± {u:.5f}" for v, u in zip(g["half_ln_ppl_ratio"],
                                                                          g["half_ln_ppl_ratio_uncertainty"],
                                                                          strict=True)],
            "same top p %": [_pm(v, u, "{:.2f}") for v, u in zip(g["half_same_top_p_pct"],
                                                                 g["half_same_top_p_pct_uncertainty"], strict=True)],
            "KLD 99% (approx.)": g["half_kld_p99"].map(lambda v: f"{v:.5f}").to_numpy(),
            "mean KLD (all positions)": g["all_kld_mean"].map(lambda v: f"{v:.6f}").to_numpy(),
            "chunks": g["n_chunks"].astype(int).astype(str).to_numpy(),
            "peak RSS GiB": g["peak_rss_bytes"].map(_gib).to_numpy()})
        words = [v["verdict"] for v in verdicts]
        table = _table(shown, "kv-cost", {"mean KLD (2nd half)", "95% over chunks", "chunks needed",
                                          "ln PPL(KV)/PPL(ref)", "same top p %", "KLD 99% (approx.)",
                                          "mean KLD (all positions)", "chunks", "peak RSS GiB"},
                       row_class=lambda i, w=words: "pick" if w[i] == "free" else None)
        p = pos[(pos["build"] == build) & (pos["model"] == model) & (pos["quant"] == quant) & (pos["ctx"] == ctx)] \
            if present(pos, "build", "model", "quant", "ctx") else pd.DataFrame()
        blocks.append({"title": f"Is {', '.join(g['kv'])} KV free at {int(ctx):,} tokens? {model} {quant} "
                                f"[{build}], against {g['ref_kv'].iloc[0]} KV",
                       "table": table, "positions": _kv_cost_positions(p) if not p.empty else None})
    return _macro("kv_cost")(blocks, tol)


# ---------------------------------------------------------------------------------------------- builds, provenance

def builds_comparison(tables: dict[str, pd.DataFrame]) -> str:
    from .compare import compare_builds

    builds = list(tables["builds"]["build"]) if not tables["builds"].empty else []
    if len(builds) < 2:
        return _macro("builds_compared")(None)
    comparisons = []
    base = builds[0]
    by = tables["builds"].set_index("build")

    def llama(b: str) -> str:
        r = by.loc[b]
        return f"{str(r.get('llama_cpp_commit') or '?')[:12]}" + (
            f" ({_source_text(r.get('source'))})" if r.get("source") else "")

    for other in builds[1:]:
        same = str(by.loc[base].get("llama_cpp_commit")) == str(by.loc[other].get("llama_cpp_commit"))
        what = {"base_llama": llama(base), "other_llama": llama(other), "same_commit": same}
        for name, df in compare_builds(tables, base, other).items():
            if df.empty:
                continue
            n_flag = int(df["beyond noise"].sum())
            shown = df.copy()
            for c in shown.columns:
                if shown[c].dtype.kind == "f":
                    shown[c] = shown[c].map(lambda v: f"{v:.6g}")
            flagged = list(df["beyond noise"])
            table = _table(shown, f"compare-{name}-{other}", set(shown.columns[len(df.columns) - 5:]),
                           row_class=lambda i, f=flagged: "pick" if f[i] else None)
            comparisons.append({**what, "name": name, "other": other, "base": base, "flagged": n_flag, "cells": len(df),
                                "table": table, "folded": not (n_flag or len(df) <= 12)})
    return _macro("builds_compared")(comparisons)


def _source_text(src: str) -> str:
    try:
        s = json.loads(src)
    except (TypeError, ValueError):
        return str(src)
    kind = s.get("kind")
    if kind == "pypi_sdist":
        return f"PyPI sdist {s.get('package')}=={s.get('version')} (sha256 {s.get('sdist_sha256', '?')[:12]}…)"
    if kind == "tarball":
        return (f"tarball {Path(str(s.get('path', ''))).name} (sha256 {str(s.get('sha256', '?'))[:12]}…)"
                + (", commit declared" if s.get("commit_declared") else ""))
    if kind == "git":
        return f"git {s.get('url')} @ {s.get('ref')}"
    return ", ".join(f"{k}={v}" for k, v in s.items() if k != "commit")


def provenance_block(tables: dict[str, pd.DataFrame]) -> str:
    builds = tables["builds"]
    frames = [t for t in (tables["perplexity"], tables["kld"], tables["bench"]) if not t.empty]
    rows = pd.concat(frames) if frames else pd.DataFrame()
    records = facts = corpora = ppl_settings = None
    if not builds.empty:
        records, facts, corpora = [], [], []
        for _, b in builds.iterrows():
            flags = " ".join(a for a in str(b.get("cmake_args") or "").split()
                             if not a.startswith(("-DLLAMA_BUILD_", "-DCMAKE_BUILD_TYPE", "-DBUILD_SHARED")))
            cuda = f"nvcc {b['nvcc_version']}, arch {b.get('cuda_architectures')}" if not recommend.isna(
                b.get("nvcc_version")) else "no CUDA (CPU build)"
            records.append({"build": str(b["build"]), "version": str(b.get("llama_cpp_version")),
                            "commit": str(b.get("llama_cpp_commit")), "source": _source_text(b.get("source")),
                            "backend": str(b.get("backend")), "cuda": cuda,
                            "built_with": str(b.get("built_with") or b.get("cxx_version")), "flags": flags})
        if not rows.empty:
            for col, name in (("gpu_name", "GPU"), ("gpu_driver", "NVIDIA driver"), ("cpu_name", "CPU"),
                              ("host", "host")):
                vals = sorted({str(v) for v in rows[col].dropna() if str(v)}) if col in rows else []
                facts.append((name, ", ".join(vals) if vals else "none"))
            if "corpus" in rows:
                c = rows[["corpus", "corpus_source", "corpus_sha256"]].dropna().drop_duplicates()
                corpora = [tuple(str(v) for v in r) for r in c.itertuples(index=False)]
            p = tables["perplexity"]
            if not p.empty:
                cols = [c for c in ("ctx", "chunks", "threads", "n_gpu_layers", "flash_attn") if c in p]
                settings = p[cols].drop_duplicates()
                ppl_settings = "; ".join(
                    f"ctx {r.ctx}: --chunks {_chunks(r.chunks)}, -t {r.threads}, "
                    + ("" if pd.isna(getattr(r, "n_gpu_layers", None)) else f"-ngl {int(r.n_gpu_layers)}, ")
                    + f"-fa {r.flash_attn}" for r in settings.itertuples())
    cols = ["build", "backend", "llama_cpp_version", "llama_cpp_commit", "binary_commit", "source_kind",
            "cmake_args", "cxx_version", "nvcc_version", "cuda_architectures", "reused_from_cache"]
    build_table = _table(builds[[c for c in cols if c in builds.columns]], "builds") if records is not None else None
    files = hardware = corpus_table = None
    if frames:
        fcols = ["model", "quant", "origin", "origin_repo", "origin_revision", "file", "n_files", "file_size_bytes",
                 "file_sha256"]
        f = rows[[c for c in fcols if c in rows.columns]].drop_duplicates()
        files = _table(f.sort_values(["model", "file_size_bytes"], ascending=[True, False]), "files",
                       {"file_size_bytes", "n_files"})
        hardware = _table(rows[["build", "backend", "host", "cpu_name", "gpu_name", "gpu_driver"]].drop_duplicates(),
                          "hardware")
        if "corpus" in rows:
            corpus_table = _table(rows[["corpus", "corpus_source", "corpus_sha256"]].dropna().drop_duplicates(),
                                  "corpora")
    return _macro("provenance")(records, facts, corpora, ppl_settings, build_table, files, hardware, corpus_table)


# ---------------------------------------------------------------------------------------------- page

def _figure(path: str | Path) -> dict:
    """A figure embedded as a data: URI (base64 needs no escaping), its question the caption."""
    path = Path(path)
    return {"stem": path.stem, "name": path.name, "question": FIGURES.get(path.stem, path.stem),
            "data": base64.b64encode(path.read_bytes()).decode()}


def render(tables: dict[str, pd.DataFrame], figures: list[str | Path], title: str, config: dict) -> str:
    sections = [
        ("recommendations", "Recommendations per VRAM budget", recommendations(tables, config)),
        ("scoreboard", "Scoreboard: quality per quant", scoreboard(tables["perplexity"], tables["kld"], config)),
        ("tasks", "Does the quant change the answers? Task accuracy and flips", tasks_section(tables.get("tasks"))),
        ("paired", "Is A better than B? Paired on the same chunks", paired_section(tables)),
        ("kv", "KV-cache matrix: PPL by KV type and context", kv_matrix(tables["perplexity"], tables["kld"])),
        ("kv-cost", "KV cost at the context you serve", kv_cost_section(tables, config)),
        ("speed-vram", "Speed and VRAM (llama-bench)", speed_table(tables["bench"])),
        ("tuner", "Offload tuner", tuner_table(tables.get("tune"))),
        ("claims", "The study's claims, measured", claims_section(tables, config)),
        ("builds-compared", "llama.cpp builds compared", builds_comparison(tables)),
        ("figures", "Figures", _macro("figures")([_figure(f) for f in figures])),
        ("provenance", "Provenance", provenance_block(tables)),
    ]
    return _ENV.get_template("summary.html.j2").render(
        title=title, generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), sections=sections)


def write_report(table_paths, figure_paths, out, title: str, config: dict) -> None:
    tables = {Path(p).stem: read_table(p) for p in table_paths}
    for name in ("perplexity", "kld", "bench", "builds", "tune", "server", "chunks", "tasks", "kv_cost",
                 "kv_cost_positions"):
        tables.setdefault(name, pd.DataFrame())
    write_text(out, render(tables, list(figure_paths), title, config))
