"""The report and its figures from real tables (tests/data/report/: the CPU demo and the H200 run of two CUDA
builds): what each section says, the picks per VRAM budget, and pages with parts missing."""

from __future__ import annotations

import re

import pandas as pd

from ggufbench.report import figures as F
from ggufbench.report import page as R
from tests.support.report_pages import REPO, RUNS, config_for, stored_tables


def test_cpu_page_says_what_it_lacks(cpu_page):
    page, _ = cpu_page
    for table_id in ("scoreboard-cpu-smollm2-135m", "kv-cpu-smollm2-135m", "kv-kld-cpu-smollm2-135m", "speed",
                     "ladder-smollm2-135m", "builds", "files", "hardware", "corpora"):
        assert f'id="{table_id}"' in page, table_id
    assert "No VRAM measured in this run: no GPU: NVML unavailable" in page
    assert "One llama.cpp build in this run: nothing to compare" in page
    assert "No VRAM budget in the config" in page
    assert "file size (lower bound)" in page
    # the scoreboard's ΔPPL is KLD mode's own, with its correlated ± (CPU run, Q4_K_M against F16)
    assert "<td>Q4_K_M</td><td class=\"num\">0.098</td><td class=\"num\">12.9260 ± 0.7872</td>" \
           "<td class=\"num\">1.1269 ± 0.1307</td><td class=\"num\">0.060838 ± 0.001527</td>" in page
    # provenance: commit, flags, corpus sha256, every file's sha256
    t = stored_tables("cpu-demo")
    assert t["builds"]["llama_cpp_commit"].iloc[0] in page and "-DGGML_NATIVE=ON" in page
    assert t["perplexity"]["corpus_sha256"].iloc[0] in page
    for sha in t["perplexity"]["file_sha256"].unique():
        assert sha in page


def test_page_with_no_results_still_renders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("perplexity", "kld", "bench", "builds"):
        pd.DataFrame().to_parquet(empty / f"{name}.parquet")
    figs = {k: tmp_path / "figures" / f"{k}.png" for k in F.FIGURES}
    F.make_figures({t: empty / f"{t}.parquet" for t in ("perplexity", "kld", "bench")}, figs)
    out = tmp_path / "summary.html"
    R.write_report(sorted(empty.glob("*.parquet")), list(figs.values()), out, "empty", {"models": {}})
    page = out.read_text()
    assert "No results to recommend from in this run" in page
    assert "No perplexity or KLD results in this run" in page and "No llama-bench results in this run" in page
    assert page.count("data:image/png;base64,") == len(F.FIGURES)


def test_kld_without_perplexity_and_bench_only(tmp_path):
    t = stored_tables("h200-demo")
    only_bench = {"perplexity": pd.DataFrame(), "kld": pd.DataFrame(), "bench": t["bench"], "builds": t["builds"]}
    html = R.render(only_bench, [], "x", config_for("h200-demo", vram_budgets_gib=[1.0]))
    assert "No perplexity or KLD results in this run" in html
    assert 'id="recommendations-smollm2-135m"' in html  # picks by speed alone
    assert set(RUNS) == {"cpu-demo", "h200-demo"}


def test_provenance_says_all_chunks_for_the_whole_corpus():
    """The study's shape: ctx 512 on 25 chunks, ctx 8192 on the whole corpus (a null: NaN in a float column)."""
    t = stored_tables("cpu-demo")
    p = t["perplexity"]
    t["perplexity"] = p.assign(chunks=[25.0 if c == 512 else float("nan") for c in p["ctx"]])
    text = R.provenance_block(t)
    assert "ctx 512: --chunks 25," in text and "ctx 1024: --chunks all," in text
    assert "nan" not in text and "25.0" not in text


def test_a_setting_that_does_not_fit_is_a_row_of_its_own_in_the_speed_table():
    import json

    from ggufbench.report.tables import bench_rows

    folder = REPO / "tests/data/cuda-h200-study/bench"
    bench = bench_rows([json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))])
    nofit = bench[bench["status"] == "does not fit"]
    assert set(nofit["strategy"]) == {"all-gpu"} and nofit["median_ts"].isna().all()
    assert nofit["reason"].str.startswith("cudaMalloc of 19905.15 MiB on device 0 failed").all()
    assert (bench["gpu_emulated_free_mib"] == 16384).all()
    page = R.speed_table(bench)
    row = re.search(r'<tr class="nofit">(.*?)</tr>', page).group(1)
    assert row.count("does not fit in 16.0 GiB") == 3  # pp512, tg32 and the VRAM column
    assert "Emulated card: the GPU showed only 16 GiB free" in page
    # the settings that fit were measured all the same, each with its own peak
    measured = bench[bench["status"] == "measured"]
    assert (measured["vram_peak_delta_mib"] < 16384).all()
    assert sorted(measured["setting_n_cpu_moe"].dropna().unique()) == [16, 24, 32]


def test_the_paired_section_on_real_kld_runs(capture):
    """Q8_0 and Q2_K of SmolLM2-135M on the same 12 chunks (real llama-perplexity output): one neighbouring pair,
    resolved, with its paired ± beside the quadrature of the printed ±."""
    from ggufbench.llamacpp.perplexity_output import parse_kld

    chunks, rows = [], []
    for name, quant in (("kld_q8_0.txt", "Q8_0"), ("kld_q2_k.txt", "Q2_K")):
        r = parse_kld(capture(name))
        key = {"build": "cpu", "model": "smollm2-135m", "ctx": 512, "kv": "f16", "quant": quant}
        chunks += [{"stage": "kld", **key, **c} for c in r.chunks]
        rows.append({**key, **r.flat()})
    html = R.paired_section({"chunks": pd.DataFrame(chunks), "kld": pd.DataFrame(rows)})
    assert 'id="paired-quant"' in html and "<td>Q8_0</td><td>Q2_K</td>" in html and "Q8_0 better" in html
    assert "−0.41223" in html or "-0.41223" in html
    empty = R.paired_section({"chunks": pd.DataFrame(), "kld": pd.DataFrame(rows)})
    assert "No per-chunk KLD results in this run" in empty
