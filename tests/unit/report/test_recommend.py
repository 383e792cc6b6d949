"""report.recommend: candidates per VRAM budget, their memory basis, and the pick (stored CPU and H200 tables)."""

from __future__ import annotations

import re

import pytest

from ggufbench.report import recommend as REC
from tests.support.report_pages import build_report, config_for, stored_tables


@pytest.fixture(scope="module")
def gpu_page(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    cfg = config_for("h200-demo", vram_budgets_gib=[0.5, 0.8, 1.0], target_gpu={"name": "RTX 5080", "vram_gib": 16})
    return build_report("h200-demo", out, cfg).read_text(encoding="utf-8"), out


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
    t = stored_tables("h200-demo")
    c = REC.candidates(t, config_for("h200-demo"), "smollm2-135m", "cuda")
    assert len(c) == 18  # 6 quants x 3 KV types, one offload setting
    f16 = c[(c["quant"] == "Q4_K_M") & (c["kv"] == "f16")].iloc[0]
    assert f16["basis"] == "measured VRAM" and f16["need_bytes"] == pytest.approx(814.8125 * 2**20)
    q4 = c[(c["quant"] == "Q4_K_M") & (c["kv"] == "q4_0")].iloc[0]
    assert q4["basis"] == "measured VRAM with f16 KV (upper bound)"
    cpu = REC.candidates(stored_tables("cpu-demo"), config_for("cpu-demo"), "smollm2-135m", "cpu")
    assert (cpu["basis"] == "file size (lower bound)").all()
    assert (cpu["need_bytes"] == cpu["file_size_bytes"]).all()


def test_kv_cache_estimate():
    # SmolLM2-135M's GGUF metadata: 30 layers, 3 KV heads, head size 64 (K and V)
    arch = {"n_layer_kv": 30, "n_head_kv": 3, "n_embd_head_k": 64, "n_embd_head_v": 64}
    assert REC.kv_cache_bytes(arch, 512, "f16", "f16") == 30 * 512 * 3 * (64 * 2 + 64 * 2)
    assert REC.kv_cache_bytes(arch, 512, "q8_0", "q8_0") == pytest.approx(30 * 512 * 3 * 128 * 34 / 32)
    assert REC.kv_cache_bytes({}, 512, "f16", "f16") is None
    assert REC.kv_cache_bytes(arch, 512, "f16", "nonsense") is None


def test_budgets_from_config():
    assert REC.budgets_from_config({}) == []
    cfg = {"report": {"target_gpu": {"name": "RTX 5080", "vram_gib": 16}, "vram_budgets_gib": [24, 16, 8]}}
    assert REC.budgets_from_config(cfg) == [("8 GiB", 8.0), ("RTX 5080 (16 GiB)", 16.0), ("24 GiB", 24.0)]


def test_cpu_page_recommends_what_started(tmp_path):
    """With the demo's budgets: each pick is the one whose llama-server command was started, with its command."""
    page = build_report("cpu-demo", tmp_path).read_text(encoding="utf-8")
    rows = re.search(r'<table id="recommendations-smollm2-135m">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", tr) for tr in rows.split("</tr>") if tr]
    assert [c[:3] for c in cells] == [["1024", "0.2 GiB", "Q8_0"], ["1024", "1 GiB", "F16"]]
    assert all(c[-1].startswith("started in ") and "tok/s" in c[-1] for c in cells)
    assert page.count("<pre class='cmd'><code>results/builds/cpu/bin/llama-server -m results/models/smollm2-135m/"
                      "quantized/") == 2
