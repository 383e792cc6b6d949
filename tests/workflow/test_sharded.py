"""kld.mode: sharded end to end on the real llama.cpp CPU build and SmolLM2-135M: the same 8 chunks of the demo
corpus scored unsharded (mode chunks) and in shards, the combined statistics against the unsharded ones, the
peak scratch disk against the budget, PPL cells from the shard runs, and interruption: a finished shard is
never redone, a killed one leaves no record and no logits that count."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time

import pandas as pd
import pytest
import yaml

from ggufbench.core.units import GIB
from ggufbench.llamacpp.logits import logits_file_size
from tests.support.workflow import REPO, SNAKEMAKE, job_counts, snakemake

pytestmark = pytest.mark.e2e
QUANTS = ["F16", "Q8_0", "Q4_K_M", "Q2_K"]
BUDGET_GIB = 0.12   # room for 5 chunks of ctx 512 (25 MB each at n_vocab 49152): shards of 4, batch-aligned
MODEL = "results/kld/cpu/smollm2-135m"
BASE = "results/kld-base/cpu/smollm2-135m/ctx512_kv-f16.json"
SHARDS = "results/kld-shards/cpu/smollm2-135m/ctx512"


def config(mode: str, scratch) -> dict:
    c = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    m = c["models"]["smollm2-135m"]
    m["quants"] = {q: m["quants"][q] for q in QUANTS}
    c["perplexity"] = {"corpus": "pydocs", "ctx": [512], "kv": ["f16"], "chunks": 8}
    c["kld"] = {"corpus": "pydocs", "ctx": 512, "chunks": 8, "kv": ["f16"], "base_kv": "f16", "mode": mode}
    if mode == "sharded":
        c["kld"]["sharded"] = {"disk_budget_gib": BUDGET_GIB, "scratch_dir": str(scratch)}
    else:
        c["kld"]["max_logits_gib"] = 1
    c["bench"] = {"prompt": [16], "gen": [4], "repetitions": 1}
    c["server"] = {"check": False}  # the demo's test starts the servers; here only the KLD differs
    return c


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(unsharded workdir, sharded workdir, scratch folder): the sharded run reuses the first one's build,
    models and corpus (hard links), so only the KLD work differs."""
    chunks = tmp_path_factory.mktemp("chunks")
    (chunks / "c.yaml").write_text(yaml.safe_dump(config("chunks", None)))
    snakemake(chunks, "--cores", "2", *[f"{MODEL}/{q}_ctx512_kv-f16.json" for q in QUANTS[1:]], BASE,
              configfile=chunks / "c.yaml")
    sharded = tmp_path_factory.mktemp("sharded")
    scratch = tmp_path_factory.mktemp("scratch")
    for d in ("builds", "models", "data"):
        shutil.copytree(chunks / "results" / d, sharded / "results" / d, copy_function=os.link, symlinks=True)
    (sharded / "s.yaml").write_text(yaml.safe_dump(config("sharded", scratch)))
    snakemake(sharded, "--cores", "2", "reports/summary.html", configfile=sharded / "s.yaml")
    return chunks, sharded, scratch


def record(work, path) -> dict:
    return json.loads((work / path).read_text())


def test_the_plan_sizes_shards_from_the_forecast(runs):
    _, sharded, _ = runs
    plan = record(sharded, f"{SHARDS}/plan.json")["result"]
    assert plan["n_chunk"] == 8 and plan["shards"] == [[0, 4], [4, 8]] and plan["tokenizer"] == "gpt2"
    assert plan["shard_logits_bytes"] == [logits_file_size(512, 49152, 4)] * 2
    assert plan["unsharded_logits_bytes"] == logits_file_size(512, 49152, 8) > BUDGET_GIB * GIB


def test_sharded_equals_unsharded_over_the_same_chunks(runs):
    """Shards aligned to llama-perplexity's batches: the same per-token values, so the same statistics to the
    printed digits; and in any case within one combined standard error."""
    chunks, sharded, _ = runs
    for q in QUANTS[1:]:
        a = record(chunks, f"{MODEL}/{q}_ctx512_kv-f16.json")["result"]
        rec = record(sharded, f"{MODEL}/{q}_ctx512_kv-f16.json")
        b = rec["result"]
        assert rec["params"]["kld_mode"] == "sharded" and rec["params"]["n_shards"] == 2
        assert b["n_chunks"] == a["n_chunks"] == 8 and b["tokens_differing"] == 0
        for key in ("kld_mean", "ppl_q", "same_top_p_pct"):
            se = math.hypot(a[f"{key}_uncertainty"], b[f"{key}_uncertainty"])
            assert abs(a[key] - b[key]) < se, (q, key, a[key], b[key], se)
        assert b["kld_mean"] == pytest.approx(a["kld_mean"], abs=1e-6), q
        assert b["ppl_q"] == pytest.approx(a["ppl_q"], abs=1e-5), q
        assert b["same_top_p_pct"] == pytest.approx(a["same_top_p_pct"], abs=1e-3), q
        assert b["kld_max"] == a["kld_max"]


def test_peak_scratch_disk_stays_under_the_budget_and_nothing_is_left(runs):
    _, sharded, scratch = runs
    for i in (0, 1):
        r = record(sharded, f"{SHARDS}/shard-{i}.json")["result"]
        assert r["logits_bytes_written"] == r["logits_bytes_forecast"] == logits_file_size(512, 49152, 4)
        assert r["logits_bytes_written"] <= r["scratch_peak_bytes"] <= BUDGET_GIB * GIB
        assert r["scratch_samples"] > 3 and set(r["kld"]) == {f"{q}|f16" for q in QUANTS[1:]}
    base = record(sharded, BASE)["result"]
    assert base["scratch_peak_bytes"] <= base["disk_budget_bytes"] < base["unsharded_logits_bytes"]
    assert not any(p.is_file() and not p.name.endswith(".lock") for p in scratch.rglob("*"))


def test_ppl_cells_come_from_the_shard_runs_and_the_table_says_so(runs):
    chunks, sharded, _ = runs
    ppl = pd.read_parquet(sharded / "results/tables/perplexity.parquet")
    by = dict(zip(ppl["quant"], ppl["measured_by"], strict=True))
    assert by == {"F16": "kld_base (sharded)", **{q: "kld (sharded)" for q in QUANTS[1:]}}
    base = record(chunks, BASE)["result"]
    f16 = ppl[ppl["quant"] == "F16"].iloc[0]
    assert f16["ppl"] == pytest.approx(base["ppl"], abs=2e-4) and f16["n_chunks"] == 8
    kld = pd.read_parquet(sharded / "results/tables/kld.parquet")
    assert (kld["kld_mode"] == "sharded").all() and kld["percentiles_estimated"].all()


def test_the_report_says_how_the_kld_was_scored(runs):
    _, sharded, _ = runs
    html = (sharded / "reports/summary.html").read_text(encoding="utf-8")
    assert "8 chunks scored in 2 shards (kld.mode: sharded" in html and "--chunks nan" not in html


def test_the_plan_makes_no_ppl_run_for_cells_the_shards_cover(runs, tmp_path):
    _, sharded, _ = runs
    counts = job_counts(snakemake(tmp_path, "-n", "reports/summary.html", configfile=sharded / "s.yaml").stdout)
    assert counts["kld_shard_plan"] == 1 and counts["kld_combine"] == 3 and counts["kld_base_combine"] == 1
    assert "perplexity" not in counts and "kld" not in counts and "kld_base" not in counts


@pytest.mark.faults
def test_a_finished_shard_is_never_redone_and_a_killed_one_leaves_nothing(runs):
    _, sharded, scratch = runs
    cfg = sharded / "s.yaml"
    before = record(sharded, f"{MODEL}/Q2_K_ctx512_kv-f16.json")["result"]
    # the state a run stopped during shard 1 leaves: shard 0 done, nothing combined yet
    targets = [BASE, *[f"{MODEL}/{q}_ctx512_kv-f16.json" for q in QUANTS[1:]]]
    for path in [f"{SHARDS}/shard-1.json", *targets]:
        (sharded / path).unlink()
    # (a finished report would not ask for them again, so ask for the records, as a first run would)
    counts = job_counts(snakemake(sharded, "-n", *targets, configfile=cfg).stdout)
    assert counts["kld_shard"] == 1 and counts["kld_combine"] == 3 and "kld_shard_plan" not in counts
    # kill the shard job while its baseline pass writes logits
    proc = subprocess.Popen([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(sharded),
                             "--configfile", str(cfg), "--cores", "2", f"{SHARDS}/shard-1.json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    logits = scratch / "ggufbench-kld/cpu/smollm2-135m/ctx512/shard-1/base.logits"
    deadline = time.monotonic() + 300
    while not (logits.exists() and logits.stat().st_size > 0) and time.monotonic() < deadline:
        assert proc.poll() is None, "the shard job ended before it could be interrupted"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)
    assert not (sharded / f"{SHARDS}/shard-1.json").exists()
    assert not logits.exists(), "the killed shard left its logits in scratch"
    # the next run redoes that shard only (shard 0's record is untouched), and the statistics come back the same
    shard0 = (sharded / f"{SHARDS}/shard-0.json").stat().st_mtime_ns
    snakemake(sharded, "--cores", "2", *targets, configfile=cfg)
    assert (sharded / f"{SHARDS}/shard-0.json").stat().st_mtime_ns == shard0
    assert record(sharded, f"{SHARDS}/shard-1.json")["result"]["tokens_differing"] == 0
    after = record(sharded, f"{MODEL}/Q2_K_ctx512_kv-f16.json")["result"]
    assert (after["kld_mean"], after["ppl_q"]) == (before["kld_mean"], before["ppl_q"])



def test_the_chunks_table_numbers_chunks_across_shards_and_the_ranking_is_checked(runs):
    """chunks.parquet holds every quant's 8 chunks, numbered in the corpus across the two shards (each shard's
    running table restarts, so the rounding bound restarts too); the ranking after 4 chunks is set beside
    the ranking over all 8."""
    from ggufbench.report.paired import ranking_holds

    _, sharded, _ = runs
    # the tables whole first: an earlier test deletes records and measures them again without the report, and the
    # tables made from them are removed when they go (workflow/made.py); remaking them measures nothing
    counts = job_counts(snakemake(sharded, "-n", "reports/summary.html", configfile=sharded / "s.yaml").stdout)
    assert not {"kld_shard", "kld_combine", "kld_base_combine", "perplexity"} & set(counts), counts
    snakemake(sharded, "--cores", "2", "reports/summary.html", configfile=sharded / "s.yaml")
    chunks = pd.read_parquet(sharded / "results/tables/chunks.parquet")
    kld = chunks[chunks["stage"] == "kld"]
    assert sorted(kld["quant"].unique()) == sorted(QUANTS[1:])
    for _, g in kld.groupby("quant"):
        assert sorted(g["chunk"]) == list(range(8))
        g = g.set_index("chunk")
        assert g.loc[4, "kld_bound"] == g.loc[0, "kld_bound"] < g.loc[3, "kld_bound"]
    r = ranking_holds(chunks, 4).iloc[0]
    assert r["n_chunks"] == 8 and set(r["order_all"].split(" < ")) == set(QUANTS[1:])
    assert r["order_all"] == "Q8_0 < Q4_K_M < Q2_K" and r["holds"]  # the ladder's gaps are wide here
