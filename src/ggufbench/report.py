"""reports/summary.html: one self-contained page (tables inline, figures embedded as data: URIs).

This is the skeleton the full report grows from: a scoreboard in the style of llama.cpp's
tools/perplexity README, the KV-cache matrix, the speed table, the figures and a provenance block. Parts
with no data say so instead of breaking the page.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path

import pandas as pd

GIB = 1024**3

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0} th,td{padding:.25rem .6rem;border:1px solid #ddd}
th{background:#f4f4f4;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#666;font-size:.85rem} .empty{color:#a33} img{max-width:100%;border:1px solid #eee}
code{background:#f4f4f4;padding:0 .2rem}
"""


def _pm(v, u, fmt="{:.4f}") -> str:
    if pd.isna(v):
        return "—"
    return f"{fmt.format(v)} ± {fmt.format(u)}" if not pd.isna(u) else fmt.format(v)


def _table(df: pd.DataFrame, table_id: str, numeric: set[str] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for _, row in df.iterrows():
        cells = []
        for c in df.columns:
            v = row[c]
            text = "—" if (not isinstance(v, str) and pd.isna(v)) else str(v)
            cls = ' class="num"' if c in numeric else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _empty(what: str) -> str:
    return f'<p class="empty">No {html.escape(what)} in this run.</p>'


def scoreboard(ppl: pd.DataFrame, kld: pd.DataFrame, config: dict) -> str:
    if ppl.empty and kld.empty:
        return _empty("perplexity or KLD results")
    parts = []
    kv0 = (config.get("perplexity", {}).get("kv") or ["f16"])[0]
    for (build, model), g in ppl.groupby(["build", "model"]):
        ctx0 = sorted(g["ctx"].unique())[0]
        p = g[(g["kv"] == kv0) & (g["ctx"] == ctx0)].set_index("quant")
        baseline = config["models"].get(model, {}).get("baseline")
        base_ppl = p["ppl"].get(baseline) if baseline in p.index else float("nan")
        k = None
        if not kld.empty:
            k = kld[(kld["build"] == build) & (kld["model"] == model) & (kld["kv"] == kld["baseline_kv"])]
            k = k.set_index("quant")
        rows = []
        for quant, r in p.sort_values("file_size_bytes", ascending=False).iterrows():
            kr = k.loc[quant] if k is not None and quant in k.index else None
            rows.append({
                "quant": quant + (" (baseline)" if quant == baseline else ""),
                "size GiB": f"{r['file_size_bytes'] / GIB:.3f}",
                "PPL": _pm(r["ppl"], r["ppl_uncertainty"]),
                "ΔPPL": "—" if pd.isna(base_ppl) else f"{r['ppl'] - base_ppl:+.4f}",
                "KLD": "0 (itself)" if quant == baseline else
                       (_pm(kr["kld_mean"], kr["kld_mean_uncertainty"], "{:.6f}") if kr is not None else "—"),
                "mean Δp": _pm(kr["dp_mean_pct"], kr["dp_mean_pct_uncertainty"], "{:.3f}") + " %"
                           if kr is not None else "—",
                "RMS Δp": _pm(kr["rms_dp_pct"], kr["rms_dp_pct_uncertainty"], "{:.3f}") + " %"
                          if kr is not None else "—",
                "same top p": _pm(kr["same_top_p_pct"], kr["same_top_p_pct_uncertainty"], "{:.3f}") + " %"
                              if kr is not None else "—",
            })
        parts.append(f"<h3>{html.escape(model)} — build <code>{html.escape(build)}</code>, ctx {ctx0}, "
                     f"KV {html.escape(kv0)}</h3>")
        parts.append(_table(pd.DataFrame(rows), f"scoreboard-{build}-{model}",
                            {"size GiB", "PPL", "ΔPPL", "KLD", "mean Δp", "RMS Δp", "same top p"}))
    if not kld.empty:
        chunks = ", ".join(sorted({str(c) for c in kld["chunks"]}))
        parts.append(f'<p class="note">KLD against the baseline quant\'s logits, --chunks {chunks}; ± as '
                     "llama-perplexity prints it (one standard error).</p>")
    return "\n".join(parts)


def _kv_cell(r) -> str:
    text = _pm(r["ppl"], r["ppl_uncertainty"])
    if r["kv"] != "f16" and pd.notna(r.get("dppl_vs_f16_kv")):
        text += f" (Δ {r['dppl_vs_f16_kv']:+.4f})"
    return text


def kv_matrix(ppl: pd.DataFrame) -> str:
    if ppl.empty:
        return _empty("perplexity results")
    parts = []
    for (build, model), g in ppl.groupby(["build", "model"]):
        g = g.assign(cell=[_kv_cell(r) for _, r in g.iterrows()])
        m = g.pivot_table(index="quant", columns=["ctx", "kv"], values="cell", aggfunc="first")
        order = g.sort_values("file_size_bytes", ascending=False)["quant"].drop_duplicates()
        m = m.reindex(order)
        m.columns = [f"ctx {c} · KV {kv}" for c, kv in m.columns]
        parts.append(f"<h3>{html.escape(model)} — build <code>{html.escape(build)}</code></h3>")
        parts.append(_table(m.reset_index(), f"kv-{build}-{model}", set(m.columns)))
        ctxs = sorted(g["ctx"].unique())
        if len(ctxs) > 1 and "kv_cost_long_minus_short" in g:
            long = g[(g["ctx"] == ctxs[-1]) & (g["kv"] != "f16")]
            if not long.empty:
                t = long[["quant", "kv", "dppl_vs_f16_kv", "kv_cost_long_minus_short"]].rename(columns={
                    "dppl_vs_f16_kv": f"ΔPPL vs f16 KV at ctx {ctxs[-1]}",
                    "kv_cost_long_minus_short": f"ΔPPL at ctx {ctxs[-1]} minus ΔPPL at ctx {ctxs[0]}"})
                parts.append(_table(t.round(4), f"kv-long-{build}-{model}", set(t.columns[2:])))
        parts.append('<p class="note">Cells measured by a KLD or baseline run are marked in the table '
                     "results/tables/perplexity.parquet (column measured_by). Δ: PPL minus the same quant's PPL "
                     "with f16 KV at the same context.</p>")
    return "\n".join(parts)


def speed_table(bench: pd.DataFrame) -> str:
    if bench.empty:
        return _empty("llama-bench results")
    df = bench.sort_values(["build", "model", "file_size_bytes", "test"], ascending=[True, True, False, True])
    out = pd.DataFrame({
        "build": df["build"], "model": df["model"], "quant": df["quant"], "test": df["test"],
        "threads": df.get("n_threads"), "t/s (median)": df["median_ts"].map("{:.2f}".format),
        "t/s range": [f"{a:.2f} – {b:.2f}" for a, b in zip(df["min_ts"], df["max_ts"], strict=True)],
        "VRAM peak (MiB)": [f"{v:.0f}" if ok and pd.notna(v) else f"n/a ({why})" for ok, v, why in
                            zip(df["vram_available"], df["vram_peak_delta_mib"], df["vram_reason"], strict=True)],
        "backend": df["backend"],
    })
    return _table(out, "speed", {"t/s (median)", "t/s range", "VRAM peak (MiB)", "threads"})


def builds_comparison(tables: dict[str, pd.DataFrame]) -> str:
    from .compare import compare_builds

    builds = list(tables["builds"]["build"]) if not tables["builds"].empty else []
    if len(builds) < 2:
        return '<p class="note">One llama.cpp build in this run: nothing to compare.</p>'
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
            parts.append(_table(shown, f"compare-{name}-{other}", set(shown.columns[len(df.columns) - 5:])))
    parts.append('<p class="note">PPL/KLD noise: both sides\' ± in quadrature (conservative); flagged beyond 2×. '
                 "Speed noise: the wider relative min–max range of the repetitions; flagged when the speedup "
                 "differs from 1 by more.</p>")
    return "\n".join(parts)


def provenance_block(tables: dict[str, pd.DataFrame]) -> str:
    parts = []
    builds = tables["builds"]
    if not builds.empty:
        cols = ["build", "backend", "llama_cpp_version", "llama_cpp_commit", "source_kind", "cmake_args",
                "cxx_version", "nvcc_version", "cuda_architectures"]
        parts.append(_table(builds[[c for c in cols if c in builds.columns]], "builds"))
    frames = [t for t in (tables["perplexity"], tables["kld"], tables["bench"]) if not t.empty]
    if frames:
        files = pd.concat(frames)[["model", "quant", "file", "file_size_bytes", "file_sha256"]].drop_duplicates()
        parts.append(_table(files.sort_values(["model", "file_size_bytes"]), "files"))
        hw = pd.concat(frames)[["host", "cpu_name", "gpu_name", "gpu_driver", "backend"]].drop_duplicates()
        parts.append(_table(hw, "hardware"))
        corp = [t for t in frames if "corpus" in t.columns]
        if corp:
            c = pd.concat(corp)[["corpus", "corpus_source", "corpus_sha256"]].dropna().drop_duplicates()
            parts.append(_table(c, "corpora"))
    return "\n".join(parts) or _empty("provenance")


def _img(path: str | Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def render(tables: dict[str, pd.DataFrame], figures: list[str | Path], title: str, config: dict) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        ("Scoreboard: quality per quant", scoreboard(tables["perplexity"], tables["kld"], config)),
        ("KV-cache matrix: PPL by KV type and context", kv_matrix(tables["perplexity"])),
        ("Speed and VRAM (llama-bench)", speed_table(tables["bench"])),
        ("llama.cpp builds compared", builds_comparison(tables)),
        ("Figures", "\n".join(_img(f, Path(f).stem) for f in figures)),
        ("Provenance", provenance_block(tables)),
    ]
    body = "\n".join(f"<section><h2>{html.escape(h)}</h2>\n{c}\n</section>" for h, c in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="note">Generated {now} by ggufbench from results/tables/*.parquet.</p>\n{body}\n'
            "</body></html>\n")


def write_report(table_paths, figure_paths, out, title: str, config: dict) -> None:
    tables = {Path(p).stem: pd.read_parquet(p) for p in table_paths}
    text = render(tables, list(figure_paths), title, config)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
