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
    assert len(queries) == 3
    stored = str(DATA / "report" / "cpu-demo") + "/"
    ladder, fastest = (duckdb.sql(q.replace("results/tables/", stored)).df() for q in queries[:2])
    f16 = ladder[ladder["kv"] == "f16"]
    assert list(f16["quant"]) == ["Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K"]  # the ladder, best first
    assert f16["kld"].is_monotonic_increasing and ladder["same_top_p"].between(50, 100).all()
    assert len(fastest) == 5 and fastest["tok_s"].is_monotonic_decreasing
    assert fastest["test"].str.startswith("tg").all() and fastest["vram_peak_used_mib"].isna().all()  # CPU run


def test_the_duckdb_flips_query_of_docs_tables_md_runs_on_real_passes(tmp_path):
    """docs/tables.md's third query (the questions Q4_K_M answers differently from F16) on the per-question table
    of the demo's real cloze passes (tests/data/cpu-0.3.36/tasks/demo_cloze, 926 questions): 23 right->wrong and
    15 wrong->right."""
    duckdb = pytest.importorskip("duckdb", reason="pip install duckdb (in the test extras)")
    from ggufbench.llamacpp.task_output import parse_multiple_choice
    from ggufbench.report.tables import task_question_rows, write_table

    query = re.findall(r"```sql\n(.*?)```", (REPO / "docs" / "tables.md").read_text(), re.S)[2]
    records = []
    for quant in ("F16", "Q4_K_M"):
        text = (DATA / f"cpu-0.3.36/tasks/demo_cloze/mc_{quant}_kv-f16.txt").read_text(encoding="utf-8")
        records.append({"provenance": {"build": "cpu", "model": "smollm2-135m", "task_set": "cloze",
                                       "task_set_sha256": "e6502d36", "quant": quant, "file_sha256": quant},
                        "params": {"kv": "f16"}, "result": parse_multiple_choice(text, 926).to_dict()})
    write_table(task_question_rows(records), tmp_path / "task_questions.parquet", "task_questions")
    differ = duckdb.sql(query.replace("results/tables/", f"{tmp_path}/")).df()
    assert len(differ) == 23 + 15 and ((differ["f16"] == 1) & (differ["q4_k_m"] == 0)).sum() == 23


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


def test_the_tasks_tables_of_the_demos_cloze_set(demo_tasks):
    """Every pass against the F16 f16 cell, question by question (the demo's 926 cloze questions, real captures)."""
    from ggufbench.report.tables import task_question_rows
    from tests.unit.report.conftest import demo_task_records

    t = demo_tasks.set_index(["quant", "kv", "variant"])
    assert t.loc[("F16", "f16", "main"), "flip_k"] == 0 and t.loc[("F16", "f16", "main"), "n_correct"] == 505
    q2 = t.loc[("Q2_K", "f16", "main")]
    assert (q2["right_to_wrong"], q2["wrong_to_right"], q2["n_correct"]) == (44, 60, 521)
    assert q2["flip_rate"] == pytest.approx(104 / 926) and q2["net_change"] == pytest.approx(16 / 926)
    assert q2["kld_mean"] == 0.428934 and q2["beyond_noise"]
    assert t.loc[("F16", "f16", "noise_floor"), "flip_k"] == 0
    assert (t["baseline_quant"] == "F16").all() and (t["noise_flip_rate"] == 0).all()
    assert pd.isna(t.loc[("F16", "f16", "main"), "kld_mean"])  # the baseline cell has no KLD row of its own
    assert "correct" not in demo_tasks.columns
    q = task_question_rows(demo_task_records())
    assert len(q) == 6 * 926 and set(q["correct"]) == {0, 1}
    assert q[(q["quant"] == "F16") & (q["kv"] == "f16") & (q["variant"] == "main")]["correct"].sum() == 505


def test_a_kv_types_delta_is_paired_on_the_shared_chunks_and_reads_unresolved_within_the_noise(capture):
    """Q8_0 with KV f16 and q8_0 (real llama-perplexity captures, the same 12 chunks of ctx 512): the quadrature of
    the two PPLs' ± (about ±0.9) calls nothing; paired on the chunks the ± is a small fraction of it, and the
    verdict follows the paired interval. Issue 26: a ±0.03 difference painted as a result."""
    from ggufbench.llamacpp.perplexity_output import parse_perplexity
    from ggufbench.report.tables import add_kv_deltas, chunks_rows, perplexity_rows

    def record(kv: str) -> dict:
        return {"stage": "perplexity", "provenance": {"build": "cpu", "model": "smol", "quant": "Q8_0",
                                                      "file_sha256": "a", "corpus_sha256": "c"},
                "params": {"ctx": 512, "kv": kv, "chunks": 12},
                "result": parse_perplexity(capture(f"ppl_q8_0_kv-{kv}.txt")).to_dict()}

    records = [record("f16"), record("q8_0")]
    alone = perplexity_rows(records).set_index("kv")
    paired = add_kv_deltas(perplexity_rows(records), chunks_rows(records)).set_index("kv")
    q = paired.loc["q8_0"]
    assert alone.loc["q8_0", "dppl_vs_f16_kv_method"] == "quadrature" and q["dppl_vs_f16_kv_method"] == "paired"
    assert q["dppl_vs_f16_kv"] == pytest.approx(alone.loc["q8_0", "dppl_vs_f16_kv"])
    assert q["dppl_vs_f16_kv_uncertainty"] < alone.loc["q8_0", "dppl_vs_f16_kv_uncertainty"] / 5
    assert not alone.loc["q8_0", "dppl_vs_f16_kv_resolved"]  # quadrature: within the noise, whatever the truth
    assert q["dppl_vs_f16_kv_resolved"] == (abs(q["dppl_vs_f16_kv"]) > 1.96 * q["dppl_vs_f16_kv_uncertainty"])
    assert paired.loc["f16", "dppl_vs_f16_kv_method"] == "reference"
