"""The study's claims, measured (the report's section of that name; issue 28).

The study that started this project (Qwen3.5-35B-A3B on a 16 GB card) makes claims about speed and memory. Each is a
row of CLAIMS: the study's words, the two settings it compares (A and B: selectors on the setting columns of the
llama-bench table), the columns both must share, what is compared (generation or prompt t/s, VRAM, the repetitions'
spread, the thread curve) and the study's own figure where it gives one. `evaluate` reads them off
results/tables/bench.parquet, per build, model and served context, on one quant (the study's Q4_K_M where measured):
the ratio, its spread from the repetitions, and a verdict on the machine that measured them:

  holds          the whole spread is beyond the threshold: halfway from "no difference" (1) to the study's figure
                 (its 70 / 21.6 t/s -> 2.12; "~20% faster" -> 1.10), or 1 where the study states a direction only
  does not hold  the whole spread is short of the threshold
  not resolved   the spread crosses it, or a side was measured while other processes loaded the machine
  needs a GPU    the claim is about device memory or GPU offload, and this run had no GPU
  not measured   a side has no rows: the note names what in the config measures it

Spreads: for t/s, the repetitions' min–max of each side (A's min over B's max to A's max over B's min, as the builds
comparison judges speedups); for the repetitions' spread itself, a 95% interval of the ratio of the two sides'
coefficients of variation (normal approximation on the log of a standard deviation ratio); VRAM is one peak per call.
Speeds are the measuring machine's: neither they nor their ratios are the study's RTX 5080's.

Pure functions over DataFrames; claims_section renders them through templates/claims.html.j2.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import jinja2
import numpy as np
import pandas as pd

from ..llamacpp.features import ran_without_mmap
from .rows import present

STUDY_QUANT = "Q4_K_M"          # the quant of the study's C7 and of its comparisons
STUDY_CARD_GIB = 16.0           # the study's card, when report.target_gpu does not name one
LLAMA_BENCH_B, LLAMA_BENCH_UB = 2048, 512  # llama-bench's own -b/-ub (and llama-server's)
# The columns that make a setting (pairing: two sides share all but the ones a claim varies)
SETTING = ("offload", "n_cpu_moe", "n_gpu_layers", "fit_target", "override", "kv", "batch", "ubatch", "no_mmap")
C7 = {"offload": "n_cpu_moe", "n_cpu_moe": 24, "batch": 4096, "ubatch": 4096, "kv": "q8_0", "no_mmap": True}
DEFAULT_BATCH = {"batch": LLAMA_BENCH_B, "ubatch": LLAMA_BENCH_UB}
B4096 = {"batch": 4096, "ubatch": 4096}
VERDICTS = ("holds", "does not hold", "not resolved", "needs a GPU", "not measured")


@dataclass(frozen=True)
class Claim:
    """One claim of the study. a, b: selectors (column -> value) of the two settings; b "others": every setting
    that is not A; b None: A against the card's memory. same: the columns both sides share (a pair: the setting
    but for what the claim varies). prefer: selectors tried in order for the shared values (the study's own
    setting first), before any. claimed: the study's ratio (None: a direction). fits: both sides the fastest that
    fits the card."""

    key: str
    words: str
    a_label: str
    a: dict
    b_label: str
    b: dict | str | None
    metric: str                 # tg, pp (t/s), fits, vram_less, fit_overrun, consistency, threads
    how: str                    # what in the config measures it
    claimed: float | None = None
    same: tuple[str, ...] = ()
    prefer: tuple[dict, ...] = ()
    fits: bool = False
    needs_gpu: bool = False

    @property
    def threshold(self) -> float:
        return 1.0 if self.claimed is None else 1 + (self.claimed - 1) / 2


def _pair(*varied: str) -> tuple[str, ...]:
    return tuple(c for c in SETTING if c not in varied) + ("n_threads",)


C7_HOW = ("bench.strategies.c7 (config/config.yaml): n_cpu_moe 24, batch 4096, ubatch 4096, kv [q8_0], no_mmap "
          "true, threads [20]")
AT_C7 = {"offload": "n_cpu_moe", "n_cpu_moe": 24}  # C7's offload, where a claim's pair is looked for first
CLAIMS = (
    Claim(key="c7-fits", words="C7 (-ncmoe 24 -b 4096 -ub 4096 -ctk/-ctv q8_0 -fa on --no-mmap -t 20) runs at "
          "67–70 t/s in ~14.9 GB of a 16 GB card", a_label="C7", a=C7, b_label="the card (report.target_gpu)", b=None,
          metric="fits", how=C7_HOW, needs_gpu=True),
    Claim(key="c7-fastest", words="C7 is the command to run: the fastest setting that fits", a_label="C7", a=C7,
          b_label="the fastest other setting that fits", b="others", metric="tg", how=C7_HOW, fits=True,
          needs_gpu=True),
    Claim(key="expert-offload", words="“The entire 3x gap comes down to MoE expert offloading”: whole layers on the "
          "CPU (Ollama) 21.6 t/s, experts on the CPU with attention on the GPU 70 t/s",
          a_label="experts on the CPU (-ncmoe N), the fastest that fits", a={"offload": "n_cpu_moe"},
          b_label="whole layers on the CPU (-ngl N: Ollama's way of splitting; Ollama itself is not run), the "
          "fastest that fits", b={"offload": "layers"}, metric="tg",
          how="a layer split (bench.strategies.layer-split: an n_gpu_layers list) beside an n_cpu_moe strategy, "
          "with the same KV type", claimed=70 / 21.6, same=("kv", "batch", "ubatch", "no_mmap"),
          prefer=({"kv": "f16", **DEFAULT_BATCH, "no_mmap": False}, {"kv": "f16"}), fits=True, needs_gpu=True),
    Claim(key="q8_0-kv-faster", words="“q8_0 KV is ~20% faster …”", a_label="KV q8_0", a={"kv": "q8_0"},
          b_label="KV f16", b={"kv": "f16"}, metric="tg", how="bench.kv: [f16, q8_0]", claimed=1.2,
          same=_pair("kv"), prefer=({**AT_C7, **DEFAULT_BATCH}, DEFAULT_BATCH)),
    Claim(key="q8_0-kv-vram", words="“… and uses less VRAM”", a_label="KV q8_0", a={"kv": "q8_0"}, b_label="KV f16",
          b={"kv": "f16"}, metric="vram_less", how="bench.kv: [f16, q8_0]", same=_pair("kv"),
          prefer=({**AT_C7, **DEFAULT_BATCH}, DEFAULT_BATCH), needs_gpu=True),
    Claim(key="b4096-prompt", words="C7's -b 4096 -ub 4096 make prompt processing faster than llama.cpp's -b 2048 "
          "-ub 512", a_label="-b 4096 -ub 4096", a=B4096, b_label="-b 2048 -ub 512", b=DEFAULT_BATCH, metric="pp",
          how="a strategy with batch: 4096, ubatch: 4096 beside its twin without (n-cpu-moe-b4096 and n-cpu-moe)",
          same=_pair("batch", "ubatch"), prefer=({**AT_C7, "kv": "q8_0"}, {"offload": "n_cpu_moe"})),
    Claim(key="b4096-fit", words="“-b 4096 -ub 4096 allocate VRAM that --fit does not account for”",
          a_label="--fit with -b 4096 -ub 4096", a={"offload": "fit", **B4096},
          b_label="--fit with -b 2048 -ub 512", b={"offload": "fit", **DEFAULT_BATCH}, metric="fit_overrun",
          how="fit-1024-b4096 beside fit-1024 (bench.strategies: fit_target with batch/ubatch 4096)",
          same=_pair("batch", "ubatch"), prefer=({"fit_target": 1024, "kv": "q8_0"}, {"fit_target": 1024}),
          needs_gpu=True),
    Claim(key="no-mmap", words="“--no-mmap gives consistent performance”", a_label="--no-mmap", a={"no_mmap": True},
          b_label="mmap (llama.cpp's default)", b={"no_mmap": False}, metric="consistency",
          how="a strategy with no_mmap: true beside its twin without (c7 and c7-mmap)", same=_pair("no_mmap"),
          prefer=({k: v for k, v in C7.items() if k != "no_mmap"},)),
    Claim(key="threads", words="The thread curve is U-shaped, best near physical cores / 1.5",
          a_label="the fastest thread count inside the sweep", a={}, b_label="the faster end of the sweep", b={},
          metric="threads", how="bench.threads with three or more counts around the core count", same=SETTING,
          prefer=({**AT_C7, "kv": "q8_0", **DEFAULT_BATCH}, DEFAULT_BATCH)),
)


# ---------------------------------------------------------------------------------------------- the settings

def _column(bench: pd.DataFrame, name: str, default) -> pd.Series:
    return bench[name] if name in bench else pd.Series([default] * len(bench), index=bench.index, dtype=object)


def _ints(bench: pd.DataFrame, name: str, default: int) -> pd.Series:
    return pd.to_numeric(_column(bench, name, default), errors="coerce").fillna(default).astype(int)


def _kept_samples(row) -> list[float]:
    """The repetitions the median and range are of (the first left out where the table says it was)."""
    s = row.get("samples_ts")
    samples = json.loads(s) if isinstance(s, str) else list(s) if isinstance(s, list | np.ndarray) else []
    discarded = row.get("first_sample_discarded")
    return samples[1:] if isinstance(discarded, bool | np.bool_) and discarded and len(samples) > 1 else samples


def _offload(r: dict) -> str:
    """What a row's offload is: cpu (a CPU build), fit, override (-ot), n_cpu_moe, layers (-ngl N set by the
    strategy), all (every layer on the GPU)."""
    backend = str(r.get("backend") or r.get("backends") or "")
    if backend and all(b.strip() in ("CPU", "BLAS") for b in backend.split(",")):
        return "cpu"
    for kind, hit in (("fit", r["fit_target"] > 0), ("override", r["override"] != "none"),
                      ("n_cpu_moe", r["n_cpu_moe"] > 0), ("layers", r["layers_set"])):
        if hit:
            return kind
    return "all"


def settings_table(bench: pd.DataFrame) -> pd.DataFrame:
    """The llama-bench rows as settings (SETTING columns, from llama-bench's own fields where the table has them,
    else what the strategy set) with their test (tg, pp), threads, speeds, VRAM and load. Tolerates the columns
    older tables lack."""
    if not present(bench, "build", "model", "quant", "median_ts"):
        return pd.DataFrame()
    b = bench
    ngl_set = pd.to_numeric(_column(b, "setting_n_gpu_layers", None), errors="coerce")
    n_prompt, n_gen = _ints(b, "n_prompt", 0), _ints(b, "n_gen", 0)
    status = _column(b, "status", "measured").fillna("measured")
    vram_ok = _column(b, "vram_available", False).fillna(False).astype(bool)
    type_k, type_v = _column(b, "type_k", "f16").astype(str), _column(b, "type_v", "f16").astype(str)
    setting_no_mmap = _column(b, "setting_no_mmap", None)
    records = b.to_dict("records")
    out = pd.DataFrame({
        "build": b["build"].astype(str), "model": b["model"].astype(str), "quant": b["quant"].astype(str),
        "context": pd.to_numeric(_column(b, "setting_context", None), errors="coerce"),
        "test": np.where((n_gen > 0) & (n_prompt == 0), "tg", np.where((n_prompt > 0) & (n_gen == 0), "pp", "")),
        "n_threads": _ints(b, "n_threads", 0), "kv": np.where(type_k == type_v, type_k, type_k + "-" + type_v),
        "n_cpu_moe": _ints(b, "n_cpu_moe", 0), "n_gpu_layers": ngl_set.fillna(_ints(b, "n_gpu_layers", -1)).astype(int),
        "layers_set": ngl_set.notna(), "fit_target": _ints(b, "fit_target", 0),
        "override": _column(b, "tensor_buft_overrides", "none").fillna("none").astype(str),
        "batch": _ints(b, "n_batch", LLAMA_BENCH_B), "ubatch": _ints(b, "n_ubatch", LLAMA_BENCH_UB),
        "no_mmap": [bool(s) if isinstance(s, bool | np.bool_) else ran_without_mmap(r)
                    for s, r in zip(setting_no_mmap, records, strict=True)],
        "status": status, "median": pd.to_numeric(b["median_ts"], errors="coerce"),
        "lo": pd.to_numeric(_column(b, "min_ts", None), errors="coerce"),
        "hi": pd.to_numeric(_column(b, "max_ts", None), errors="coerce"),
        "samples": [_kept_samples(r) for r in records],
        "vram_mib": pd.to_numeric(_column(b, "vram_peak_delta_mib", None), errors="coerce").where(vram_ok),
        "vram_reason": _column(b, "vram_reason", None),
        "free_mib": pd.to_numeric(_column(b, "vram_free_before_mib", None), errors="coerce"),
        "loaded": _column(b, "loaded", False).fillna(False).astype(bool),
        "backend": _column(b, "backend", "").fillna("").astype(str),
        "backends": _column(b, "backends", "").fillna("").astype(str),
        "cpu_name": _column(b, "cpu_name", "").fillna("").astype(str),
        "gpu_name": _column(b, "gpu_name", "").fillna("").astype(str),
    }, index=b.index)
    out["lo"] = out["lo"].fillna(out["median"])
    out["hi"] = out["hi"].fillna(out["median"])
    out["offload"] = [_offload(r) for r in out.to_dict("records")]
    return out.drop(columns="layers_set")


def describe(r) -> str:
    """A setting as its flags: `Q4_K_M -ncmoe 24 -b 4096 -ub 4096 KV q8_0 --no-mmap, 20 threads` (a CPU build's
    offload is `CPU`, a fit's `--fit-target M`)."""
    parts = [str(r["quant"])]
    offload = {"fit": f"--fit-target {r['fit_target']}", "override": f"-ot {r['override']}",
               "n_cpu_moe": f"-ncmoe {r['n_cpu_moe']}", "layers": f"-ngl {r['n_gpu_layers']}", "cpu": "CPU",
               "all": f"-ngl {r['n_gpu_layers']}"}
    parts.append(offload.get(r["offload"], str(r["offload"])))
    if (r["batch"], r["ubatch"]) != (LLAMA_BENCH_B, LLAMA_BENCH_UB):
        parts.append(f"-b {r['batch']} -ub {r['ubatch']}")
    parts.append(f"KV {r['kv']}")
    if r["no_mmap"]:
        parts.append("--no-mmap")
    return " ".join(parts) + f", {r['n_threads']} threads"


# ---------------------------------------------------------------------------------------------- outcomes

@dataclass
class Outcome:
    verdict: str
    a_setting: str = "—"
    b_setting: str = "—"
    a_value: str = "—"
    b_value: str = "—"
    ratio: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    note: str = ""
    loaded: bool = field(default=False, repr=False)


def verdict(lo: float, hi: float, threshold: float) -> str:
    if lo > threshold:
        return "holds"
    if hi < threshold:
        return "does not hold"
    return "not resolved"


def _judged(o: Outcome, threshold: float) -> Outcome:
    o.verdict = verdict(o.lo, o.hi, threshold)
    if o.loaded and o.verdict != "not resolved":
        o.note = (o.note + "; " if o.note else "") + (f"would be “{o.verdict}”, but a side was measured while other "
                                                       "processes loaded the machine (column loaded)")
        o.verdict = "not resolved"
    return o


def _ts(r) -> str:
    return f"{r['median']:.1f} t/s ({r['lo']:.1f}–{r['hi']:.1f})"


def _gib(mib: float) -> str:
    return f"{mib / 1024:.2f} GiB"


def _fitting(rows: pd.DataFrame, budget_mib: float) -> pd.DataFrame:
    return rows[(rows["status"] == "measured") & rows["vram_mib"].notna() & (rows["vram_mib"] <= budget_mib)]


def _fastest(rows: pd.DataFrame, test: str):
    t = rows[(rows["test"] == test) & (rows["status"] == "measured") & rows["median"].notna()]
    return None if t.empty else t.loc[t["median"].idxmax()]


def _not_measured(claim: Claim, side: str) -> Outcome:
    """side: "A" or "B", the side this run has no rows of."""
    label = claim.a_label if side == "A" else claim.b_label
    return Outcome("not measured", note=f"nothing measured as {side} ({label}) in this run; it takes {claim.how}")


def _speed(claim: Claim, a_rows: pd.DataFrame, b_rows: pd.DataFrame, budget_mib: float) -> Outcome:
    """A's fastest against B's fastest (each the fastest that fits the card, where the claim says so)."""
    if claim.fits:
        if a_rows["vram_mib"].isna().all() and b_rows["vram_mib"].isna().all():
            return Outcome("not measured", note="no VRAM reading to tell what fits: " + _vram_why(a_rows))
        a_fit, b_fit = _fitting(a_rows, budget_mib), _fitting(b_rows, budget_mib)
        if a_fit.empty and not a_rows.empty:
            return Outcome("does not hold", a_setting=describe(a_rows.iloc[0]), a_value="does not fit",
                           note=f"{claim.a_label}: nothing measured fits {_gib(budget_mib)}")
        a_rows, b_rows = a_fit, b_fit
    a, b = _fastest(a_rows, claim.metric), _fastest(b_rows, claim.metric)
    if a is None or b is None:
        return _not_measured(claim, "A" if a is None else "B")
    return Outcome("", describe(a), describe(b), _ts(a), _ts(b), a["median"] / b["median"], a["lo"] / b["hi"],
                   a["hi"] / b["lo"], loaded=bool(a["loaded"] or b["loaded"]))


def _vram_why(rows: pd.DataFrame) -> str:
    reasons = rows["vram_reason"].dropna() if "vram_reason" in rows else pd.Series(dtype=object)
    return str(reasons.iloc[0]) if not reasons.empty else "the table holds no VRAM reading"


def _one_call(rows: pd.DataFrame):
    """The fastest generation row of a setting (its call's VRAM is the setting's), or any row of a call that did
    not fit."""
    best = _fastest(rows, "tg")
    return best if best is not None else (None if rows.empty else rows.iloc[0])


def _fits(claim: Claim, a_rows: pd.DataFrame, _b, budget_mib: float) -> Outcome:
    """A's VRAM peak against the card: ratio card / peak (above 1: it fits)."""
    a = _one_call(a_rows)
    if a is None:
        return _not_measured(claim, "A")
    if a["status"] != "measured":
        free = "" if pd.isna(a["free_mib"]) else f" with {_gib(a['free_mib'])} free"
        return Outcome("does not hold", describe(a), "—", "does not fit", _gib(budget_mib),
                       note=f"llama.cpp could not allocate it{free}")
    if pd.isna(a["vram_mib"]):
        return Outcome("not measured", describe(a), note="no VRAM reading: " + _vram_why(a_rows))
    ratio = budget_mib / a["vram_mib"]
    return Outcome("", describe(a), "—", f"{_gib(a['vram_mib'])} peak, {_ts(a)}", _gib(budget_mib), ratio, ratio,
                   ratio, loaded=bool(a["loaded"]),
                   note="the study: ~14.9 GB (13.9 GiB) at 67–70 t/s on its RTX 5080; the t/s here are this machine's")


def _vram_less(claim: Claim, a_rows: pd.DataFrame, b_rows: pd.DataFrame, _budget) -> Outcome:
    """B's VRAM peak over A's (above 1: A uses less), one peak per call."""
    a, b = _one_call(a_rows), _one_call(b_rows)
    if a is None or b is None:
        return _not_measured(claim, "A" if a is None else "B")
    if pd.isna(a["vram_mib"]) or pd.isna(b["vram_mib"]):
        return Outcome("not measured", describe(a), describe(b), note="no VRAM reading: " + _vram_why(a_rows))
    ratio = b["vram_mib"] / a["vram_mib"]
    return Outcome("", describe(a), describe(b), f"{a['vram_mib']:.0f} MiB", f"{b['vram_mib']:.0f} MiB", ratio, ratio,
                   ratio, note="one VRAM peak per call: no spread")


def _fit_overrun(claim: Claim, a_rows: pd.DataFrame, b_rows: pd.DataFrame, _budget) -> Outcome:
    """A's VRAM peak over what the fit was told to leave free (free before the call − its margin): above 1, the fit
    did not account for something A allocated; a call that did not fit is such a case."""
    a, b = _one_call(a_rows), _one_call(b_rows)
    if a is None:
        return _not_measured(claim, "A")

    def target(r) -> float:
        return r["free_mib"] - r["fit_target"]

    b_text = "—" if b is None or pd.isna(b["vram_mib"]) or pd.isna(b["free_mib"]) else (
        f"{b['vram_mib']:.0f} of {target(b):.0f} MiB")
    b_setting = "—" if b is None else describe(b)
    if a["status"] != "measured":
        return Outcome("holds", describe(a), b_setting, "does not fit", b_text,
                       note="the fit placed more than the memory it was given could hold with these buffers")
    if pd.isna(a["vram_mib"]) or pd.isna(a["free_mib"]):
        return Outcome("not measured", describe(a), b_setting, note="no VRAM reading or free memory before the call: "
                       + _vram_why(a_rows))
    ratio = a["vram_mib"] / target(a)
    return Outcome("", describe(a), b_setting, f"{a['vram_mib']:.0f} of {target(a):.0f} MiB", b_text, ratio, ratio,
                   ratio, note="VRAM peak over the fit's target (free memory before the call less its margin); one "
                   "peak per call")


def _cv(samples: list[float]) -> float:
    x = np.asarray(samples, dtype=float)
    return float(x.std(ddof=1) / x.mean()) if len(x) > 1 and x.mean() > 0 else math.nan


def _consistency(claim: Claim, a_rows: pd.DataFrame, b_rows: pd.DataFrame, _budget) -> Outcome:
    """B's coefficient of variation of the generation repetitions over A's (above 1: A is the more consistent),
    with a 95% interval: log(sd ratio) has a standard error of about sqrt(1/(2(n_a−1)) + 1/(2(n_b−1)))."""
    a, b = _fastest(a_rows, "tg"), _fastest(b_rows, "tg")
    if a is None or b is None:
        return _not_measured(claim, "A" if a is None else "B")
    ca, cb = _cv(a["samples"]), _cv(b["samples"])
    na, nb = len(a["samples"]), len(b["samples"])
    texts = (f"CV {ca:.1%} of {na} repetitions", f"CV {cb:.1%} of {nb} repetitions")
    if not (ca > 0 and cb > 0):
        return Outcome("not resolved", describe(a), describe(b), *texts,
                       note="two repetitions or more per side, not all equal, are needed to compare their spread")
    se = math.sqrt(1 / (2 * (na - 1)) + 1 / (2 * (nb - 1)))
    ratio = cb / ca
    return Outcome("", describe(a), describe(b), *texts, ratio, ratio * math.exp(-1.96 * se),
                   ratio * math.exp(1.96 * se), loaded=bool(a["loaded"] or b["loaded"]),
                   note=f"speeds {_ts(a)} and {_ts(b)}")


def _threads(claim: Claim, a_rows: pd.DataFrame, _b, _budget) -> Outcome:
    """The fastest interior thread count over the faster of the sweep's two ends (above 1: U-shaped, in time per
    token); needs three thread counts or more."""
    tg = a_rows[(a_rows["test"] == "tg") & (a_rows["status"] == "measured")]
    counts = sorted(tg["n_threads"].unique())
    if len(counts) < 3:
        return Outcome("not measured", note=f"{len(counts)} thread count(s) measured; it takes {claim.how}")
    per = tg.sort_values("median").drop_duplicates("n_threads", keep="last").set_index("n_threads", drop=False)
    inner = per.loc[counts[1:-1]]
    a = inner.loc[inner["median"].idxmax()]
    b = per.loc[[counts[0], counts[-1]]]
    b = b.loc[b["median"].idxmax()]
    best = int(per["median"].idxmax())
    cpu = str(tg["cpu_name"].iloc[0]) or "this machine's CPU"
    return Outcome("", describe(a), describe(b), _ts(a), _ts(b), a["median"] / b["median"], a["lo"] / b["hi"],
                   a["hi"] / b["lo"], loaded=bool(a["loaded"] or b["loaded"]),
                   note=f"fastest at {best} of {', '.join(map(str, counts))} threads on {cpu}; the tables do not hold "
                   "its physical core count, so the study's rule (physical cores / 1.5) is for the reader to apply")


METRICS = {"tg": _speed, "pp": _speed, "fits": _fits, "vram_less": _vram_less, "fit_overrun": _fit_overrun,
           "consistency": _consistency, "threads": _threads}


# ---------------------------------------------------------------------------------------------- selection

def _match(rows: pd.DataFrame, where: dict) -> pd.DataFrame:
    mask = pd.Series(True, index=rows.index)
    for col, value in where.items():
        mask &= rows[col] == value
    return rows[mask]


def _sides(claim: Claim, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A's and B's rows. With claim.same: the shared values (of those columns) that both sides have, narrowed by
    claim.prefer's first selector that any of them meets; of those, the one where A is fastest."""
    a = _match(rows, claim.a)
    if claim.b is None:
        return a, a.iloc[0:0]
    b = rows.drop(index=a.index) if claim.b == "others" else _match(rows, claim.b)
    if not claim.same:
        return a, b
    same = list(claim.same)
    shared = a[same].drop_duplicates().merge(b[same].drop_duplicates())
    for pref in (*claim.prefer, {}):
        picked = _match(shared, {k: v for k, v in pref.items() if k in same})
        if not picked.empty:
            test = claim.metric if claim.metric in ("tg", "pp") else "tg"
            keys = [dict(zip(same, k, strict=True)) for k in picked.itertuples(index=False)]
            speed = [_best(_match(a, k), test) for k in keys]
            key = keys[int(np.nanargmax(speed))] if not all(math.isnan(v) for v in speed) else keys[0]
            return _match(a, key), _match(b, key)
    return a.iloc[0:0], b.iloc[0:0]


def _best(rows: pd.DataFrame, test: str) -> float:
    r = _fastest(rows, test)
    return math.nan if r is None else float(r["median"])


def _is_gpu(rows: pd.DataFrame) -> bool:
    return bool((rows["offload"] != "cpu").any())


def claim_quant(rows: pd.DataFrame) -> str:
    """The quant the claims are read on: the study's Q4_K_M where measured, else the first quant of the table."""
    quants = list(dict.fromkeys(rows["quant"]))
    return STUDY_QUANT if STUDY_QUANT in quants else quants[0]


def judge(claim: Claim, rows: pd.DataFrame, budget_mib: float) -> Outcome:
    """One claim on one quant's rows at one served context."""
    if claim.needs_gpu and not _is_gpu(rows):
        return Outcome("needs a GPU", note="device memory and GPU offload are not measured on a CPU-only run")
    a, b = _sides(claim, rows)
    if a.empty or (b.empty and claim.b is not None):
        return _not_measured(claim, "A" if a.empty else "B")
    o = METRICS[claim.metric](claim, a, b, budget_mib)
    return _judged(o, claim.threshold) if not o.verdict else o


def card_mib(config: dict) -> float:
    """The card the claims are about: report.target_gpu's memory, else the study's 16 GiB."""
    gpu = (config.get("report") or {}).get("target_gpu") or {}
    return float(gpu.get("vram_gib") or STUDY_CARD_GIB) * 1024


COLUMNS = ("build", "model", "context", "quant", "claim", "study", "a", "b", "a_setting", "b_setting", "a_value",
           "b_value", "ratio", "lo", "hi", "threshold", "verdict", "note")


def evaluate(bench: pd.DataFrame, config: dict, claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """Every claim per build, model and served context (one row each; COLUMNS), on one quant (claim_quant)."""
    s = settings_table(bench)
    if s.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    budget = card_mib(config)
    out = []
    for (build, model, context), g in s.groupby(["build", "model", "context"], sort=False, dropna=False):
        quant = claim_quant(g)
        rows = g[g["quant"] == quant]
        for c in claims:
            o = judge(c, rows, budget)
            out.append({"build": build, "model": model, "context": None if pd.isna(context) else int(context),
                        "quant": quant, "claim": c.key, "study": c.words, "a": c.a_label, "b": c.b_label,
                        "a_setting": o.a_setting, "b_setting": o.b_setting, "a_value": o.a_value,
                        "b_value": o.b_value, "ratio": o.ratio, "lo": o.lo, "hi": o.hi, "threshold": c.threshold,
                        "verdict": o.verdict, "note": o.note})
    return pd.DataFrame(out, columns=list(COLUMNS))


# ---------------------------------------------------------------------------------------------- the section

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("ggufbench.report", "templates"), autoescape=True,
                          trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                          undefined=jinja2.StrictUndefined)
SHOWN = {"claim": "the study says", "a": "A", "b": "B", "measured": "A / B (spread)", "threshold": "holds above",
         "verdict": "verdict", "note": "note"}


def _ratio_text(r) -> str:
    if pd.isna(r["ratio"]):
        return "—"
    if r["lo"] == r["hi"]:
        return f"{r['ratio']:.2f}"
    return f"{r['ratio']:.2f} ({r['lo']:.2f}–{r['hi']:.2f})"


def _side(label: str, setting: str, value: str) -> str:
    """A side's cell: what the claim names, the setting measured as it (its flags) and what it measured."""
    return label + ("" if setting == "—" else f": {setting}") + ("" if value == "—" else f" — {value}")


def _table(df: pd.DataFrame, table_id: str) -> dict:
    """The table as templates/macros.html.j2's table macro takes it (page.py's format): a row per claim, green
    where it holds, grey where it does not."""
    rows = []
    for r in df.to_dict("records"):
        cells = [r["study"], _side(r["a"], r["a_setting"], r["a_value"]), _side(r["b"], r["b_setting"], r["b_value"]),
                 _ratio_text(r), f"{r['threshold']:.2f}", r["verdict"], r["note"] or "—"]
        cls = {"holds": "pick", "does not hold": "nofit"}.get(r["verdict"])
        rows.append((cls, cells))
    columns = list(SHOWN.values())
    return {"id": table_id, "columns": columns, "numeric": [c in ("A / B (spread)", "holds above") for c in columns],
            "rows": rows}


def _machines(bench: pd.DataFrame) -> str:
    names = []
    for col in ("gpu_name", "cpu_name"):
        if col in bench:
            names += [str(v) for v in bench[col].dropna().unique() if str(v)]
    return ", ".join(dict.fromkeys(names)) or "the measuring machine"


def claims_section(tables: dict[str, pd.DataFrame], config: dict) -> str:
    """The report's section "The study's claims, measured": a table per build, model and served context."""
    bench = tables.get("bench", pd.DataFrame())
    found = evaluate(bench, config)
    blocks = []
    for (build, model, context), g in found.groupby(["build", "model", "context"], sort=False, dropna=False):
        ctx = None if pd.isna(context) else int(context)
        blocks.append({"build": build, "model": model, "context": ctx, "quant": g["quant"].iloc[0],
                       "table": _table(g, f"claims-{build}-{model}-{ctx or 'bench'}"),
                       "counts": g["verdict"].value_counts().reindex(VERDICTS).dropna().astype(int).to_dict()})
    first = blocks[0]["build"] if blocks else None
    return _ENV.get_template("claims.html.j2").module.claims(blocks, first, _machines(bench), card_mib(config) / 1024)
