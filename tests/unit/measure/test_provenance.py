"""Parsers and backend detection on real output of a CUDA build (llama.cpp 0c1e570, sm_90) on an NVIDIA H200,
captured as the workflow's job logs (tools/device/run.sh)."""

from __future__ import annotations

import pytest

from ggufbench.llamacpp import bench_output as bench
from ggufbench.llamacpp.perplexity_output import parse_kld, parse_perplexity
from ggufbench.measure.provenance import devices_in_output, ran_on_cuda
from tests.support import DATA

CUDA = DATA / "cuda-h200"


CPU = DATA / "cpu-0.3.36"


def read(name: str) -> str:
    return (CUDA / name).read_text(encoding="utf-8")


def test_cuda_perplexity_log_parses():
    r = parse_perplexity(read("ppl_q4_k_m_kv-q8_0.log"))
    assert (r.ppl, r.ppl_uncertainty) == (12.9638, 0.63657)
    assert r.n_chunks == 12 and r.n_ctx == 512


def test_cuda_kld_log_parses():
    r = parse_kld(read("kld_q2_k.log"))
    assert (r.kld_mean, r.kld_mean_uncertainty) == (0.414985, 0.006459)
    assert r.same_top_p_pct == 69.020


def test_cuda_bench_rows_say_cuda_and_the_gpu():
    text = read("bench_q8_0.log")
    rows = bench.parse_bench_jsonl("\n".join(ln for ln in text.splitlines() if ln.startswith("{")))
    assert [r["test"] for r in rows] == ["pp512", "tg128"]
    assert all(r["backends"] == "CUDA" and r["gpu_info"] == "NVIDIA H200" and r["n_gpu_layers"] == 99
               for r in rows)
    assert devices_in_output(text) == ["NVIDIA H200"]


@pytest.mark.parametrize("name", ["ppl_q4_k_m_kv-q8_0.log", "kld_q2_k.log", "bench_q8_0.log"])
def test_cuda_output_is_recognised_as_cuda(name):
    assert ran_on_cuda(read(name))


@pytest.mark.parametrize("name", ["ppl_q8_0_kv-f16.txt", "kld_q2_k.txt", "bench_q8_0.jsonl"])
def test_cpu_output_is_not_taken_for_cuda(name):
    assert not ran_on_cuda((CPU / name).read_text(encoding="utf-8"))
