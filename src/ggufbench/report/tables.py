"""Result records (JSON) -> tidy Parquet tables, one row per measurement, provenance on every row.

Tables (results/tables/):
  perplexity.parquet  one row per build x model x quant x ctx x KV type (PPL ± uncertainty)
  kld.parquet         one row per build x model x quant (every KLD-mode statistic)
  bench.parquet       one row per llama-bench test (every llama-bench field by name) + VRAM columns
  builds.parquet      one row per llama.cpp build (source identity, flags, toolchain)
  chunks.parquet      one row per PPL/KLD run x chunk of the corpus (each statistic of that chunk alone)
  tasks.parquet       one row per multiple-choice pass (build x model x task set x quant x KV type, and the baseline's
                      noise-floor rerun): accuracy, and flips against the baseline cell question by question
  task_questions.parquet  one row per pass x question: right (1) or wrong (0)
  kv_cost.parquet     one row per build x model x quant x ctx x KV type of the KV-cost scorer (both views named
                      apart: half_* llama-perplexity's second half, all_* every position; paired over chunks)
  kv_cost_positions.parquet  one row per kv_cost row x position bin (the cost along the context)
Columns are documented in docs/tables.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import ToolFailed
from ..core.io import atomic_path, made_here, read_json
from ..core.records import Now, read_records
from ..llamacpp.bench_output import flash_attn_label, summarize
from ..llamacpp.logits import scored_per_chunk
from ..measure.kv_cost import kv_cost_position_rows, kv_cost_rows
from ..measure.load import load_verdict
from ..measure.tuner import setting_label
from . import flips as flip_stats

PROVENANCE = ["model", "quant", "file", "file_sha256", "file_size_bytes", "build", "build_key",
              "llama_cpp_version", "llama_cpp_commit", "backend", "cpu_name", "gpu_name", "gpu_driver", "host"]


def _flat(record: dict, result: dict) -> dict:
    row = {**record["provenance"], **{k: v for k, v in record["params"].items() if not isinstance(v, dict)},
           **result}
    row["tool_wall_seconds"] = record.get("tool", {}).get("wall_seconds")
    return {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in row.items()}


PPL_KEEP = ("n_chunks", "n_ctx", "n_batch", "n_seq", "seconds_per_pass")


def ppl_row(record: dict) -> dict:
    """A PPL cell from a perplexity record, or from the KLD / baseline record that measured the same thing
    (measured_by says which; KLD mode's Mean PPL(Q) is the same statistic as PPL mode's Final estimate)."""
    res = record["result"]
    if record["stage"] == "kld":
        result = {"ppl": res["ppl_q"], "ppl_uncertainty": res["ppl_q_uncertainty"]}
    else:  # perplexity or kld_base: parse_perplexity's fields
        result = {"ppl": res["ppl"], "ppl_uncertainty": res["ppl_uncertainty"]}
    result.update({k: res.get(k) for k in PPL_KEEP})
    prov = {k: v for k, v in record["provenance"].items() if k not in ("baseline_quant", "baseline_sha256")}
    row = _flat({**record, "provenance": prov}, result)
    # sharded KLD runs (kld.mode: sharded) measured the cell in shards, combined: the table says so
    row["measured_by"] = record["stage"] + (" (sharded)" if record["params"].get("kld_mode") == "sharded" else "")
    return row


Z95 = 1.96  # a difference beyond 1.96 of its ± is resolved (95 %)
CHUNK_RUN_ORDER = {"perplexity": 0, "kld_base": 1, "kld": 2}  # one run per cell: the same tokens either way


def _chunk_runs(chunks: pd.DataFrame | None) -> dict:
    """(build, model, quant, ctx, kv) -> that cell's per-chunk rows (one run's: a PPL pass before a KLD pass)."""
    if chunks is None or chunks.empty or "ln_ppl_q" not in chunks:
        return {}
    out = {}
    for key, g in chunks.groupby(["build", "model", "quant", "ctx", "kv"]):
        first = min(g["stage"], key=lambda s: CHUNK_RUN_ORDER.get(s, 9))
        out[tuple(key)] = g[g["stage"] == first]
    return out


def _paired_delta(r, runs: dict) -> tuple[float, bool] | None:
    """ΔPPL's ± (as a standard error in PPL) and whether it is resolved, paired on the chunks the cell and its f16
    twin share (report/paired.py on ln PPL per chunk: their errors are correlated, the quadrature of their ± is far
    too wide); None without per-chunk values of both."""
    from .paired import paired

    key = (r["build"], r["model"], r["quant"], r["ctx"])
    a, b = runs.get((*key, r["kv"])), runs.get((*key, "f16"))
    if a is None or b is None:
        return None
    p = paired(a, b, "ln_ppl_q")
    if p["n_chunks"] < 2 or not math.isfinite(p["half_width"]):
        return None
    ppl_f16 = r["ppl"] - r["dppl_vs_f16_kv"]
    return ppl_f16 * math.exp(p["diff"]) * p["half_width"] / Z95, bool(p["resolved"])


def add_kv_deltas(df: pd.DataFrame, chunks: pd.DataFrame | None = None) -> pd.DataFrame:
    """dppl_vs_f16_kv: PPL minus the same quant's PPL with f16 KV at the same ctx (NaN without an f16 cell);
    kv_cost_long_minus_short: that difference at this ctx minus at the shortest ctx (0 at the shortest). Each with
    its ± and whether it is resolved (beyond 1.96 of it): paired on the shared chunks where chunks (the per-chunk
    table) holds both runs (dppl_vs_f16_kv_method "paired"), else the runs' ± in quadrature (an upper bound: the runs
    score the same tokens, their errors are correlated; "quadrature"). A difference within the noise reads as one."""
    if df.empty:
        return df
    keys = ["build", "model", "quant", "ctx"]
    f16 = df[df["kv"] == "f16"].set_index(keys)
    idx = pd.MultiIndex.from_frame(df[keys])
    d = df["ppl"].to_numpy() - f16["ppl"].reindex(idx).to_numpy()
    du = np.hypot(df["ppl_uncertainty"].to_numpy(float), f16["ppl_uncertainty"].reindex(idx).to_numpy(float))
    is_f16 = df["kv"].to_numpy() == "f16"
    df = df.assign(dppl_vs_f16_kv=d, dppl_vs_f16_kv_uncertainty=np.where(is_f16, 0.0, du),
                   dppl_vs_f16_kv_method=np.where(is_f16, "reference", "quadrature"))
    df = df.assign(dppl_vs_f16_kv_resolved=np.abs(d) > Z95 * df["dppl_vs_f16_kv_uncertainty"].to_numpy())
    runs = _chunk_runs(chunks)
    for i, r in df[~is_f16].iterrows() if runs else ():
        found = _paired_delta(r, runs)
        if found is not None:
            df.loc[i, ["dppl_vs_f16_kv_uncertainty", "dppl_vs_f16_kv_resolved", "dppl_vs_f16_kv_method"]] = [
                found[0], found[1], "paired"]
    short = df.groupby(["build", "model"])["ctx"].transform("min")
    at_short = df[df["ctx"] == short].set_index(["build", "model", "quant", "kv"])
    idx2 = pd.MultiIndex.from_frame(df[["build", "model", "quant", "kv"]])
    long = df["dppl_vs_f16_kv"].to_numpy() - at_short["dppl_vs_f16_kv"].reindex(idx2).to_numpy()
    lu = np.hypot(df["dppl_vs_f16_kv_uncertainty"].to_numpy(float),  # two contexts: other chunks, independent
                  at_short["dppl_vs_f16_kv_uncertainty"].reindex(idx2).to_numpy(float))
    lu = np.where(df["ctx"].to_numpy() == short.to_numpy(), 0.0, lu)
    return df.assign(kv_cost_long_minus_short=long, kv_cost_long_minus_short_uncertainty=lu,
                     kv_cost_long_minus_short_resolved=np.abs(long) > Z95 * lu,
                     dppl_vs_f16_kv_resolved=df["dppl_vs_f16_kv_resolved"].astype(bool))


def perplexity_rows(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame([ppl_row(r) for r in records])
    return _order(add_kv_deltas(df))


def kld_rows(records: list[dict]) -> pd.DataFrame:
    return _order(pd.DataFrame([_flat(r, {k: v for k, v in r["result"].items() if k != "chunks"})
                                for r in records]))


CHUNK_KEYS = ("build", "model", "quant", "ctx", "kv")


def chunks_rows(records: list[dict]) -> pd.DataFrame:
    """One row per run and chunk: the chunk's own statistics (recovered from llama-perplexity's running
    values, each with its rounding bound) for paired comparisons; runs that answer the same cell twice (a PPL
    run and a KLD run) each keep their rows, told apart by stage."""
    rows, seen = [], set()
    for r in records:
        prov, params = r["provenance"], r["params"]
        key = (r["stage"], *(prov.get(k, params.get(k)) for k in CHUNK_KEYS))
        if key in seen or not r["result"].get("chunks"):
            continue
        seen.add(key)
        ctx = int(params["ctx"])
        base = {"stage": r["stage"], "build": prov["build"], "model": prov["model"], "quant": prov["quant"],
                "ctx": ctx, "kv": params.get("kv"), "file_sha256": prov.get("file_sha256"),
                "baseline_sha256": prov.get("baseline_sha256"), "corpus_sha256": prov.get("corpus_sha256"),
                "n_tokens_scored": scored_per_chunk(ctx)}
        for c in r["result"]["chunks"]:
            c = dict(c)
            if "ln_ppl" in c:  # PPL mode: the same statistic as KLD mode's ln PPL(Q)
                c["ln_ppl_q"], c["ln_ppl_q_bound"] = c.pop("ln_ppl"), c.pop("ln_ppl_bound")
            rows.append({**base, **c})
    return pd.DataFrame(rows)


def bench_rows(records: list[dict], summary: dict | None = None) -> pd.DataFrame:
    """One row per llama-bench test; every llama-bench field by name, plus strategy, the offload setting, the
    noise columns, and the VRAM peak and the machine's load (measure.load) of the call that measured it. summary
    ({discard_first, noise_threshold_pct}, the config's): the repetitions summarised again with these, so changing
    them re-aggregates, not re-measures."""
    rows = []
    for r in records:
        for b in r["result"]["rows"]:
            b = dict(b)
            if summary and b.get("samples_ts"):
                b = summarize(b, summary["discard_first"], summary["noise_threshold_pct"])
            vram, setting = b.pop("vram"), b.pop("setting", {})
            load = b.pop("load", None)  # records made before the load was sampled have none: "not measured"
            b.pop("loaded", None)       # judged again below, so the threshold is one place (measure.load)
            loaded, load_why = load_verdict(load)
            if "flash_attn" in b:  # records measured before the parser made it one type
                b["flash_attn"] = flash_attn_label(b["flash_attn"])
            bench = {f"bench_{k}" if k in ("model_filename",) else k: v for k, v in b.items()}
            row = _flat({**r, "params": {}}, bench)
            row.update(setting_kv=setting.get("kv"), setting_batch=setting.get("batch"),
                       setting_ubatch=setting.get("ubatch"), setting_n_cpu_moe=setting.get("n_cpu_moe"),
                       setting_override_tensor=setting.get("override_tensor"),
                       setting_fit_target=setting.get("fit_target"),
                       setting_n_gpu_layers=setting.get("n_gpu_layers"), setting_context=setting.get("context"),
                       setting_no_mmap=setting.get("no_mmap"),
                       status=b.get("status", "measured"), reason=b.get("reason"),
                       vram_available=vram["available"], vram_reason=vram.get("reason") or None,
                       vram_peak_delta_mib=vram.get("peak_delta_mib"), vram_peak_used_mib=vram.get("peak_used_mib"),
                       vram_free_before_mib=vram.get("free_before_mib"), vram_samples=vram.get("samples"),
                       load_available=bool(load and load.get("available")), loaded=loaded, load_reason=load_why,
                       load_other_cpu_share=(load or {}).get("other_cpu_share"),
                       load_loadavg_max=(load or {}).get("loadavg_max"))
            rows.append(row)
    return _order(pd.DataFrame(rows))


def tune_rows(records: list[dict]) -> pd.DataFrame:
    """One row per tuner job: the budget, the N it picked with its speed and VRAM, and its cost in runs."""
    rows = []
    for r in records:
        res = r["result"]
        best = res.get("best") or {}
        prm = r["params"]
        row = _flat({**r, "params": {"budget_gib": prm["budget_gib"], "context": prm.get("context"),
                                     "threads": prm.get("threads")}}, {})
        ref = res.get("best_reference") or {}
        row.update(status=res["status"], reason=res.get("reason") or res.get("note"),
                   best_setting=json.dumps(best.get("setting")) if best else None,
                   best_label=setting_label(best["setting"]) if best.get("setting") else None,
                   best_family=res.get("best_family"),
                   reference_label=setting_label(ref["setting"]) if ref.get("setting") else None,
                   reference_tg_ts=ref.get("tg_ts"), reference_vram_mib=ref.get("vram_mib"),
                   best_n_cpu_moe=best.get("n_cpu_moe"), best_tg_ts=best.get("tg_ts"),
                   best_vram_mib=best.get("vram_mib"), best_pp_ts=best.get("pp_ts"),
                   n_runs=len(res.get("probes", [])) or None,
                   full_sweep_runs=res.get("full_sweep_runs"), probes=json.dumps(res.get("probes", [])))
        rows.append(row)
    return _order(pd.DataFrame(rows))


def server_rows(records: list[dict]) -> pd.DataFrame:
    """One row per server check: the budget and context, the recommendation that started (quant, KV, offload,
    threads, the command) with what the server measured, and how many candidates were tried."""
    rows = []
    for r in records:
        res, prm = r["result"], r["params"]
        rec = res.get("recommendation") or {}
        proof = res["attempts"][-1] if res["status"] == "started" else {}
        row = _flat({**r, "params": {"budget_gib": prm["budget_gib"], "context": prm["context"]}}, {})
        row.update(status=res["status"], rec_quant=rec.get("quant"), rec_kv=rec.get("kv"),
                   rec_strategy=rec.get("strategy"), rec_threads=rec.get("threads"), rec_tg_ts=rec.get("tg"),
                   rec_pp_ts=rec.get("pp"), rec_need_bytes=rec.get("need_bytes"), rec_basis=rec.get("basis"),
                   rec_kld=rec.get("kld"), rec_kld_uncertainty=rec.get("kld_u"), rec_ppl=rec.get("ppl"),
                   rec_ppl_uncertainty=rec.get("ppl_u"), command=res.get("command"),
                   load_seconds=proof.get("load_seconds"), server_predicted_ts=proof.get("predicted_per_second"),
                   server_prompt_ts=proof.get("prompt_per_second"),
                   server_vram_peak_mib=(proof.get("vram") or {}).get("peak_delta_mib"),
                   n_candidates=res.get("n_candidates"), n_fit=res.get("n_fit"), n_attempts=len(res["attempts"]),
                   attempts=json.dumps(res["attempts"], default=str))
        rows.append(row)
    return _order(pd.DataFrame(rows))


TASK_GROUP = ("build", "model", "task_set", "task_set_sha256")  # provenance keys: the same questions, one baseline


def _task_row(r: dict) -> dict:
    res = r["result"]
    row = _flat(r, {k: v for k, v in res.items() if k != "correct"})
    acc = flip_stats.accuracy(res["correct"])
    row.update(accuracy_low=acc.low, accuracy_high=acc.high)
    return row


def _baseline_and_noise(members: list[dict], baseline: tuple[str, str]) -> tuple[dict | None, dict | None]:
    """The baseline cell's record and its noise-floor rerun's, among one group's records."""
    base = noise = None
    for r in members:
        if r["params"].get("variant") == "noise_floor":
            noise = r
        elif (r["provenance"]["quant"], r["params"]["kv"]) == baseline:
            base = r
    return base, noise


def _flip_columns(r: dict, base: dict, floor, baseline: tuple[str, str]) -> dict:
    f = flip_stats.flips(base["result"]["correct"], r["result"]["correct"])
    cols = {"baseline_quant": baseline[0], "baseline_kv": baseline[1], **f.to_dict()}
    if floor is not None:
        cols.update(flip_stats.noise_comparison(f, floor))
    return cols


def _with_kld(df: pd.DataFrame, kld: pd.DataFrame | None) -> pd.DataFrame:
    """The cell's mean KLD against the baseline (the kld table's row of the same build, model, quant, KV type)."""
    keys = ["build", "model", "quant", "kv"]
    if kld is None or kld.empty or df.empty or not {*keys, "kld_mean"} <= set(kld.columns):
        return df.assign(kld_mean=float("nan"), kld_mean_uncertainty=float("nan")) if not df.empty else df
    k = kld[[*keys, "kld_mean", "kld_mean_uncertainty"]].drop_duplicates(keys)
    return df.merge(k, on=keys, how="left")


def task_rows(records: list[dict], baselines: dict | None = None, kld: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per multiple-choice pass (a cell, or the baseline's noise-floor rerun): accuracy with its Wilson
    interval; against the baseline cell of its build, model and task set (baselines: {model: [quant, kv]}, the
    config's), question by question: right -> wrong, wrong -> right, the flip rate with its Wilson interval, the net
    change with McNemar's exact p, the noise floor's flips beside them (report/flips.py); and the cell's mean KLD."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r["provenance"].get(k) for k in TASK_GROUP), []).append(r)
    rows = []
    for key, members in groups.items():
        baseline = tuple((baselines or {}).get(key[1]) or ())
        base, noise = _baseline_and_noise(members, baseline) if baseline else (None, None)
        floor = flip_stats.flips(base["result"]["correct"], noise["result"]["correct"]) if base and noise else None
        for r in members:
            row = _task_row(r)
            if base is not None:
                row.update(_flip_columns(r, base, floor, baseline))
            rows.append(row)
    return _order(_with_kld(pd.DataFrame(rows), kld))


def task_question_rows(records: list[dict]) -> pd.DataFrame:
    """One row per pass and question (its index in the task file): right (1) or wrong (0)."""
    rows = []
    for r in records:
        prov, prm = r["provenance"], r["params"]
        base = {"build": prov["build"], "model": prov["model"], "task_set": prov["task_set"],
                "task_set_sha256": prov["task_set_sha256"], "quant": prov["quant"], "kv": prm["kv"],
                "variant": prm.get("variant", "main"), "file_sha256": prov["file_sha256"]}
        rows += [{**base, "question": i, "correct": int(c)} for i, c in enumerate(r["result"]["correct"])]
    return pd.DataFrame(rows)


def write_server_table(records: list, out) -> None:
    write_table(server_rows(read_records(records)), out, "server", sources=records)


def builds_rows(records: list[dict]) -> pd.DataFrame:
    rows = []
    for b in records:
        src = b["source"]
        rows.append({"build": b["build"], "build_key": b["key"], "backend": b["backend"],
                     "llama_cpp_version": b.get("version"), "llama_cpp_commit": b.get("commit"),
                     "binary_commit": b.get("binary_commit"), "source_kind": src["kind"],
                     "source": json.dumps(src), "cmake_args": " ".join(b["cmake_args"]),
                     "cxx_version": b["toolchain"].get("cxx_version"),
                     "nvcc_version": b["toolchain"].get("nvcc_version"),
                     "cuda_architectures": b.get("cuda_architectures"), "built_with": b.get("built_with"),
                     "reused_from_cache": b.get("reused_from_cache")})
    return pd.DataFrame(rows)


def kv_cost_table(records: list[dict]) -> pd.DataFrame:
    return _order(pd.DataFrame([row for r in records for row in kv_cost_rows(r)]))


def kv_cost_positions_table(records: list[dict]) -> pd.DataFrame:
    return _order(pd.DataFrame([row for r in records for row in kv_cost_position_rows(r)]))


def _order(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    first = [c for c in PROVENANCE if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


ROWS = {"perplexity": perplexity_rows, "kld": kld_rows, "bench": bench_rows, "tune": tune_rows, "builds": builds_rows,
        "kv_cost": kv_cost_table, "kv_cost_positions": kv_cost_positions_table}


def now_of(builds=(), manifests=(), corpora=()) -> Now:
    """What is there now, from the build records, the quants' manifests and the corpus records: what every result
    record read into a table must have measured (core.records)."""
    from ..sources.manifest import files_sha256, load_manifest

    found = [load_manifest(m) for m in manifests]
    records = [read_json(b) for b in builds]
    return Now(build_keys={b["build"]: b["key"] for b in records},
               tools_keys={b["build"]: b["tools_key"] for b in records if b.get("tools_key")},
               file_sha256={(d["model"], d["quant"]): files_sha256(d) for d in found},
               corpus_sha256={c["name"]: c["sha256"] for c in map(read_json, corpora)})


def record_tables(records: dict[str, list], now: Now | None = None) -> dict[str, pd.DataFrame]:
    """{table name: record paths} -> {table name: DataFrame}, as the tables of those records alone; every record
    checked to be the measurement its path names, and of what is there now (core.records)."""
    read = {name: read_records(paths, now) if name != "builds" else [read_json(p) for p in paths]
            for name, paths in records.items()}
    return {name: ROWS[name](recs) for name, recs in read.items()}


def write_tables(records: dict[str, list], out: dict, *, bench_summary: dict | None = None,
                 now: Now | None = None, task_baselines: dict | None = None) -> None:
    """records: {perplexity, kld, bench, builds, tune, tasks, kv_cost: record paths}; out: {table name: path}, the
    chunks, tasks, task_questions and kv_cost tables too where out names them (task_baselines: {model: [quant, kv]},
    each model's baseline cell of the task passes; kv_cost_positions beside kv_cost). A record that is not what its
    path names is removed and the job fails naming it: a plain rerun measures it again."""
    names = ("perplexity", "kld", "bench", "tune", "tasks", "kv_cost")
    paths = list(dict.fromkeys(p for name in names for p in records.get(name, [])))
    by_path = dict(zip(paths, read_records(paths, now), strict=True))  # every bad record removed, then one error
    read = {name: [by_path[p] for p in records.get(name, [])] for name in names}
    read["builds"] = [read_json(p) for p in records.get("builds", [])]
    tables = {name: ROWS[name](read[name]) for name in ("perplexity", "kld", "tune", "builds")}
    tables["bench"] = bench_rows(read["bench"], bench_summary)
    if "kv_cost" in out:
        tables["kv_cost"] = kv_cost_table(read["kv_cost"])
        tables["kv_cost_positions"] = kv_cost_positions_table(read["kv_cost"])
    if "chunks" in out:
        quality = dict.fromkeys([*records.get("perplexity", []), *records.get("kld", [])])
        tables["chunks"] = chunks_rows([by_path[p] for p in quality])
        # the KV types' ΔPPL paired on their shared chunks where both runs kept them
        tables["perplexity"] = add_kv_deltas(tables["perplexity"].drop(columns=[
            c for c in tables["perplexity"].columns if c.startswith(("dppl_vs_f16_kv", "kv_cost_long_minus"))]),
            tables["chunks"])
    if "tasks" in out:
        tables["tasks"] = task_rows(read["tasks"], task_baselines, tables["kld"])
        tables["task_questions"] = task_question_rows(read["tasks"])
    made_from = {"chunks": [*records.get("perplexity", []), *records.get("kld", [])],
                 "kv_cost_positions": records.get("kv_cost", []), "task_questions": records.get("tasks", [])}
    for name, df in tables.items():
        write_table(df, out[name], name, sources=made_from.get(name, records.get(name, [])))


KIND = b"ggufbench.table"  # each table's kind, in its Parquet metadata: what read_table checks
SOURCES = b"ggufbench.sources"  # the records it was made from: a table made from a record that is gone is stale


def write_table(df: pd.DataFrame, out, kind: str, sources=()) -> None:
    """The table as Parquet, written whole or not at all, with its kind and the records it was made from in its
    metadata (workflow/made.py removes a table whose records are gone, so the run measures them again)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {KIND: kind.encode(), SOURCES: json.dumps([str(p) for p in dict.fromkeys(sources)]).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)


def table_sources(path) -> list[str]:
    """The records a table was made from, as its metadata names them ([] for a table made before they were kept)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(SOURCES, b"[]"))


def table_problem(path) -> str | None:
    """Why the file at path is not this workflow's table of the kind its name says (results/tables/<kind>.parquet):
    missing, not Parquet (cut short: its footer is at the end), or a table of another kind; None when it is."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        return "is missing"
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError and others for a damaged file
        return f"is not a readable Parquet file ({type(e).__name__}: {e})"
    kind = meta.get(KIND, b"").decode()
    if kind != path.stem:
        return (f"holds a table of kind {kind!r} where its name says {path.stem!r}" if kind else
                "has no table kind in its metadata (made by another program, or before tables carried it)")
    return None


def read_table(path) -> pd.DataFrame:
    """A table as the figures and the page read it: checked first (table_problem); a bad one is removed (it is
    ours: a plain rerun makes it again) and the job fails naming it, instead of a raw ArrowInvalid or KeyError."""
    why = table_problem(path)
    if why is not None:
        if made_here(path) and Path(path).exists():
            Path(path).unlink()
            raise ToolFailed(f"{path} {why}: removed it; a plain rerun makes it again (rule aggregate)")
        raise ToolFailed(f"{path} {why}")
    return pd.read_parquet(path)
