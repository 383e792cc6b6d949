"""Figures from the Parquet tables, one question each, stated in the title. Empty tables give a figure that
says there is no data instead of failing the report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

GIB = 1024**3


def _save(fig, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _no_data(title: str, why: str, path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    _save(fig, path)


def kld_vs_size(kld: pd.DataFrame, path) -> None:
    title = "Which quant keeps closest to the baseline per byte? (mean KLD vs file size)"
    if kld.empty:
        return _no_data(title, "no KLD results", path)
    fig, ax = plt.subplots(figsize=(8, 5))
    for (build, model), g in kld.groupby(["build", "model"]):
        g = g.sort_values("file_size_bytes")
        ax.errorbar(g["file_size_bytes"] / GIB, g["kld_mean"], yerr=g["kld_mean_uncertainty"], marker="o",
                    capsize=3, label=f"{model} [{build}]")
        for _, r in g.iterrows():
            ax.annotate(r["quant"], (r["file_size_bytes"] / GIB, r["kld_mean"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("file size (GiB)")
    ax.set_ylabel("mean KL divergence vs baseline (log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def ppl_by_kv(ppl: pd.DataFrame, path) -> None:
    title = "Does the KV-cache type cost quality? (PPL ± by quant and KV type)"
    if ppl.empty:
        return _no_data(title, "no perplexity results", path)
    groups = list(ppl.groupby(["build", "model", "ctx"]))
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 4 * len(groups)), squeeze=False)
    for ax, ((build, model, ctx), g) in zip(axes[:, 0], groups, strict=True):
        quants = list(g.sort_values("file_size_bytes", ascending=False)["quant"].drop_duplicates())
        kvs = list(dict.fromkeys(g["kv"]))
        width = 0.8 / len(kvs)
        for i, kv in enumerate(kvs):
            s = g[g["kv"] == kv].set_index("quant").reindex(quants)
            xs = [x + i * width for x in range(len(quants))]
            ax.bar(xs, s["ppl"], width, yerr=s["ppl_uncertainty"], capsize=3, label=f"KV {kv}")
        ax.set_xticks([x + width * (len(kvs) - 1) / 2 for x in range(len(quants))], quants)
        lo = (g["ppl"] - g["ppl_uncertainty"]).min()
        ax.set_ylim(bottom=max(0, lo * 0.9))
        ax.set_ylabel("perplexity")
        ax.set_title(f"{title}\n{model} [{build}], ctx {ctx}", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)


def speed(bench: pd.DataFrame, path) -> None:
    title = "How fast is each quant? (llama-bench tokens/s, whiskers: min-max of repetitions)"
    if bench.empty:
        return _no_data(title, "no llama-bench results", path)
    tests = list(dict.fromkeys(bench["test"]))
    fig, axes = plt.subplots(1, len(tests), figsize=(5 * len(tests), 4.5), squeeze=False)
    for ax, test in zip(axes[0], tests, strict=True):
        g = bench[bench["test"] == test]
        for (build, model), h in g.groupby(["build", "model"]):
            h = h.sort_values("file_size_bytes")
            lo = h["median_ts"] - h["min_ts"]
            hi = h["max_ts"] - h["median_ts"]
            ax.errorbar(h["quant"], h["median_ts"], yerr=[lo, hi], marker="o", capsize=3, label=f"{model} [{build}]")
        ax.set_title(f"{test}", fontsize=10)
        ax.set_ylabel("tokens/s (median)")
        ax.tick_params(axis="x", rotation=45)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def make_figures(tables: dict, out: dict) -> None:
    read = lambda name: pd.read_parquet(tables[name])  # noqa: E731
    kld_vs_size(read("kld"), out["kld_vs_size"])
    ppl_by_kv(read("perplexity"), out["ppl_by_kv"])
    speed(read("bench"), out["speed"])
