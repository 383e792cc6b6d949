"""Figures from the Parquet tables, one question each, stated in the title. A figure whose data is missing or
too thin to answer its question says so on the figure instead of failing the report.

Which rows a figure draws (the scoreboard's KLD rows, the measured llama-bench rows, offload strategies, the Pareto
front) is report.rows', shared with the page and the recommendations, so the page's tables and its figures select the
same rows.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..core.io import atomic_path
from ..core.units import GIB
from .flips import spearman
from .rows import measured_rows, pareto_front, present, scoreboard_kld, with_strategy
from .tables import read_table

matplotlib.use("Agg")

DPI = 110
TITLE_SIZE = 10

# Figure key (the rule's output name and file stem) -> the question it answers. Rule figures names its outputs
# with these keys; the report shows them in this order.
FIGURES = {
    "kld_vs_size": "Which quant keeps closest to the baseline per GiB? (KLD mean and 99.9% vs file size)",
    "ppl_vs_size": "How much perplexity does each GiB saved cost? (PPL ± vs file size)",
    "kv_heatmap": "Does a quantized KV cache cost quality, and more at a longer context? (ΔPPL vs f16 KV)",
    "speed": "How fast is each quant? (llama-bench t/s, whiskers: min–max of the repetitions)",
    "speed_vs_vram": "What speed does each offload setting give for its VRAM? (t/s vs measured VRAM)",
    "threads": "How many CPU threads are best? (t/s vs threads)",
    "kld_percentiles": "How bad are each quant's worst tokens? (KLD percentiles per quant)",
    "flips_vs_kld": "Do more answers flip as KLD grows? (task flip rate vs mean KLD, every cell)",
    "kv_cost_by_position": "Does a quantized KV cache cost more further into the context? (mean KLD vs f16 KV by "
                           "position, 95 % over chunks; hollow: not resolved)",
}


# ---------------------------------------------------------------------------------------------- helpers

def _save(fig, path: str | Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:  # matplotlib picks the format by the extension
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)


def _no_data(title: str, why: str, path) -> None:
    fig, ax = plt.subplots(figsize=(8, 2.6), layout="constrained")
    ax.set_title(title, fontsize=TITLE_SIZE)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_axis_off()
    _save(fig, path)


NO_PPL = "No perplexity results in this run: perplexity: (or kld:) in the config measures them."
NO_BENCH = "No llama-bench results in this run: bench: in the config measures speed and VRAM."
NO_KV_COST = "No KV-cost results in this run: kv_cost: in the config measures them (docs/kv-cost.md)."


def _no_kld_why(kld: pd.DataFrame) -> str:
    """Why the KLD scoreboard rows are empty: no KLD at all, or KLD of the baseline's own KV types only."""
    if present(kld, "kv"):
        return ("KLD was measured only for the baseline quant with other KV types (the KV-cache matrix shows it):\n"
                "no other quant was measured against the baseline; add quants under models.<model>.quants.")
    return ("No KLD results in this run: kld: in the config measures each quant against the baseline's logits,\n"
            "and a model needs a quant besides its baseline.")


def _measured_bench(bench: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The llama-bench rows with a speed, and why there are none: nothing run, or nothing that fit."""
    if not present(bench, "build", "model", "quant", "test", "median_ts"):
        return bench.iloc[0:0], NO_BENCH
    m = measured_rows(bench)
    if m.empty:
        return m, (f"No llama-bench setting fit in device memory ({len(bench)} tests did not fit): no speed to plot.\n"
                   "The report's speed table lists them; offload part of the model (bench.strategies).")
    return m, None


def _series_label(build, model, n_groups) -> str:
    return f"{model} [{build}]" if n_groups > 1 else f"{model}"


# ---------------------------------------------------------------------------------------------- figures

def kld_vs_size(kld: pd.DataFrame, path) -> None:
    title = FIGURES["kld_vs_size"]
    k = scoreboard_kld(kld)
    if k.empty:
        return _no_data(title, _no_kld_why(kld), path)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    groups = list(k.groupby(["build", "model"]))
    for ax, (col, unc, what) in zip(axes, [("kld_mean", "kld_mean_uncertainty", "mean KLD"),
                                           ("kld_p99_9", None, "99.9% KLD")], strict=True):
        for i, ((build, model), g) in enumerate(groups):
            g = g.sort_values("file_size_bytes")
            x, y = g["file_size_bytes"] / GIB, g[col]
            ok = y > 0  # log axis: a KLD percentile of 0 or below cannot be drawn
            color = f"C{i}"
            ax.errorbar(x[ok], y[ok], yerr=g[unc][ok] if unc else None, fmt="o", capsize=3, color=color,
                        label=_series_label(build, model, len(groups)))
            front = pareto_front(x[ok], y[ok])
            ax.step(x[ok][front], y[ok][front], where="post", color=color, alpha=0.6, lw=1.5,
                    label="Pareto frontier" if i == 0 else None)
            if i == 0:
                for _, r in g[ok].iterrows():
                    ax.annotate(r["quant"], (r["file_size_bytes"] / GIB, r[col]), textcoords="offset points",
                                xytext=(5, 4), fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("file size (GiB)")
        ax.set_ylabel(f"{what} vs baseline (log)")
        ax.set_title(what, fontsize=TITLE_SIZE)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    base = ", ".join(sorted(set(k["baseline_quant"].astype(str))))
    fig.suptitle(f"{title}\nagainst the {base} logits, KV {', '.join(sorted(set(k['kv'])))}; lower-left is better",
                 fontsize=TITLE_SIZE)
    _save(fig, path)


def ppl_vs_size(ppl: pd.DataFrame, path) -> None:
    title = FIGURES["ppl_vs_size"]
    if not present(ppl, "build", "model", "ctx", "kv", "ppl"):
        return _no_data(title, NO_PPL, path)
    groups = list(ppl.groupby(["build", "model", "ctx"]))
    ncol = min(len(groups), 2)
    nrow = -(-len(groups) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6 * ncol, 4.2 * nrow), squeeze=False, layout="constrained")
    for ax, ((build, model, ctx), g) in zip(axes.flat, groups, strict=False):
        for j, kv in enumerate(dict.fromkeys(g["kv"])):
            s = g[g["kv"] == kv].sort_values("file_size_bytes")
            ax.errorbar(s["file_size_bytes"] / GIB, s["ppl"], yerr=s["ppl_uncertainty"], marker="os^vD"[j % 5],
                        capsize=3, label=f"KV {kv}", alpha=0.85)
        f16 = g[g["kv"] == g["kv"].iloc[0]].sort_values("file_size_bytes")
        for _, r in f16.iterrows():
            ax.annotate(r["quant"], (r["file_size_bytes"] / GIB, r["ppl"]), textcoords="offset points",
                        xytext=(5, -12), fontsize=8)
        ax.set_xlabel("file size (GiB)")
        ax.set_ylabel("perplexity (± one standard error)")
        ax.set_title(f"{model} [{build}], ctx {ctx}", fontsize=TITLE_SIZE)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_axis_off()
    one = "\none quant measured: nothing to compare its size with" if ppl["quant"].nunique() == 1 else ""
    fig.suptitle(title + one, fontsize=TITLE_SIZE)
    _save(fig, path)


def kv_heatmap(ppl: pd.DataFrame, path) -> None:
    title = FIGURES["kv_heatmap"]
    if not present(ppl, "build", "model", "ctx", "kv", "ppl"):
        return _no_data(title, NO_PPL, path)
    kv_types = list(dict.fromkeys(ppl["kv"]))
    if len(kv_types) == 1:
        return _no_data(title, f"Only KV {kv_types[0]} measured: nothing to compare it with.\nList two under "
                        "perplexity.kv (e.g. [f16, q8_0]) to see what a quantized KV cache costs.", path)
    if "dppl_vs_f16_kv" not in ppl or ppl["dppl_vs_f16_kv"].isna().all():
        return _no_data(title, "No f16-KV cells in this run: ΔPPL is against f16 KV at the same context;\nadd f16 "
                        "to perplexity.kv.", path)
    groups = list(ppl.groupby(["build", "model"]))
    quants = list(ppl.sort_values("file_size_bytes", ascending=False)["quant"].drop_duplicates())
    kvs = list(dict.fromkeys(ppl["kv"]))
    ctxs = sorted(ppl["ctx"].unique())
    resolved = _resolved(ppl)
    shown = ppl["dppl_vs_f16_kv"].where(resolved)  # a difference within the noise gets no colour
    lim = float(np.nanmax(np.abs(shown))) if shown.notna().any() else 1.0
    lim = lim or 1.0
    fig, axes = plt.subplots(len(groups), len(quants), figsize=(1.1 + 1.25 * len(ctxs) * len(quants),
                                                                  0.9 + 0.55 * len(kvs) * len(groups) + 0.6),
                             squeeze=False, layout="constrained")
    im = None
    for row, ((build, model), g) in enumerate(groups):
        for col, quant in enumerate(quants):
            ax = axes[row, col]
            q = g[g["quant"] == quant].assign(resolved=resolved[g.index[g["quant"] == quant]].to_numpy(),
                                              ref=g.loc[g["quant"] == quant, "kv"].eq("f16").to_numpy())
            m = q.pivot_table(index="kv", columns="ctx", values="dppl_vs_f16_kv").reindex(index=kvs, columns=ctxs)
            ok = q.pivot_table(index="kv", columns="ctx", values="resolved", aggfunc="first")
            ok = ok.reindex(index=kvs, columns=ctxs).fillna(False).to_numpy(dtype=bool)
            values = m.to_numpy(dtype=float)
            ax.imshow(np.where(ok, np.nan, 1.0), cmap="Greys", vmin=0, vmax=6, aspect="auto")  # within noise: grey
            im = ax.imshow(np.where(ok, values, np.nan), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
            _heat_labels(ax, values, ok, kvs, lim)
            ax.set_xticks(range(len(ctxs)), [str(c) for c in ctxs], fontsize=8)
            ax.set_yticks(range(len(kvs)), kvs if col == 0 else [""] * len(kvs), fontsize=8)
            ax.set_title(quant if len(groups) == 1 else f"{quant} [{build}]", fontsize=9)
            if row == len(groups) - 1:
                ax.set_xlabel("ctx", fontsize=8)
            if col == 0:
                ax.set_ylabel("KV type" if len(groups) == 1 else f"{model} [{build}]\nKV type", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.9, label="ΔPPL vs f16 KV (beyond its ±)")
    method = "paired on the shared chunks" if "dppl_vs_f16_kv_method" in ppl and ppl[
        "dppl_vs_f16_kv_method"].eq("paired").any() else "the two PPLs' ± in quadrature"
    fig.suptitle(f"{title}\ngrey, '(noise)': within 1.96 of its ± ({method}): not resolved", fontsize=TITLE_SIZE)
    _save(fig, path)


def _heat_labels(ax, values, ok, kvs: list[str], lim: float) -> None:
    """Each cell's ΔPPL: the f16 row is the reference; a resolved one on its colour, one within noise in grey."""
    for (i, j), v in np.ndenumerate(values):
        if not np.isfinite(v):
            continue
        if kvs[i] == "f16":
            ax.text(j, i, "ref.", ha="center", va="center", fontsize=7, color="dimgray")
        elif ok[i, j]:
            ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=7.5,
                    color="white" if abs(v) > 0.6 * lim else "black")
        else:
            ax.text(j, i, f"{v:+.2f}\n(noise)", ha="center", va="center", fontsize=6.5, color="dimgray")


def _resolved(ppl: pd.DataFrame) -> pd.Series:
    """Which ΔPPL cells lie beyond their ± (tables.add_kv_deltas); tables made before it had none: computed here
    from the PPL cells' ± the same way."""
    if "dppl_vs_f16_kv_resolved" in ppl:
        return ppl["dppl_vs_f16_kv_resolved"].fillna(False).astype(bool)
    from .tables import add_kv_deltas

    return add_kv_deltas(ppl.drop(columns=["dppl_vs_f16_kv", "kv_cost_long_minus_short"], errors="ignore"))[
        "dppl_vs_f16_kv_resolved"].fillna(False).astype(bool)


def speed(bench: pd.DataFrame, path) -> None:
    title = FIGURES["speed"]
    bench, why = _measured_bench(bench)
    if why:
        return _no_data(title, why, path)
    tests = list(dict.fromkeys(bench["test"]))
    fig, axes = plt.subplots(1, len(tests), figsize=(5.5 * len(tests), 4.5), squeeze=False, layout="constrained")
    groups = list(bench.groupby(["build", "model", "n_threads"]))
    for ax, test in zip(axes[0], tests, strict=True):
        g = bench[bench["test"] == test]
        for (build, model, nt), h in g.groupby(["build", "model", "n_threads"]):
            h = h.sort_values("file_size_bytes")
            lo = h["median_ts"] - h["min_ts"]
            hi = h["max_ts"] - h["median_ts"]
            label = f"{model} [{build}]" + (f", {nt} threads" if bench["n_threads"].nunique() > 1 else "")
            line = ax.errorbar(h["quant"], h["median_ts"], yerr=[lo, hi], marker="o", capsize=3,
                               label=label if len(groups) > 1 else None)
            loaded = h[_loaded(h)]
            if not loaded.empty:  # measured on a loaded machine: hollow, so it does not pass for the setting's speed
                ax.plot(loaded["quant"], loaded["median_ts"], "o", mfc="white", mec=line[0].get_color(), ms=9)
        ax.set_title(test, fontsize=TITLE_SIZE)
        ax.set_ylabel("tokens/s (median)")
        ax.tick_params(axis="x", rotation=45)
        ax.grid(True, alpha=0.3)
        if len(groups) > 1:
            ax.legend(fontsize=8)
    loaded_note = "; hollow: measured on a loaded machine" if _loaded(bench).any() else ""
    fig.suptitle(f"{title}\nbackend: {', '.join(sorted(set(bench['backend'].astype(str))))}{loaded_note}",
                 fontsize=TITLE_SIZE)
    _save(fig, path)


def _loaded(bench: pd.DataFrame) -> pd.Series:
    """Rows measured while other processes loaded the machine (measure/load.py; absent in older records)."""
    return bench["loaded"].fillna(False).astype(bool) if "loaded" in bench else pd.Series(False, index=bench.index)


def speed_vs_vram(bench: pd.DataFrame, path) -> None:
    title = FIGURES["speed_vs_vram"]
    bench, why = _measured_bench(bench)
    if why:
        return _no_data(title, why, path)
    b = with_strategy(bench)
    measured = b["vram_available"].fillna(False).astype(bool) & b["vram_peak_delta_mib"].notna()
    if measured.any():
        b = b[measured]
        x, xlabel, note = b["vram_peak_delta_mib"] / 1024, "peak VRAM of the llama-bench run (GiB, NVML)", ""
    else:
        reason = str(bench["vram_reason"].dropna().iloc[0]) if bench["vram_reason"].notna().any() else "not measured"
        x, xlabel = b["file_size_bytes"] / GIB, "file size (GiB) — VRAM not measured"
        note = f"\nVRAM not measured in this run ({reason.split(' (')[0]}): x is the file size, a lower bound"
    b = b.assign(x=x)
    tests = list(dict.fromkeys(b["test"]))
    fig, axes = plt.subplots(1, len(tests), figsize=(6 * len(tests), 4.6), squeeze=False, layout="constrained")
    labels = list(dict.fromkeys(b["strategy_label"]))
    builds = list(dict.fromkeys(b["build"]))
    markers = "osD^v<>Pp*hX"
    for ax, test in zip(axes[0], tests, strict=True):
        g = b[b["test"] == test]
        for i, lab in enumerate(labels):
            for j, build in enumerate(builds):
                h = g[(g["strategy_label"] == lab) & (g["build"] == build)]
                if h.empty:
                    continue
                name = lab + (f" [{build}]" if len(builds) > 1 else "")
                ax.errorbar(h["x"], h["median_ts"], yerr=[h["median_ts"] - h["min_ts"], h["max_ts"] - h["median_ts"]],
                            fmt=markers[i % len(markers)], color=f"C{j}", capsize=3, label=name,
                            alpha=0.8, mfc="none" if j else None)
                if j == 0:
                    for _, r in h.iterrows():
                        ax.annotate(r["quant"], (r["x"], r["median_ts"]), textcoords="offset points",
                                    xytext=(4, 4), fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("tokens/s (median; whiskers min–max)")
        ax.set_title(test, fontsize=TITLE_SIZE)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, title="offload setting", title_fontsize=8)
    one = "" if len(labels) > 1 else f"\none offload setting measured ({labels[0]}); sweep more with bench.extra_args"
    fig.suptitle(title + note + one, fontsize=TITLE_SIZE)
    _save(fig, path)


def threads(bench: pd.DataFrame, path) -> None:
    title = FIGURES["threads"]
    bench, why = _measured_bench(bench)
    if why or "n_threads" not in bench:
        return _no_data(title, why or NO_BENCH, path)
    counts = sorted(bench["n_threads"].dropna().unique())
    tests = list(dict.fromkeys(bench["test"]))
    fig, axes = plt.subplots(1, len(tests), figsize=(5.5 * len(tests), 4.4), squeeze=False, layout="constrained")
    builds = list(dict.fromkeys(bench["build"]))
    for ax, test in zip(axes[0], tests, strict=True):
        g = bench[bench["test"] == test]
        for i, ((build, quant), h) in enumerate(g.groupby(["build", "quant"], sort=False)):
            h = h.groupby("n_threads", as_index=False).agg(median_ts=("median_ts", "median"),
                                                           min_ts=("min_ts", "min"), max_ts=("max_ts", "max"))
            ax.errorbar(h["n_threads"], h["median_ts"], yerr=[h["median_ts"] - h["min_ts"],
                                                              h["max_ts"] - h["median_ts"]],
                        marker="o", capsize=3, label=quant + (f" [{build}]" if len(builds) > 1 else ""),
                        color=f"C{i % 10}", alpha=0.85)
        ax.set_xticks(counts)
        ax.set_xlabel("threads (-t)")
        ax.set_ylabel("tokens/s (median)")
        ax.set_title(test, fontsize=TITLE_SIZE)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    one = (f"\nonly one thread count measured ({int(counts[0])}): no U-curve to read; sweep with bench.threads"
           if len(counts) == 1 else "")
    fig.suptitle(title + one, fontsize=TITLE_SIZE)
    _save(fig, path)


PERCENTILES = [("kld_median", "median"), ("kld_p90", "90%"), ("kld_p95", "95%"), ("kld_p99", "99%"),
               ("kld_p99_9", "99.9%"), ("kld_max", "max")]


def kld_percentiles(kld: pd.DataFrame, path) -> None:
    title = FIGURES["kld_percentiles"]
    k = scoreboard_kld(kld)
    if k.empty:
        return _no_data(title, _no_kld_why(kld), path)
    groups = list(k.groupby(["build", "model"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(max(7, 1.2 * k["quant"].nunique() + 3) * len(groups), 4.8),
                             squeeze=False, layout="constrained")
    for ax, ((build, model), g) in zip(axes[0], groups, strict=True):
        g = g.sort_values("file_size_bytes", ascending=False)
        xs = np.arange(len(g))
        for i, (col, name) in enumerate(PERCENTILES):
            if col not in g or g[col].isna().all():  # llama.cpp before 2026 printed no 90%/95% KLD (issue 18)
                continue
            y = g[col].where(g[col] > 0)  # log axis
            ax.plot(xs, y, marker="o", color=plt.cm.viridis(i / (len(PERCENTILES) - 1)), label=name)
        ax.plot(xs, g["kld_mean"], marker="x", ls="--", color="black", label="mean")
        ax.set_xticks(xs, g["quant"])
        ax.set_yscale("log")
        ax.set_ylabel("KL divergence per token vs baseline (log)")
        ax.set_title(f"{model} [{build}], KV {', '.join(sorted(set(g['kv'])))}", fontsize=TITLE_SIZE)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, title="percentile", title_fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=TITLE_SIZE)
    _save(fig, path)


NO_TASKS = ("No task results in this run: tasks: in the config scores every quant and KV type on multiple-choice\n"
            "questions and counts the answers that flip against the baseline.")


def _flip_cells(tasks: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The cells with both a flip rate and a mean KLD (not the baseline, not the noise floor), and why none."""
    if not present(tasks, "flip_rate", "kld_mean", "variant"):
        return tasks.iloc[0:0], NO_TASKS
    c = tasks[(tasks["variant"] == "main") & tasks["kld_mean"].notna() & tasks["flip_rate"].notna()]
    if c.empty:
        return c, ("No cell has both a flip rate and a mean KLD: kld: in the config measures the KLD of the same\n"
                   "quants and KV types that tasks: scores.")
    return c, None


def flips_vs_kld(tasks: pd.DataFrame, path) -> None:
    """Every cell's flip rate (Wilson 95% interval) against its mean KLD, one panel per task set, Spearman's rank
    correlation over the cells in the title; the noise floor's flip rate as a dashed line where it was measured."""
    title = FIGURES["flips_vs_kld"]
    cells, why = _flip_cells(tasks)
    if why:
        return _no_data(title, why, path)
    sets = list(cells.groupby("task_set"))
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 4.8), squeeze=False, layout="constrained")
    for ax, (task_set, g) in zip(axes[0], sets, strict=True):
        rho, n = spearman(list(g["kld_mean"]), list(g["flip_rate"]))
        x, y = g["kld_mean"].where(g["kld_mean"] > 0), 100 * g["flip_rate"]
        yerr = [100 * (g["flip_rate"] - g["flip_low"]), 100 * (g["flip_high"] - g["flip_rate"])]
        ax.errorbar(x, y, yerr=yerr, fmt="o", capsize=3)
        for _, r in g.iterrows():
            ax.annotate(f"{r['quant']} {r['kv']}", (r["kld_mean"], 100 * r["flip_rate"]), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
        if "noise_flip_rate" in g and g["noise_flip_rate"].notna().any():
            ax.axhline(100 * g["noise_flip_rate"].dropna().max(), ls="--", color="grey", label="noise floor")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("mean KLD vs baseline (log)")
        ax.set_ylabel("answers flipped vs baseline (%)")
        rho_text = "—" if np.isnan(rho) else f"{rho:.2f}"
        ax.set_title(f"{task_set}: Spearman ρ = {rho_text} (n = {n} cells, {int(g['n_questions'].max())} questions)",
                     fontsize=TITLE_SIZE)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title, fontsize=TITLE_SIZE)
    _save(fig, path)


def _k(n: int) -> str:
    return f"{n / 1024:g}K" if n >= 1024 else str(n)


def _kv_cost_panel(ax, h: pd.DataFrame, kvs: list[str]) -> None:
    """One context: per KV type the mean KLD of each position bin with its 95 % interval over chunks (Student's t);
    a bin whose interval reaches 0 is not resolved: hollow marker, dotted whisker down to the axis; a bin of one
    chunk has no interval at all: hollow marker, no whisker."""
    bins = h.drop_duplicates("bin").sort_values("bin")
    xs = {b: i for i, b in enumerate(bins["bin"])}
    for j, kv in enumerate(kvs):
        k = h[h["kv"] == kv].sort_values("bin")
        if k.empty:
            continue
        color = plt.cm.tab10(j % 10)
        x = np.array([xs[b] for b in k["bin"]]) + 0.08 * (j - (len(kvs) - 1) / 2)
        y, half = k["kld_mean"].to_numpy(float), k["kld_half_width"].to_numpy(float)
        ok = k["kld_resolved"].to_numpy(bool)
        spread = np.isfinite(half)  # one chunk: no spread over chunks, so no interval
        low = np.where(ok, y - half, y * 1e-3)  # an interval reaching 0 runs off the log axis
        ax.plot(x, y, color=color, lw=1, alpha=0.6)
        if ok.any():
            ax.errorbar(x[ok], y[ok], yerr=[(y - low)[ok], half[ok]], fmt="o", color=color, capsize=3, label=kv)
        wide = ~ok & spread
        if wide.any():
            eb = ax.errorbar(x[wide], y[wide], yerr=[(y - low)[wide], half[wide]], fmt="o", mfc="white",
                             color=color, capsize=3, elinewidth=1, label=f"{kv} (not resolved)")
            for bar in eb.lines[2]:
                bar.set_linestyle(":")
        if (~spread).any():
            ax.plot(x[~spread], y[~spread], "o", mfc="white", color=color, label=f"{kv} (one chunk: no interval)")
    ctx = int(h["ctx"].iloc[0])
    # a bin's end is exclusive; the last one ends at the context's last scored position (ctx - 1): named by ctx
    ax.set_xticks(range(len(bins)), [f"{_k(lo)}–{_k(ctx if hi >= ctx - 1 else hi)}"
                                     for lo, hi in zip(bins["pos_lo"], bins["pos_hi"], strict=True)], fontsize=8)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)


def kv_cost_by_position(pos: pd.DataFrame, path) -> None:
    title = FIGURES["kv_cost_by_position"]
    if not present(pos, "build", "model", "quant", "ctx", "kv", "bin", "kld_mean", "kld_half_width"):
        return _no_data(title, NO_KV_COST, path)
    groups = list(pos.groupby(["build", "model", "quant"], sort=False))
    ctxs = sorted(pos["ctx"].unique())
    kvs = list(dict.fromkeys(pos["kv"]))
    fig, axes = plt.subplots(len(groups), len(ctxs), figsize=(1.5 + 4.2 * len(ctxs), 0.8 + 3.4 * len(groups)),
                             squeeze=False, layout="constrained", sharey=True)
    for r, ((build, model, quant), g) in enumerate(groups):
        for c, ctx in enumerate(ctxs):
            ax = axes[r, c]
            h = g[g["ctx"] == ctx]
            if h.empty:
                ax.text(0.5, 0.5, f"ctx {ctx} not measured", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            _kv_cost_panel(ax, h, kvs)
            n = int(h["n_chunks"].iloc[0])
            ax.set_title(f"{model} {quant} [{build}], ctx {ctx:,} ({n} chunk{'s' if n != 1 else ''})", fontsize=9)
            ax.set_xlabel("position in the context", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"mean KLD vs {h['ref_kv'].iloc[0]} KV (log)", fontsize=8)
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=TITLE_SIZE)
    _save(fig, path)


MAKERS = {"kld_vs_size": ("kld", kld_vs_size), "ppl_vs_size": ("perplexity", ppl_vs_size),
          "kv_heatmap": ("perplexity", kv_heatmap), "speed": ("bench", speed),
          "speed_vs_vram": ("bench", speed_vs_vram), "threads": ("bench", threads),
          "kld_percentiles": ("kld", kld_percentiles), "flips_vs_kld": ("tasks", flips_vs_kld),
          "kv_cost_by_position": ("kv_cost_positions", kv_cost_by_position)}


def make_figures(tables: dict, out: dict) -> None:
    """tables: {perplexity, kld, bench, tasks, kv_cost_positions: parquet path}; out: {figure key: png path} (the keys
    of FIGURES)."""
    unknown = set(out) - set(MAKERS)
    if unknown:
        raise ValueError(f"figures asked for {sorted(unknown)}; known: {sorted(MAKERS)} (see FIGURES in "
                         "src/ggufbench/report/figures.py and rule figures in rules/report.smk)")
    cache: dict[str, pd.DataFrame] = {}
    for key, path in out.items():
        table, make = MAKERS[key]
        if table not in cache:  # a run of tables from before the tasks or kv_cost tables: the figure says so
            cache[table] = read_table(tables[table]) if table in tables else pd.DataFrame()
        make(cache[table], path)
