"""The report and its figures from real tables (tests/data/report/: the CPU demo and the H200 run of two CUDA
builds): what each section says, the picks per VRAM budget, and pages with parts missing."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from ggufbench import figures as F
from ggufbench import recommend as REC
from ggufbench import report as R

from .browser.build import REPO, RUNS, build_report, config_for, table_paths


def tables(run: str) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in table_paths(run)}


@pytest.fixture(scope="module")
def cpu_page(tmp_path_factory):
    """The CPU demo's page as if no VRAM budget were configured (the tables were made before the demo had any)."""
    out = tmp_path_factory.mktemp("cpu")
    return build_report("cpu-demo", out, config_for("cpu-demo", vram_budgets_gib=[])).read_text(encoding="utf-8"), out


@pytest.fixture(scope="module")
def gpu_page(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    cfg = config_for("h200-demo", vram_budgets_gib=[0.5, 0.8, 1.0], target_gpu={"name": "RTX 5080", "vram_gib": 16})
    return build_report("h200-demo", out, cfg).read_text(encoding="utf-8"), out


def test_figures_rule_outputs_are_the_figures_module_makes():
    smk = (REPO / "rules" / "report.smk").read_text()
    block = smk[smk.index("rule figures:"):smk.index("rule summary_report:")]
    keys = re.findall(r"^\s+(\w+)=report\(\"reports/figures/(\w+)\.png\", caption=\"../docs/report/(\w+)\.rst\"",
                      block, re.M)
    assert sorted(k for k, _, _ in keys) == sorted(F.FIGURES)
    for key, stem, caption in keys:
        assert key == stem == caption
        assert (REPO / "docs" / "report" / f"{caption}.rst").is_file()


def test_every_figure_is_made_and_embedded(cpu_page):
    page, out = cpu_page
    for key in F.FIGURES:
        png = out / "figures" / f"{key}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000, key
    assert page.count('src="data:image/png;base64,') == len(F.FIGURES)
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing to fetch: opens offline
    with pytest.raises(ValueError, match="known"):
        F.make_figures({}, {"nonsense": out / "x.png"})


def test_pareto_front_on_the_measured_ladder():
    k = F.scoreboard_kld(tables("cpu-demo")["kld"])
    front = F.pareto_front(k["file_size_bytes"], k["kld_mean"])
    # on this ladder every quant is on the frontier: each bigger file has a lower mean KLD
    assert front.all() and len(k) == 5
    # a point beaten on both axes drops off
    assert list(F.pareto_front([1, 2, 3], [0.5, 0.6, 0.1])) == [True, False, True]


def test_offload_strategy_from_llama_bench_fields():
    cpu = F.with_strategy(tables("cpu-demo")["bench"])
    assert set(cpu["strategy_label"]) == {"CPU only"}
    gpu = F.with_strategy(tables("h200-demo")["bench"])
    assert set(gpu["strategy_label"]) == {"-ngl 99"}
    row = gpu.iloc[0].to_dict() | {"n_cpu_moe": 20}
    assert F.offload_strategy(row) == ("n-cpu-moe", "-ngl 99 -ncmoe 20")


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
    t = tables("cpu-demo")
    assert t["builds"]["llama_cpp_commit"].iloc[0] in page and "-DGGML_NATIVE=ON" in page
    assert t["perplexity"]["corpus_sha256"].iloc[0] in page
    for sha in t["perplexity"]["file_sha256"].unique():
        assert sha in page


def test_gpu_page_picks_per_budget(gpu_page):
    page, _ = gpu_page
    rows = re.search(r'<table id="recommendations-smollm2-135m">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    picks = [re.findall(r"<td[^>]*>(.*?)</td>", tr)[1:4] for tr in rows.split("</tr>") if tr]
    # measured NVML peaks on the H200: Q4_K_M 815 MiB, Q8_0 853 MiB, F16 1065 MiB, Q2_K 799 MiB (the smallest)
    assert picks == [["0.5 GiB", "nothing fits", "—"], ["0.8 GiB", "Q4_K_M", "f16"], ["1 GiB", "Q8_0", "f16"],
                     ["RTX 5080 (16 GiB)", "F16", "f16"]]
    assert "the smallest need is 0.780 GiB (Q2_K, measured VRAM)" in page
    assert "Measured on NVIDIA H200" in page and "The target GPU is RTX 5080" in page
    # both builds compared; the second build's tables folded, not repeated in full
    assert "cuda-fa-default</code> vs <code>cuda</code> — 0 of 36 cells differ beyond the noise" in page
    assert 'id="compare-bench-cuda-fa-default"' in page
    assert "<details><summary>Build <code>cuda-fa-default</code>" in page
    assert "No VRAM measured" not in page and "nvcc 13.0, arch 90" in page and "580.159.04" in page


def test_candidates_memory_basis():
    t = tables("h200-demo")
    c = REC.candidates(t, config_for("h200-demo"), "smollm2-135m", "cuda")
    assert len(c) == 18  # 6 quants x 3 KV types, one offload setting
    f16 = c[(c["quant"] == "Q4_K_M") & (c["kv"] == "f16")].iloc[0]
    assert f16["basis"] == "measured VRAM" and f16["need_bytes"] == pytest.approx(814.8125 * 2**20)
    q4 = c[(c["quant"] == "Q4_K_M") & (c["kv"] == "q4_0")].iloc[0]
    assert q4["basis"] == "measured VRAM with f16 KV (upper bound)"
    cpu = REC.candidates(tables("cpu-demo"), config_for("cpu-demo"), "smollm2-135m", "cpu")
    assert (cpu["basis"] == "file size (lower bound)").all()
    assert (cpu["need_bytes"] == cpu["file_size_bytes"]).all()


def test_kv_cache_estimate():
    # SmolLM2-135M's GGUF metadata: 30 layers, 3 KV heads, head size 64 (K and V)
    arch = {"n_layer": 30, "n_head_kv": 3, "n_embd_head_k": 64, "n_embd_head_v": 64}
    assert REC.kv_cache_bytes(arch, 512, "f16", "f16") == 30 * 512 * 3 * (64 * 2 + 64 * 2)
    assert REC.kv_cache_bytes(arch, 512, "q8_0", "q8_0") == pytest.approx(30 * 512 * 3 * 128 * 34 / 32)
    assert REC.kv_cache_bytes({}, 512, "f16", "f16") is None
    assert REC.kv_cache_bytes(arch, 512, "f16", "nonsense") is None


def test_budgets_from_config():
    assert REC.budgets_from_config({}) == []
    cfg = {"report": {"target_gpu": {"name": "RTX 5080", "vram_gib": 16}, "vram_budgets_gib": [24, 16, 8]}}
    assert REC.budgets_from_config(cfg) == [("8 GiB", 8.0), ("RTX 5080 (16 GiB)", 16.0), ("24 GiB", 24.0)]


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
    t = tables("h200-demo")
    only_bench = {"perplexity": pd.DataFrame(), "kld": pd.DataFrame(), "bench": t["bench"], "builds": t["builds"]}
    html = R.render(only_bench, [], "x", config_for("h200-demo", vram_budgets_gib=[1.0]))
    assert "No perplexity or KLD results in this run" in html
    assert 'id="recommendations-smollm2-135m"' in html  # picks by speed alone
    assert set(RUNS) == {"cpu-demo", "h200-demo"}


def test_provenance_says_all_chunks_for_the_whole_corpus():
    """The study's shape: ctx 512 on 25 chunks, ctx 8192 on the whole corpus (a null: NaN in a float column)."""
    t = tables("cpu-demo")
    p = t["perplexity"]
    t["perplexity"] = p.assign(chunks=[25.0 if c == 512 else float("nan") for c in p["ctx"]])
    text = R.provenance_block(t)
    assert "ctx 512: --chunks 25," in text and "ctx 1024: --chunks all," in text
    assert "nan" not in text and "25.0" not in text


def test_a_setting_that_does_not_fit_is_a_row_of_its_own_in_the_speed_table():
    import json

    from ggufbench.tables import bench_rows

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


def test_cpu_page_recommends_what_started(tmp_path):
    """With the demo's budgets: each pick is the one whose llama-server command was started, with its command."""
    page = build_report("cpu-demo", tmp_path).read_text(encoding="utf-8")
    rows = re.search(r'<table id="recommendations-smollm2-135m">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", tr) for tr in rows.split("</tr>") if tr]
    assert [c[:3] for c in cells] == [["1024", "0.2 GiB", "Q8_0"], ["1024", "1 GiB", "F16"]]
    assert all(c[-1].startswith("started in ") and "tok/s" in c[-1] for c in cells)
    assert page.count("<pre class='cmd'><code>results/builds/cpu/bin/llama-server -m results/models/smollm2-135m/"
                      "quantized/") == 2
