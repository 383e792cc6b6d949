"""report.tables: KV deltas against the f16 cell of the same quant and context; the tables as docs/tables.md
queries them."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from ggufbench.report.tables import add_kv_deltas
from tests.support import DATA, REPO


def ppl_frame(rows):
    return pd.DataFrame(rows, columns=["build", "model", "quant", "ctx", "kv", "ppl", "ppl_uncertainty"])


def test_kv_deltas():
    df = add_kv_deltas(ppl_frame([
        ("cpu", "m", "Q4_K_M", 512, "f16", 12.9335, 0.63401),
        ("cpu", "m", "Q4_K_M", 512, "q8_0", 12.9406, 0.63523),
        ("cpu", "m", "Q4_K_M", 1024, "f16", 12.0, 0.6),
        ("cpu", "m", "Q4_K_M", 1024, "q8_0", 12.1, 0.6),
    ])).set_index(["ctx", "kv"])
    assert df.loc[(512, "q8_0"), "dppl_vs_f16_kv"] == pytest.approx(0.0071)
    assert df.loc[(512, "f16"), "dppl_vs_f16_kv"] == 0
    assert df.loc[(1024, "q8_0"), "kv_cost_long_minus_short"] == pytest.approx(0.1 - 0.0071)
    assert df.loc[(512, "q8_0"), "kv_cost_long_minus_short"] == 0


def test_kv_delta_without_f16_cell_is_nan():
    df = add_kv_deltas(ppl_frame([("cpu", "m", "Q2_K", 512, "q8_0", 16.9296, 0.81159)]))
    assert df["dppl_vs_f16_kv"].isna().all()


def test_the_duckdb_queries_of_docs_tables_md_run_on_real_tables():
    """docs/tables.md's SQL, as written, on the demo's stored tables (results/tables/ -> tests/data/report/)."""
    duckdb = pytest.importorskip("duckdb", reason="pip install duckdb (in the test extras)")
    queries = re.findall(r"```sql\n(.*?)```", (REPO / "docs" / "tables.md").read_text(), re.S)
    assert len(queries) == 2
    stored = str(DATA / "report" / "cpu-demo") + "/"
    ladder, fastest = (duckdb.sql(q.replace("results/tables/", stored)).df() for q in queries)
    f16 = ladder[ladder["kv"] == "f16"]
    assert list(f16["quant"]) == ["Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K"]  # the ladder, best first
    assert f16["kld"].is_monotonic_increasing and ladder["same_top_p"].between(50, 100).all()
    assert len(fastest) == 5 and fastest["tok_s"].is_monotonic_decreasing
    assert fastest["test"].str.startswith("tg").all() and fastest["vram_peak_used_mib"].isna().all()  # CPU run


def test_chunks_rows_of_real_runs(capture):
    """One row per run and chunk from real records' results (a KLD run and a PPL run of one cell keep both)."""
    from ggufbench.llamacpp.perplexity_output import parse_kld, parse_perplexity
    from ggufbench.report.tables import chunks_rows

    prov = {"build": "cpu", "model": "smollm2", "quant": "Q8_0", "file_sha256": "a", "corpus_sha256": "c"}
    kld = {"stage": "kld", "provenance": {**prov, "baseline_sha256": "b"}, "params": {"ctx": 512, "kv": "f16"},
           "result": parse_kld(capture("kld_q8_0.txt")).to_dict()}
    ppl = {"stage": "perplexity", "provenance": prov, "params": {"ctx": 512, "kv": "f16"},
           "result": parse_perplexity(capture("ppl_q8_0_kv-f16.txt")).to_dict()}
    df = chunks_rows([kld, ppl, kld])  # a record listed twice counts once
    assert df.groupby("stage").size().to_dict() == {"kld": 12, "perplexity": 12}
    assert (df["n_tokens_scored"] == 255).all() and df["ln_ppl_q"].notna().all()
    assert df[df["stage"] == "perplexity"]["kld"].isna().all()


def test_the_bench_table_summarises_the_repetitions_with_the_configs_current_values():
    """noise_threshold_pct and discard_first are read at aggregation (the aggregate rule's params), so changing
    them re-summarises the stored samples without measuring again: real llama-bench JSONL (CPU)."""
    from ggufbench.llamacpp.bench_output import parse_bench_jsonl, summarize
    from ggufbench.report.tables import bench_rows

    parsed = parse_bench_jsonl((DATA / "cpu-0.3.36/bench_q8_0.jsonl").read_text())
    rows = [{**summarize(r, True, 5.0), "vram": {"available": False}, "setting": {}} for r in parsed]
    rec = {"stage": "bench", "provenance": {}, "params": {}, "result": {"rows": rows}}
    strict = bench_rows([rec], {"discard_first": False, "noise_threshold_pct": 1e-9})
    loose = bench_rows([rec], {"discard_first": True, "noise_threshold_pct": 1e9})
    assert strict["noisy"].all() and not loose["noisy"].any()
    n = len(parsed[0]["samples_ts"])
    assert list(strict["n_samples_kept"]) == [n] * len(parsed) and list(loose["n_samples_kept"]) == [n - 1] * len(
        parsed)
    assert list(bench_rows([rec])["noisy"]) == [r["noisy"] for r in rows]  # no summary given: as the job stored it


def test_bench_rows_of_two_llama_cpp_versions_write_one_flash_attn_type(tmp_path):
    """Issue 18's update run failed here: 4227c9b's llama-bench wrote flash_attn true, 0c1e570's -1/0/1, and
    pyarrow refused the mixed column. Records as the older parser stored them, raw rows of the real captures."""
    import json

    from ggufbench.report.tables import bench_rows, write_table
    from tests.support import DATA

    records = []
    for v in ("0.3.16", "0.3.36"):
        raw = [json.loads(x) for x in (DATA / f"cpu-{v}" / "bench_q8_0.jsonl").read_text().splitlines() if x.strip()]
        rows = [{**r, "test": "t", "vram": {"available": False, "reason": "no GPU"}} for r in raw]
        records.append({"kind": "bench", "provenance": {"build": v}, "params": {}, "result": {"rows": rows}})
    df = bench_rows(records)
    assert sorted(set(df["flash_attn"])) == ["auto", "on"]
    write_table(df, tmp_path / "bench.parquet", "bench")
