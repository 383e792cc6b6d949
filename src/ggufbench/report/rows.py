"""Which rows of the Parquet tables the page, the figures and the recommendations read, and how a row is labelled:
the scoreboard's KLD rows, the llama-bench rows that measured something, the offload strategy of a llama-bench row,
the Pareto front. One place, so the page's tables and its figures select the same rows.

pandas and numpy only: report.recommend imports this while Snakemake builds the DAG (rules/common.smk), which must not
load matplotlib (issue 30).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..llamacpp.features import ran_without_mmap


def present(df: pd.DataFrame | None, *columns: str) -> bool:
    """df has rows and every one of columns. A table of a run that measured nothing of its kind is an empty frame
    without columns (pandas of no records), so a section asks this before it reads a column."""
    return df is not None and not df.empty and all(c in df.columns for c in columns)


def pareto_front(size, value) -> np.ndarray:
    """Boolean mask of the points no other point beats on both axes (smaller size and lower value): walking
    from the smallest file up, a point is on the frontier if its value is below every smaller file's."""
    size = np.asarray(size, dtype=float)
    value = np.asarray(value, dtype=float)
    order = np.lexsort((value, size))
    mask = np.zeros(len(size), dtype=bool)
    best = np.inf
    for i in order:
        if value[i] < best:
            mask[i] = True
            best = value[i]
    return mask


def setting_flags(row) -> list[str]:
    """The flags of a llama-bench row's setting besides its offload, as the server command carries them: -b/-ub where
    the strategy set them (setting_batch, setting_ubatch), --no-mmap where the model was loaded without mmap
    (setting_no_mmap, else llama-bench's own use_mmap or load_mode)."""
    flags = []
    for key, flag in (("setting_batch", "-b"), ("setting_ubatch", "-ub")):
        v = row.get(key)
        if v is not None and not pd.isna(v):
            flags.append(f"{flag} {int(v)}")
    said = row.get("setting_no_mmap")
    if said is True or ((said is None or (isinstance(said, float) and pd.isna(said))) and ran_without_mmap(row)):
        flags.append("--no-mmap")
    return flags


def offload_strategy(row) -> tuple[str, str]:
    """(strategy, label with its N) of one llama-bench row, from the fields llama-bench reports itself:
    n_gpu_layers (-ngl), n_cpu_moe (-ncmoe), tensor_buft_overrides (-ot), fit_target (-fitt); the label ends with
    the setting's -b/-ub and --no-mmap (setting_flags), so settings that differ only there stay apart."""
    flags = setting_flags(row)
    backends = str(row.get("backends") or "")
    if backends and all(b.strip() in ("CPU", "BLAS") for b in backends.split(",")):
        return "CPU only", " ".join(["CPU only", *flags])

    def num(key):
        v = row.get(key)
        try:
            return None if v is None or pd.isna(v) else int(v)
        except (TypeError, ValueError):
            return None

    parts, kind = [], "ngl"
    ngl = num("n_gpu_layers")
    if ngl is not None:
        parts.append(f"-ngl {ngl}")
    ncmoe = num("n_cpu_moe")
    if ncmoe:
        kind = "n-cpu-moe"
        parts.append(f"-ncmoe {ncmoe}")
    ot = row.get("tensor_buft_overrides")
    if isinstance(ot, str) and ot not in ("", "none"):
        kind = "tensor overrides"
        parts.append(f"-ot {ot}")
    fit = num("fit_target")
    if fit:
        kind = "fit"
        parts.append(f"-fitt {fit}")
    return kind, " ".join(parts + flags) or "default"


def with_strategy(bench: pd.DataFrame) -> pd.DataFrame:
    """The llama-bench rows with strategy and strategy_label (offload_strategy) added."""
    if bench.empty:
        return bench.assign(strategy=[], strategy_label=[])
    s = [offload_strategy(r) for r in bench.to_dict("records")]
    return bench.assign(strategy=[a for a, _ in s], strategy_label=[b for _, b in s])


def measured_rows(bench: pd.DataFrame) -> pd.DataFrame:
    """The llama-bench rows that measured something (a "does not fit" row has no speed)."""
    if bench.empty or "status" not in bench:
        return bench
    return bench[bench["status"].fillna("measured") == "measured"]


def scoreboard_kld(kld: pd.DataFrame) -> pd.DataFrame:
    """The KLD rows the scoreboard uses: each quant with the baseline's KV type (the weights' cost alone). Empty
    where kld: measured only the baseline's own KV types (or nothing)."""
    if not present(kld, "kv"):
        return kld.iloc[0:0]
    base_kv = kld["baseline_kv"].fillna("f16") if "baseline_kv" in kld else "f16"
    return kld[kld["kv"] == base_kv]
