"""reports/summary.html: one self-contained page (tables inline, figures embedded as data: URIs, no script, no
request to anywhere), made from the Parquet tables alone.

Sections: recommendations per VRAM budget (report.target_gpu, report.vram_budgets_gib), the scoreboard in the
style of llama.cpp's tools/perplexity README, the KV-cache matrix, speed and VRAM, the builds compared, the
figures and the provenance. A part with no data says so, and why, instead of breaking the page.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from pathlib import Path

import pandas as pd

from ..core.io import write_text
from ..core.units import GIB
from ..measure.runs import serve_contexts
from . import recommend as rec
from .figures import FIGURES, scoreboard_kld, with_strategy

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;max-width:1200px;color:#222;
padding:0 1rem;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:2px solid #ddd}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.82rem;margin:.4rem 0}
th,td{padding:.22rem .55rem;border:1px solid #ddd;vertical-align:top}
th{background:#f4f4f4;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.pick td{background:#eef7ee} tr.nofit td{color:#888;background:#faf3f3}
pre.cmd{background:#f4f4f4;padding:.4rem .6rem;overflow-x:auto;font-size:.8rem;white-space:pre-wrap}
tbody tr:hover td{background:#fafae8}
.note{color:#555;font-size:.85rem;max-width:60rem} .empty{color:#a33;font-weight:500}
nav{font-size:.85rem;background:#f8f8f8;padding:.4rem .8rem;border:1px solid #eee}
nav a{margin-right:1rem;color:#245}
figure{margin:1rem 0 2rem} figcaption{font-size:.85rem;color:#444;margin-top:.2rem}
img{max-width:100%;border:1px solid #eee}
code{background:#f4f4f4;padding:0 .2rem;font-size:.85em} .sha{font-family:ui-monospace,monospace;font-size:.75rem}
dl.prov{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;font-size:.85rem}
dl.prov dt{font-weight:600} dl.prov dd{margin:0}
"""

# ---------------------------------------------------------------------------------------------- formatting

def _pm(v, u, fmt="{:.4f}") -> str:
    if rec.isna(v):
        return "—"
    return f"{fmt.format(v)} ± {fmt.format(u)}" if not rec.isna(u) else fmt.format(v)


def _table(df: pd.DataFrame, table_id: str, numeric: set[str] | None = None, row_class=None) -> str:
    """An HTML table; numeric columns right-aligned; row_class(i) -> a CSS class for row i (or None)."""
    numeric = numeric or set()
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for i, row in enumerate(df.itertuples(index=False)):
        cells = []
        for c, v in zip(df.columns, row, strict=True):
            text = "—" if rec.isna(v) else str(v)
            cls = ' class="num"' if c in numeric else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        cls = row_class(i) if row_class else None
        tr = f'<tr class="{cls}">' if cls else "<tr>"
        body.append(tr + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table id="{html.escape(table_id)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _empty(what: str, why: str = "") -> str:
    return f'<p class="empty">No {html.escape(what)} in this run{": " + html.escape(why) if why else ""}.</p>'


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _fold(build: str, first: str, content: list[str]) -> str:
    """The first build's tables open; every other build's folded (the builds are compared cell by cell in their
    own section)."""
    text = "\n".join(content)
    if build == first:
        return text
    return (f"<details><summary>Build <code>{html.escape(build)}</code>: the same tables (its differences from "
            f"<code>{html.escape(first)}</code> are under “llama.cpp builds compared”)</summary>\n{text}\n</details>")


def _chunks(v) -> str:
    """A --chunks value as run: a count, or `all` for none (the whole corpus; a Parquet column that mixes counts
    and nulls holds floats and NaN)."""
    return "all" if rec.isna(v) else str(int(v))


def _gib(nbytes) -> str:
    return "—" if rec.isna(nbytes) else f"{nbytes / GIB:.3f}"


def _first_build(tables: dict[str, pd.DataFrame], model: str | None = None) -> str | None:
    builds = tables["builds"]
    order = list(builds["build"]) if not builds.empty else []
    seen = [t for t in (tables["perplexity"], tables["kld"], tables["bench"]) if not t.empty]
    present = {b for t in seen for b in (t[t["model"] == model] if model else t)["build"]}
    for b in order:
        if b in present:
            return b
    return sorted(present)[0] if present else None


def _models(tables: dict[str, pd.DataFrame]) -> list[str]:
    frames = [t for t in (tables["perplexity"], tables["kld"], tables["bench"]) if not t.empty]
    return list(dict.fromkeys(m for t in frames for m in t["model"]))


# ---------------------------------------------------------------------------------------------- scoreboard

def scoreboard(ppl: pd.DataFrame, kld: pd.DataFrame, config: dict) -> str:
    """One table per build and model: quant, size, PPL ±, ΔPPL ±, KLD ±, KLD 99.9%, mean Δp ±, RMS Δp ±, same
    top p ± — the baseline's KV type, the KLD runs' context, as in llama.cpp's tools/perplexity README."""
    if ppl.empty and kld.empty:
        return _empty("perplexity or KLD results")
    if ppl.empty:
        return _empty("perplexity results", "the scoreboard needs the PPL cells")
    parts = []
    kv0 = rec.base_kv(config, kld)
    ks = scoreboard_kld(kld)
    first = str(ppl["build"].iloc[0])
    for (build, model), g in ppl.groupby(["build", "model"], sort=False):
        kctx = ks[(ks["build"] == build) & (ks["model"] == model)]
        ctx0 = int(kctx["ctx"].iloc[0]) if not kctx.empty else int(sorted(g["ctx"].unique())[0])
        p = g[(g["kv"] == kv0) & (g["ctx"] == ctx0)].set_index("quant")
        baseline = rec.baseline(config, model)
        base_ppl = p["ppl"].get(baseline) if baseline in p.index else float("nan")
        k = kctx.set_index("quant")
        rows = []
        for quant, r in p.sort_values("file_size_bytes", ascending=False).iterrows():
            kr = k.loc[quant] if quant in k.index else None
            is_base = quant == baseline
            if kr is not None:  # KLD mode's own ΔPPL: its ± accounts for both passes scoring the same tokens
                dppl = _pm(kr["ppl_diff"], kr["ppl_diff_uncertainty"])
            elif is_base:
                dppl = "0 (baseline)"
            else:
                dppl = "—" if rec.isna(base_ppl) else f"{r['ppl'] - base_ppl:+.4f}"

            def stat(col, fmt, unit="", kr=kr, is_base=is_base):
                if is_base and kr is None:
                    return "(baseline)"
                if kr is None:
                    return "—"
                unc = kr.get(f"{col}_uncertainty")
                return _pm(kr[col], unc, fmt) + unit

            rows.append({
                "quant": quant + (" (baseline)" if is_base else ""),
                "size GiB": _gib(r["file_size_bytes"]),
                "PPL": _pm(r["ppl"], r["ppl_uncertainty"]),
                "ΔPPL": dppl,
                "KLD": stat("kld_mean", "{:.6f}"),
                "KLD 99.9%": stat("kld_p99_9", "{:.4f}"),
                "mean Δp": stat("dp_mean_pct", "{:.3f}", " %"),
                "RMS Δp": stat("rms_dp_pct", "{:.3f}", " %"),
                "same top p": stat("same_top_p_pct", "{:.3f}", " %"),
            })
        parts.append(_fold(build, first, [
            f"<h3>{html.escape(model)} — build <code>{html.escape(build)}</code>, ctx {ctx0}, "
            f"KV {html.escape(kv0)}</h3>",
            _table(pd.DataFrame(rows), f"scoreboard-{build}-{model}",
                   {"size GiB", "PPL", "ΔPPL", "KLD", "KLD 99.9%", "mean Δp", "RMS Δp", "same top p"})]))
    if kld.empty:
        parts.append(_empty("KLD results", "the KLD, Δp and same-top-p columns need kld: in the config"))
    else:
        base = ", ".join(sorted({str(c) for c in kld["baseline_quant"]}))
        sharded = kld[kld["kld_mode"] == "sharded"] if "kld_mode" in kld else kld.iloc[0:0]
        if not sharded.empty:
            n = ", ".join(sorted({str(int(c)) for c in sharded["n_chunks"]}))
            s = ", ".join(sorted({str(int(c)) for c in sharded["n_shards"]}))
            scope = (f"{n} chunks scored in {s} shards (kld.mode: sharded; the percentile columns other than "
                     "max and min are estimates from the shards')")
        else:
            scope = "--chunks " + ", ".join(sorted({_chunks(c) for c in kld["chunks"]}))
        parts.append(_note(f"KLD, Δp and same top p against the {html.escape(base)} logits ({html.escape(scope)}"
                           f"); ΔPPL is KLD mode's PPL(Q)−PPL(base), whose ± accounts for the "
                           "correlation of the two passes (both score the same tokens). ± is one standard error, as "
                           "llama-perplexity prints it. Sizes are the GGUF files' bytes / 2<sup>30</sup>."))
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- KV matrix

def _kv_cell(r) -> str:
    text = _pm(r["ppl"], r["ppl_uncertainty"])
    if r["kv"] != "f16" and not rec.isna(r.get("dppl_vs_f16_kv")):
        text += f" ({r['dppl_vs_f16_kv']:+.4f})"
    return text


def kv_matrix(ppl: pd.DataFrame, kld: pd.DataFrame | None = None) -> str:
    if ppl.empty:
        return _empty("perplexity results")
    kld = kld if kld is not None else pd.DataFrame()
    parts = []
    first = str(ppl["build"].iloc[0])
    for (build, model), g in ppl.groupby(["build", "model"], sort=False):
        own = []
        g = g.assign(cell=[_kv_cell(r) for _, r in g.iterrows()])
        m = g.pivot_table(index="quant", columns=["ctx", "kv"], values="cell", aggfunc="first")
        order = g.sort_values("file_size_bytes", ascending=False)["quant"].drop_duplicates()
        kvs = list(dict.fromkeys(g["kv"]))
        m = m.reindex(index=order, columns=pd.MultiIndex.from_tuples(
            [(c, kv) for c in sorted(g["ctx"].unique()) for kv in kvs if (c, kv) in m.columns]))
        m.columns = [f"ctx {c} · KV {kv}" for c, kv in m.columns]
        own.append(f"<h3>{html.escape(model)} — build <code>{html.escape(build)}</code>: PPL ±</h3>")
        own.append(_table(m.reset_index(), f"kv-{build}-{model}", set(m.columns)))
        ctxs = sorted(g["ctx"].unique())
        if len(ctxs) > 1 and "kv_cost_long_minus_short" in g:
            long = g[(g["ctx"] == ctxs[-1]) & (g["kv"] != "f16")]
            if not long.empty:
                t = long[["quant", "kv", "dppl_vs_f16_kv", "kv_cost_long_minus_short"]].rename(columns={
                    "dppl_vs_f16_kv": f"ΔPPL vs f16 KV at ctx {ctxs[-1]}",
                    "kv_cost_long_minus_short": f"ΔPPL at ctx {ctxs[-1]} minus ΔPPL at ctx {ctxs[0]}"})
                own.append(f"<h3>Does the KV type cost more at ctx {ctxs[-1]} than at ctx {ctxs[0]}?</h3>")
                for col in t.columns[2:]:
                    t[col] = t[col].map(lambda v: "—" if rec.isna(v) else f"{v:+.4f}")
                own.append(_table(t, f"kv-long-{build}-{model}", set(t.columns[2:])))
        k = kld[(kld["build"] == build) & (kld["model"] == model)] if not kld.empty else kld
        if not k.empty and k["kv"].nunique() > 1:
            k = k.assign(cell=[_pm(v, u, "{:.6f}") for v, u in zip(k["kld_mean"], k["kld_mean_uncertainty"],
                                                                   strict=True)])
            km = k.pivot_table(index="quant", columns="kv", values="cell", aggfunc="first")
            km = km.reindex(index=order, columns=[kv for kv in kvs if kv in km.columns])
            bq, bkv = str(k["baseline_quant"].iloc[0]), str(k["baseline_kv"].iloc[0])
            if bq in km.index and bkv in km.columns and rec.isna(km.loc[bq, bkv]):
                km.loc[bq, bkv] = "0 (baseline)"
            km.columns = [f"KV {c}" for c in km.columns]
            own.append(f"<h3>Mean KLD by KV type (against {html.escape(bq)} with {html.escape(bkv)} KV, "
                         f"ctx {int(k['ctx'].iloc[0])})</h3>")
            own.append(_table(km.reset_index(), f"kv-kld-{build}-{model}", set(km.columns)))
        parts.append(_fold(build, first, own))
    parts.append(_note("(+Δ) after a PPL: minus the same quant's PPL with f16 KV at the same context. Which run "
                       "measured each cell (a PPL run, a KLD run or the baseline pass) is in "
                       "results/tables/perplexity.parquet, column measured_by."))
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- speed / VRAM

def _vram_text(ok, delta, reason) -> str:
    if ok and not rec.isna(delta):
        return f"{delta:.0f}"
    return f"n/a ({(reason or 'not measured').split(' (')[0]})"


def _no_fit_text(free_mib) -> str:
    return "does not fit" + ("" if rec.isna(free_mib) else f" in {free_mib / 1024:.1f} GiB")


def speed_table(bench: pd.DataFrame) -> str:
    """One row per build × quant × setting (offload strategy, threads, KV types, context); a column per
    llama-bench test with the median t/s and the repetitions' min–max, or "does not fit in N GiB"; VRAM of the
    llama-bench call."""
    if bench.empty:
        return _empty("llama-bench results")
    b = with_strategy(bench)
    if "status" not in b:
        b = b.assign(status="measured")
    b = b.assign(status=b["status"].fillna("measured"))
    has_ctx = "setting_context" in b and b["setting_context"].notna().any()
    keys = ["build", "model", "quant", "strategy_label", "n_threads", "type_k", "type_v"]
    if has_ctx:
        keys.append("setting_context")
    tests = list(dict.fromkeys(b["test"]))
    calls = b.groupby(["build", "model", "quant"])["strategy_label"].nunique()
    rows = []
    order = b.sort_values(["build", "model", "file_size_bytes"], ascending=[True, True, False])
    for key, g in order.groupby(keys, sort=False):
        r = g.iloc[0]
        row = {"build": key[0], "model": key[1], "quant": key[2], "size GiB": _gib(r["file_size_bytes"]),
               "offload": key[3], "threads": key[4],
               "KV": key[5] if key[5] == key[6] else f"{key[5]}/{key[6]}", "backend": r["backend"]}
        if has_ctx:
            row["context"] = "—" if rec.isna(key[7]) else int(key[7])
        fits = (g["status"] == "measured").all()
        for t in tests:
            h = g[g["test"] == t]
            if h.empty:
                row[f"{t} t/s"] = "—"
            elif h["status"].iloc[0] != "measured":
                row[f"{t} t/s"] = _no_fit_text(h["vram_free_before_mib"].iloc[0] if "vram_free_before_mib" in h
                                               else None)
            else:
                row[f"{t} t/s"] = (f"{h['median_ts'].iloc[0]:.1f} ({h['min_ts'].iloc[0]:.1f}–"
                                   f"{h['max_ts'].iloc[0]:.1f})")
        if not fits:
            row["VRAM peak MiB"] = _no_fit_text(r.get("vram_free_before_mib"))
        else:
            vram = _vram_text(bool(r["vram_available"]), r["vram_peak_delta_mib"], r["vram_reason"])
            if calls.get((key[0], key[1], key[2]), 1) > 1 and bool(r["vram_available"]) and not has_ctx:
                vram = f"≤ {vram} (peak of the whole call)"
            row["VRAM peak MiB"] = vram
        rows.append(row)
    df = pd.DataFrame(rows)
    if df["model"].nunique() == 1:
        df = df.drop(columns="model")
    out = [_table(df, "speed", {"size GiB", "threads", "context", "VRAM peak MiB", *[f"{t} t/s" for t in tests]},
                  row_class=lambda i, d=df: "nofit" if str(d["VRAM peak MiB"].iloc[i]).startswith("does not")
                  else None)]
    reps = {len(json.loads(s)) for s in bench["samples_ts"] if isinstance(s, str)} if "samples_ts" in bench else set()
    out.append(_note(
        "t/s: the median of llama-bench's repetitions"
        + (f" ({', '.join(str(n) for n in sorted(reps))})" if reps else "")
        + ", with their min–max in brackets (llama-bench's own avg_ts is skewed by a cold first repetition). "
        "VRAM: NVML's peak device memory during the llama-bench call less what was in use before it, all GPUs, "
        + ("at the context in the row: the KV cache filled to the context less the prompt (<code>-d</code>), "
           "so both tests run with a full context's memory. " if has_ctx else
           "at llama-bench's own context (prompt + generated tokens); a longer context needs more KV cache "
           "(set bench.contexts). ")
        + "<i>does not fit in N GiB</i>: llama.cpp could not allocate its buffers with N GiB free (the reason is in "
        "results/tables/bench.parquet, column reason); every other setting was still measured."))
    if not bench["vram_available"].fillna(False).astype(bool).any():
        reason = bench["vram_reason"].dropna().iloc[0] if bench["vram_reason"].notna().any() else "not measured"
        out.append(f'<p class="empty">No VRAM measured in this run: {html.escape(str(reason))}.</p>')
    emu = bench["gpu_emulated_free_mib"].dropna() if "gpu_emulated_free_mib" in bench else pd.Series(dtype=float)
    if not emu.empty:
        out.append(_note(f"Emulated card: the GPU showed only {emu.iloc[0] / 1024:g} GiB free while these ran "
                         "(gpu.emulate_free_gib; the rest held by a helper process): memory fits carry over to a "
                         "card with that much free, speeds do not (bandwidth and compute are the real GPU's)."))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- recommendations

def _rec_row(label: str, r, fits: int, total: int, smallest) -> dict:
    if r is None:
        return {"budget": label, "run": "nothing fits",
                "KV": "—", "offload / threads": "—", "KLD": "—", "KLD 99.9%": "—", "PPL": "—", "tg t/s": "—",
                "pp t/s": "—", "memory GiB": "—",
                "evidence": (f"the smallest need is {smallest['need_bytes'] / GIB:.3f} GiB ({smallest['quant']}, "
                             f"{smallest['basis']})" if smallest is not None else "no candidates")}
    tg = "—" if rec.isna(r["tg"]) else f"{r['tg']:.1f} ({r['tg_lo']:.1f}–{r['tg_hi']:.1f})"
    return {
        "budget": label, "run": r["quant"], "KV": r["kv"],
        "offload / threads": "—" if rec.isna(r["strategy"]) else f"{r['strategy']}, -t {r['threads']}",
        "KLD": "0 (baseline)" if r["kld"] == 0 else _pm(r["kld"], r["kld_u"], "{:.6f}"),
        "KLD 99.9%": "—" if rec.isna(r["kld_p99_9"]) else f"{r['kld_p99_9']:.4f}",
        "PPL": _pm(r["ppl"], r["ppl_u"]), "tg t/s": tg, "pp t/s": "—" if rec.isna(r["pp"]) else f"{r['pp']:.0f}",
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
    vram = "" if rec.isna(p["server_vram_peak_mib"]) else f", {p['server_vram_peak_mib']:.0f} MiB"
    tries = "" if p["n_attempts"] == 1 else f" (attempt {int(p['n_attempts'])}: the better ones did not fit)"
    return {"proven": f"started in {p['load_seconds']:.1f} s, {p['server_predicted_ts']:.1f} tok/s{vram}{tries}"}


def recommendations(tables: dict[str, pd.DataFrame], config: dict) -> str:
    models = _models(tables)
    if not models:
        return _empty("results to recommend from")
    budgets = rec.budgets_from_config(config)
    contexts = serve_contexts(config)
    server = tables.get("server")
    parts = []
    gpu_rows = pd.concat([t for t in (tables["bench"], tables["perplexity"]) if not t.empty])
    measured_on = sorted({str(g) for g in gpu_rows.get("gpu_name", pd.Series(dtype=str)).dropna() if g})
    target = (config.get("report") or {}).get("target_gpu") or {}
    commands = []
    for model in models:
        build = _first_build(tables, model)
        title = (config.get("models", {}).get(model) or {}).get("title", model)
        parts.append(f"<h3>{html.escape(title)} — build <code>{html.escape(build)}</code></h3>")
        rows, ladder_c = [], None
        for ctx in contexts:
            c = rec.candidates(tables, config, model, build, ctx)
            if c.empty:
                continue
            ladder_c = c if ladder_c is None else ladder_c
            smallest = c.loc[c["need_bytes"].idxmin()]
            for label, gib in budgets:
                fit = c[c["need_bytes"] <= gib * GIB]
                proof = _proof(server, build, model, gib, ctx)
                if proof is not None and proof["status"] == "started":  # what started is what is recommended
                    s = json.loads(proof["attempts"])[-1]
                    same = [x for x in rec.ranked(c, gib) if [str(x[k]) for k in ("quant", "strategy", "threads", "kv")]
                            == [str(s[k]) for k in ("quant", "strategy", "threads", "kv")]]
                    r = same[0] if same else None  # None: the tables changed since the check; rerun it
                else:
                    r = rec.pick(fit) if not fit.empty and proof is None else None
                row = {"context": ctx, **_rec_row(label, r, len(fit), len(c), smallest), **_proof_cells(proof)}
                rows.append(row)
                if proof is not None and proof["status"] == "started":
                    commands.append((f"{title}, {label}, ctx {ctx}", proof["command"]))
        if not rows and ladder_c is None:
            parts.append(_empty(f"quality or speed results for {model}"))
            continue
        if budgets:
            parts.append(_table(pd.DataFrame(rows), f"recommendations-{model}",
                                {"context", "KLD", "KLD 99.9%", "PPL", "tg t/s", "pp t/s", "memory GiB"}))
        else:
            parts.append('<p class="empty">No VRAM budget in the config: set report.vram_budgets_gib (a list of '
                         "GiB) or report.target_gpu.vram_gib for a pick per budget, and a proven command for each. "
                         "The ladder below says what to run from each memory size up.</p>")
        c = ladder_c
        smallest = c.loc[c["need_bytes"].idxmin()]
        ladder = rec.memory_ladder(c)
        lrows = [_rec_row(f"from {r['need_bytes'] / GIB:.3f} GiB", r, int((c["need_bytes"] <= r["need_bytes"]).sum()),
                          len(c), smallest) for _, r in ladder.iterrows()]
        parts.append(f"<h3>What to run from each memory size up, at ctx {contexts[0]} ({len(ladder)} of {len(c)} "
                     "settings are ever the best pick)</h3>")
        parts.append(_table(pd.DataFrame(lrows).rename(columns={"budget": "memory"}), f"ladder-{model}",
                            {"KLD", "KLD 99.9%", "PPL", "tg t/s", "pp t/s", "memory GiB"}))
    if commands:
        parts.append("<h3>The commands, proven to start</h3>")
        parts.append("".join(f"<p class='note'>{html.escape(what)}:</p><pre class='cmd'><code>{html.escape(cmd)}"
                             "</code></pre>" for what, cmd in commands))
    metric = "mean KLD against the baseline" if not tables["kld"].empty else "perplexity"
    notes = [f"Pick: the best quality ({metric}) whose memory need at that context fits the budget; among settings "
             "within the noise of the best (difference under twice the combined ±), the fastest at generation "
             "(tg median). <i>proven</i>: the pick's llama-server command was started"
             + (" with the GPU showing only the budget free" if measured_on else "")
             + ", answered a completion (its own tok/s) and was stopped; a pick that did not start gave way to the "
             "next, and one that never started is not recommended."]
    if measured_on:
        notes.append(f"Measured on {html.escape(', '.join(measured_on))}.")
    if target.get("name") and target.get("name") not in measured_on:
        notes.append(f"The target GPU is {html.escape(str(target['name']))}: memory needs carry over (the same "
                     "llama.cpp allocations, give or take the CUDA context), speeds do not.")
    notes.append("Memory: <i>measured VRAM</i> is NVML's peak during the llama-bench run of that quant and KV type; "
                 "<i>with f16 KV (upper bound)</i>: only f16-KV runs were benchmarked, a quantized KV cache needs "
                 "less; <i>KV estimate</i>: VRAM not measured, file size plus llama.cpp's KV cache from the GGUF's "
                 "architecture (compute buffers not included); <i>file size (lower bound)</i>: VRAM not measured and "
                 "no architecture in the tables for a KV estimate. ")
    notes.append("Measured VRAM leaves no headroom for the display or other processes; leave some.")
    parts.append(_note(" ".join(notes)))
    return "\n".join(parts)


def tuner_table(tune: pd.DataFrame | None) -> str:
    if tune is None or tune.empty:
        return _note("No tuner in this run (tuner.vram_budgets_gib).")
    cols = {"build": "build", "quant": "quant", "budget_gib": "budget GiB", "context": "context",
            "status": "status", "best_n_cpu_moe": "best -ncmoe", "best_tg_ts": "tg t/s", "best_vram_mib": "VRAM MiB",
            "n_runs": "runs", "full_sweep_runs": "full sweep runs", "reason": "note"}
    t = tune[[c for c in cols if c in tune]].rename(columns=cols)
    for c in ("tg t/s", "VRAM MiB"):
        if c in t:
            t[c] = t[c].map(lambda v: "—" if rec.isna(v) else f"{v:.1f}")
    return (_table(t, "tuner", {"budget GiB", "context", "best -ncmoe", "tg t/s", "VRAM MiB", "runs",
                                "full sweep runs"})
            + _note("The --n-cpu-moe with the best generation speed whose measured VRAM peak fits the budget, found by "
                    "bisection on measured VRAM and the next two N; a probe that did not fit in device memory counts "
                    "as over the budget. Every probe is also a candidate of the recommendations."))


# ---------------------------------------------------------------------------------------------- builds, provenance

def builds_comparison(tables: dict[str, pd.DataFrame]) -> str:
    from .compare import compare_builds

    builds = list(tables["builds"]["build"]) if not tables["builds"].empty else []
    if len(builds) < 2:
        return _note("One llama.cpp build in this run: nothing to compare. Add a second entry under "
                     "<code>builds:</code> to compare two builds cell by cell.")
    parts = []
    base = builds[0]
    for other in builds[1:]:
        for name, df in compare_builds(tables, base, other).items():
            if df.empty:
                continue
            n_flag = int(df["beyond noise"].sum())
            parts.append(f"<h3>{html.escape(name)}: <code>{html.escape(other)}</code> vs <code>"
                         f"{html.escape(base)}</code> — {n_flag} of {len(df)} cells differ beyond the noise</h3>")
            shown = df.copy()
            for c in shown.columns:
                if shown[c].dtype.kind == "f":
                    shown[c] = shown[c].map(lambda v: f"{v:.6g}")
            flagged = list(df["beyond noise"])
            table = _table(shown, f"compare-{name}-{other}", set(shown.columns[len(df.columns) - 5:]),
                           row_class=lambda i, f=flagged: "pick" if f[i] else None)
            parts.append(table if n_flag or len(df) <= 12 else
                         f"<details><summary>all {len(df)} cells</summary>\n{table}\n</details>")
    parts.append(_note("PPL/KLD noise: both sides' ± in quadrature (conservative); flagged (highlighted) beyond 2×. "
                       "Speed noise: the wider relative min–max range of the repetitions; flagged when the speedup "
                       "differs from 1 by more."))
    return "\n".join(parts)


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
    parts = []
    builds = tables["builds"]
    frames = [t for t in (tables["perplexity"], tables["kld"], tables["bench"]) if not t.empty]
    rows = pd.concat(frames) if frames else pd.DataFrame()
    if not builds.empty:
        dl = []
        for _, b in builds.iterrows():
            flags = " ".join(a for a in str(b.get("cmake_args") or "").split()
                             if not a.startswith(("-DLLAMA_BUILD_", "-DCMAKE_BUILD_TYPE", "-DBUILD_SHARED")))
            cuda = f"nvcc {b['nvcc_version']}, arch {b.get('cuda_architectures')}" if not rec.isna(
                b.get("nvcc_version")) else "no CUDA (CPU build)"
            dl.append(f"<dt>build <code>{html.escape(str(b['build']))}</code></dt><dd>llama.cpp "
                      f"{html.escape(str(b.get('llama_cpp_version')))}, commit <span class='sha'>"
                      f"{html.escape(str(b.get('llama_cpp_commit')))}</span>; "
                      f"{html.escape(_source_text(b.get('source')))}"
                      f"; {html.escape(str(b.get('backend')))}; {html.escape(cuda)}; "
                      f"{html.escape(str(b.get('built_with') or b.get('cxx_version')))}; flags "
                      f"<code>{html.escape(flags)}</code></dd>")
        if not rows.empty:
            for col, name in (("gpu_name", "GPU"), ("gpu_driver", "NVIDIA driver"), ("cpu_name", "CPU"),
                              ("host", "host")):
                vals = sorted({str(v) for v in rows[col].dropna() if str(v)}) if col in rows else []
                dl.append(f"<dt>{name}</dt><dd>{html.escape(', '.join(vals)) if vals else 'none'}</dd>")
            if "corpus" in rows:
                c = rows[["corpus", "corpus_source", "corpus_sha256"]].dropna().drop_duplicates()
                for _, r in c.iterrows():
                    dl.append(f"<dt>corpus <code>{html.escape(str(r['corpus']))}</code></dt><dd>"
                              f"{html.escape(str(r['corpus_source']))}, sha256 <span class='sha'>"
                              f"{html.escape(str(r['corpus_sha256']))}</span></dd>")
            p = tables["perplexity"]
            if not p.empty:
                settings = p[["ctx", "chunks", "threads", "n_gpu_layers", "flash_attn"]].drop_duplicates()
                text = "; ".join(f"ctx {r.ctx}: --chunks {_chunks(r.chunks)}, -t {r.threads}, -ngl {r.n_gpu_layers}, "
                                 f"-fa {r.flash_attn}" for r in settings.itertuples())
                dl.append(f"<dt>llama-perplexity</dt><dd>{html.escape(text)}</dd>")
        parts.append(f'<dl class="prov">{"".join(dl)}</dl>')
        cols = ["build", "backend", "llama_cpp_version", "llama_cpp_commit", "binary_commit", "source_kind",
                "cmake_args", "cxx_version", "nvcc_version", "cuda_architectures", "reused_from_cache"]
        parts.append("<details><summary>Build records in full (builds.parquet)</summary>\n"
                     + _table(builds[[c for c in cols if c in builds.columns]], "builds") + "\n</details>")
    else:
        parts.append(_empty("build records"))
    if frames:
        fcols = ["model", "quant", "origin", "origin_repo", "origin_revision", "file", "n_files", "file_size_bytes",
                 "file_sha256"]
        files = rows[[c for c in fcols if c in rows.columns]].drop_duplicates()
        parts.append("<h3>Model files</h3>")
        parts.append(_table(files.sort_values(["model", "file_size_bytes"], ascending=[True, False]), "files",
                            {"file_size_bytes", "n_files"}))
        hw = rows[["build", "backend", "host", "cpu_name", "gpu_name", "gpu_driver"]].drop_duplicates()
        parts.append("<h3>Machines</h3>")
        parts.append(_table(hw, "hardware"))
        if "corpus" in rows:
            c = rows[["corpus", "corpus_source", "corpus_sha256"]].dropna().drop_duplicates()
            parts.append(_table(c, "corpora"))
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- page

def _img(path: str | Path) -> str:
    path = Path(path)
    data = base64.b64encode(path.read_bytes()).decode()
    question = FIGURES.get(path.stem, path.stem)
    return (f'<figure id="fig-{html.escape(path.stem)}"><img alt="{html.escape(question)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(question)} '
            f"(<code>reports/figures/{html.escape(path.name)}</code>)</figcaption></figure>")


def render(tables: dict[str, pd.DataFrame], figures: list[str | Path], title: str, config: dict) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        ("recommendations", "Recommendations per VRAM budget", recommendations(tables, config)),
        ("scoreboard", "Scoreboard: quality per quant", scoreboard(tables["perplexity"], tables["kld"], config)),
        ("kv", "KV-cache matrix: PPL by KV type and context", kv_matrix(tables["perplexity"], tables["kld"])),
        ("speed-vram", "Speed and VRAM (llama-bench)", speed_table(tables["bench"])),
        ("tuner", "Offload tuner", tuner_table(tables.get("tune"))),
        ("builds-compared", "llama.cpp builds compared", builds_comparison(tables)),
        ("figures", "Figures", "\n".join(_img(f) for f in figures) or _empty("figures")),
        ("provenance", "Provenance", provenance_block(tables)),
    ]
    nav = "".join(f'<a href="#{sid}">{html.escape(h.split(":")[0])}</a>' for sid, h, _ in sections)
    body = "\n".join(f'<section id="{sid}"><h2>{html.escape(h)}</h2>\n{c}\n</section>' for sid, h, c in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="note">Generated {now} by ggufbench from results/tables/*.parquet (columns: docs/tables.md).'
            f"</p>\n<nav>{nav}</nav>\n{body}\n</body></html>\n")


def write_report(table_paths, figure_paths, out, title: str, config: dict) -> None:
    tables = {Path(p).stem: pd.read_parquet(p) for p in table_paths}
    for name in ("perplexity", "kld", "bench", "builds", "tune", "server"):
        tables.setdefault(name, pd.DataFrame())
    write_text(out, render(tables, list(figure_paths), title, config))
